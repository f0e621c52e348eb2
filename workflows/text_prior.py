"""The ``train-text-prior`` flow: the text prior (appendix B.5) on Ray Train, resumable like the other stages.

1. build the config (preset, YAML, ``--set``, ``steps``, ``workers``); an encoder without a text tower
   (``encoder.kind=learned``) is refused before anything starts;
2. prepare what training reads, as for the other stages (frontal views, statistics), then the latents and
   the (caption variant, z) pairs (:func:`rodin_core.training.text_pairs.ensure_text_pairs`, with the render
   package's :func:`render.caption_variants.recipe_caption_variants`), committed as ``text_pairs/``;
3. train the ``text_prior`` stage as a Ray Train job (:func:`workflows.train_ray.run_training`; launched
   again, it resumes from its last checkpoint), commit ``checkpoints/text_prior`` and publish the loss
   curve and a summary, also written under ``{out}/reports/``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray
import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from render.caption_variants import recipe_caption_variants
from rodin_core.config import RodinConfig
from rodin_core.stage_specs import TEXT_PRIOR
from rodin_core.storage import open_store
from rodin_core.training.text_pairs import ensure_text_pairs
from workflows.artifacts import write_report
from workflows.flow_config import check_local_capacity, text_prior_config
from workflows.logs import relay_logs
from workflows.ray_runner import ray_session
from workflows.shards import retry_unless_data_error
from workflows.train_flows import (
    prepare_training_data,
    publish_loss_curve,
    summary_markdown,
    train_stage,
)

__all__ = ["train_text_prior"]

TAGS = ["rodin", "train", "text-prior"]
FLOW_NAME = "train-text-prior"


@task(retries=1, retry_condition_fn=retry_unless_data_error, cache_policy=NO_CACHE, tags=TAGS)
def make_text_pairs(cfg: RodinConfig, out: str, renders: str, storage_options: dict | None) -> dict[str, Any]:
    """Commit the text pairs (and the latents they need) unless current; ``{pairs, computed}``."""
    with relay_logs("rodin_core"):
        pairs, computed = ensure_text_pairs(cfg, out, renders, recipe_caption_variants, storage_options)
    return {"pairs": pairs, "computed": computed}


def publish_text_prior_report(out: str, storage_options: dict | None, summary: dict[str, Any]) -> dict[str, Any]:
    """The loss curve and a summary table of the run under ``reports/`` and as artifacts; the flow's summary."""
    store = open_store(out, storage_options)
    result = publish_loss_curve(store, FLOW_NAME, summary)
    write_report(store, f"reports/{FLOW_NAME}.md", summary_markdown(FLOW_NAME, result).encode("utf-8"))
    return result


@flow(name=FLOW_NAME)
def train_text_prior(out: str = "data/tiny", renders: str | None = None, preset: str = "tiny",
                     config_file: str | None = None, overrides: list[str] | None = None, steps: int | None = None,
                     workers: int | None = None, cpus_per_worker: int | None = None, ray_address: str | None = None,
                     storage_options: dict | None = None, resume: bool = True,
                     run_name: str | None = None) -> dict[str, Any]:
    """Train the text prior (appendix B.5) on the caption variants and latents of the subjects fitted into ``out``.

    ``renders``: the renders' dataset root (default ``out``), for the frontal views and the recipes. The
    encoder (``encoder.kind`` avatar_clip or clip) must be the base model's. Other parameters as
    :func:`workflows.train_flows.train_base`; returns the run's summary with ``pairs``.
    """
    start = time.perf_counter()
    cfg = text_prior_config(preset, config_file, overrides, steps, workers)
    if ray_address is None and not ray.is_initialized():
        check_local_capacity(cfg, (TEXT_PRIOR,), os.cpu_count() or 1, torch.cuda.device_count(), cpus_per_worker)
    data = prepare_training_data(renders or out, out, storage_options, cfg)
    pairs = make_text_pairs(cfg, out, renders or out, storage_options)
    get_run_logger().info("text pairs: %d (%s)", pairs["pairs"], "computed" if pairs["computed"] else "reused")
    with ray_session(ray_address):
        summary = train_stage(TEXT_PRIOR, cfg, out, storage_options, run_name, resume, cpus_per_worker)
    result = publish_text_prior_report(out, storage_options, summary)
    return {**result, "pairs": pairs, "data": data, "store": out,
            "flow_seconds": round(time.perf_counter() - start, 3)}
