"""The ``train-text-embedding`` flow: avatar-CLIP on the renders and their caption variants (§4.5, B.3, B.5).

1. build the config (preset, YAML, ``--set``, ``steps``) and check it;
2. train (:func:`rodin_core.training.text_embedding.train_text_embedding`) on (frontal render, caption
   variant) pairs, the variants made by :func:`render.caption_variants.recipe_caption_variants`;
   commit ``text_embedding/`` of the dataset root;
3. publish the retrieval figures of the held-out subjects as a Prefect artifact and return them.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from render.caption_variants import recipe_caption_variants
from rodin_core.config import RodinConfig
from rodin_core.training.text_embedding import train_text_embedding
from workflows.flow_config import text_embedding_config
from workflows.logs import relay_logs

__all__ = ["retrieval_markdown", "train_text_embedding_flow"]

TAGS = ["rodin", "train", "text-embedding"]
ARTIFACT_KEY = "train-text-embedding"


@task(cache_policy=NO_CACHE, tags=TAGS)
def train(renders: str, out: str, cfg: RodinConfig, storage_options: dict | None) -> dict[str, Any]:
    """Train and commit the embedding, relaying its progress lines; its summary."""
    train_cfg = cfg.text_embedding.train
    variants = partial(recipe_caption_variants, seed=train_cfg.seed, count=train_cfg.variants, drop=train_cfg.drop)
    with relay_logs("rodin_core"):
        return train_text_embedding(renders, out, cfg.text_embedding, variants, storage_options)


def retrieval_markdown(summary: dict[str, Any]) -> str:
    """A table of the caption -> frontal render retrieval figures of a summary."""
    lines = ["| queries | gallery | top-1 | chance | top-5 | chance | mean rank |", "|---|---|---|---|---|---|---|"]
    for name in ("heldout", "heldout_partial", "train"):
        if name in summary:
            m = summary[name]
            lines.append(f"| {name} ({m['queries']}) | {m['gallery']} | {m['top1']:.3f} | {m['chance_top1']:.3f} | "
                         f"{m['top5']:.3f} | {m['chance_top5']:.3f} | {m['mean_rank']:.2f} |")
    return "\n".join(lines)


@flow(name="train-text-embedding")
def train_text_embedding_flow(out: str = "data/tiny", renders: str | None = None, preset: str = "tiny",
                              config_file: str | None = None, overrides: list[str] | None = None,
                              steps: int | None = None, storage_options: dict | None = None) -> dict[str, Any]:
    """Train avatar-CLIP on the renders of ``renders`` (default ``out``) and commit it under ``out``.

    Returns the summary: the weights URI (``encoder.avatar_clip_weights``), the retrieval figures
    (``heldout``, ``heldout_partial``, ``train``) and ``flow_seconds``.
    """
    start = time.perf_counter()
    cfg = text_embedding_config(preset, config_file, overrides, steps)
    summary = train(renders or out, out, cfg, storage_options)
    create_markdown_artifact(markdown=retrieval_markdown(summary), key=ARTIFACT_KEY,
                             description="train-text-embedding: caption -> frontal render retrieval")
    get_run_logger().info("text embedding committed: %s", summary["weights"])
    return {**summary, "flow_seconds": round(time.perf_counter() - start, 3)}
