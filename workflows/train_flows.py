"""The training stage as Prefect flows (paper §3.2, §3.3, appendix B.1, B.4).

``train-base``, ``train-upsampler`` and ``train-latent-prior`` each check what training reads
(every subject in one tri-plane shard, every committed file matching its manifest's sha256, before
any Ray Train worker starts) and prepare what it reads besides the tri-planes (the frontal views
and the normalisation statistics, once: :mod:`rodin_core.datasets.frontals`,
:mod:`rodin_core.datasets.plane_stats`), train their stage as a Ray Train job
(:mod:`workflows.train_ray`; launched again, the run resumes from its last checkpoint) and publish
the loss curve and a sheet of sampled renders as artifacts, also written under ``{out}/reports/``.

``train-all`` is the DAG after fitting: the base model and the upsampler (which learns from fitted
tri-planes, not from base samples, §3.3) train side by side on a node of
:data:`~workflows.flow_config.SIDE_BY_SIDE_MIN_CPUS` CPUs or more, one after the other with every
CPU on a smaller one; then the latent prior on the latents of the trained base's encoder (appendix B.4). :func:`trained_steps` tells whether every
stage's committed checkpoint is already complete for a config, so that there is nothing to train.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray
import torch
from prefect import allow_failure, flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.states import State

from rodin_core.checkpoint import CheckpointError
from rodin_core.config import CorpusConfig, RodinConfig
from rodin_core.datasets import frontals
from rodin_core.datasets.checkpoints import committed_config, committed_step
from rodin_core.datasets.errors import StageInputError
from rodin_core.datasets.frontals import FrontalsJob, extract_frontals_shard
from rodin_core.datasets.integrity import check_inputs
from rodin_core.datasets.layout import (
    CHECKPOINTS_STAGE,
    FRONTALS_STAGE,
    LATENTS_STAGE,
    STATS_STAGE,
    TRIPLANES_STAGE,
)
from rodin_core.datasets.plane_stats import ensure_stats
from rodin_core.imaging import encode_png
from rodin_core.stage_specs import STAGE_NAMES, train_config_for
from rodin_core.storage import StorageError, Store, open_store
from rodin_core.training import report as train_report
from rodin_core.triplane.decoder_io import DecoderLoadError
from workflows.artifacts import publish_image, write_report
from workflows.flow_config import check_local_capacity, side_by_side, training_config
from workflows.logs import relay_logs
from workflows.ray_runner import RayStartError, largest_node_cpus, ray_session
from workflows.shards import DATA_ERRORS, retry_unless_data_error
from workflows.train_ray import TrainingDiskFullError, TrainingError, run_training
from workflows.train_worker import ResumeMismatchError, check_compatible

STAGE_FLOWS = {"base": "train-base", "upsampler": "train-upsampler", "prior": "train-latent-prior"}
RETRIES = 2
RETRY_DELAY_S = 5
TRAIN_RETRIES = 1
"""Prefect retries of a whole training run (after Ray Train's own ``max_failures``); each resumes."""
TRAIN_RETRY_DELAY_S = 10
SAMPLES = 4
"""Subjects (or prior draws) in the sample sheet of each stage."""
TAGS = ["rodin", "train"]


class TrainingStagesFailedError(RuntimeError):
    """Some stages of ``train-all`` failed; the others are committed. ``summary`` is the flow's summary."""

    def __init__(self, summary: dict[str, Any], failed: dict[str, str]) -> None:
        listing = "; ".join(f"{stage}: {error.splitlines()[0] if error else ''}" for stage, error in failed.items())
        super().__init__(f"{len(failed)} training stage(s) failed ({listing}). Stages that finished are committed "
                         f"under {summary['store']}/checkpoints/; launch the flow again to resume the others")
        self.summary = summary

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.summary, {})


TRAINING_ERRORS = (StageInputError, TrainingError, TrainingStagesFailedError, ResumeMismatchError,
                   CheckpointError, DecoderLoadError, StorageError, RayStartError)
"""Failures whose message says what to run next (``rodin train`` prints them without a traceback)."""
TRAINING_INPUTS = (TRIPLANES_STAGE, FRONTALS_STAGE, STATS_STAGE, LATENTS_STAGE, CHECKPOINTS_STAGE)
"""The stages whose committed files :func:`verify_training_inputs` hashes before training."""


@task(cache_policy=NO_CACHE, tags=TAGS)
def plan_frontals(renders: str, out: str, storage_options: dict | None) -> tuple[list[FrontalsJob], list[str]]:
    """The ``frontals/`` shards to extract, and those already current."""
    return frontals.plan_frontals(renders, out, storage_options)


@task(cache_policy=NO_CACHE, tags=TAGS)
def verify_training_inputs(renders: str, out: str, storage_options: dict | None) -> int:
    """Hash every committed file training reads against its manifest; returns the shards checked.

    A damaged file raises :class:`~rodin_core.datasets.errors.CorruptInputError` (naming it, its
    shard and the command that re-creates it) before any Ray Train worker starts.
    """
    return check_inputs(out, TRAINING_INPUTS, storage_options, renders)


@task(retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=retry_unless_data_error,
      cache_policy=NO_CACHE, tags=TAGS, task_run_name="extract-frontals-{job.shard_id}")
def extract_frontals(renders: str, out: str, job: FrontalsJob, storage_options: dict | None) -> int:
    """Commit the frontal views of one tri-plane shard's subjects."""
    return extract_frontals_shard(renders, out, job, storage_options)


@task(retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, cache_policy=NO_CACHE, tags=TAGS)
def compute_stats(out: str, storage_options: dict | None, corpus: CorpusConfig) -> dict[str, Any]:
    """Commit the plane statistics of the training subjects when missing; returns ``{subjects, computed}``."""
    with relay_logs(ensure_stats.__module__):
        stats, computed = ensure_stats(out, storage_options, corpus)
    return {"subjects": stats.count, "computed": computed}


def retry_unless_a_setup_error(task: Any, task_run: Any, state: State) -> bool:
    """Retry a failed training run (it resumes), but not a missing or damaged input, an incompatible checkpoint or
    a full disk."""
    try:
        state.result()
    except (*DATA_ERRORS, ResumeMismatchError, TrainingDiskFullError):
        return False
    except Exception:  # noqa: BLE001 - any other failure may be transient
        return True
    return True


@task(retries=TRAIN_RETRIES, retry_delay_seconds=TRAIN_RETRY_DELAY_S, retry_condition_fn=retry_unless_a_setup_error,
      cache_policy=NO_CACHE, tags=TAGS, task_run_name="train-{stage_name}")
def train_stage(stage_name: str, cfg: RodinConfig, out: str, storage_options: dict | None, run_name: str | None,
                resume: bool, cpus_per_worker: int | None = None) -> dict[str, Any]:
    """Train one stage on Ray Train (resuming its run), relaying its progress lines to the run log; the summary
    of :func:`~workflows.train_ray.run_training` with the task's ``started_at`` and ``finished_at`` (Unix seconds)."""
    started_at = time.time()
    with relay_logs("workflows.train_ray"):
        summary = run_training(stage_name, cfg, out, storage_options, run_name=run_name, resume=resume,
                               cpus_per_worker=cpus_per_worker, on_progress=get_run_logger().info)
    return {**summary, "started_at": started_at, "finished_at": time.time()}


@task(retries=1, cache_policy=NO_CACHE, tags=TAGS)
def make_sample_sheet(stage_name: str, out: str, storage_options: dict | None) -> tuple[bytes, str, str]:
    """Renders of a few samples of the committed checkpoint, as a PNG under ``reports/`` (PNG, URI, caption)."""
    sheet, caption = train_report.sample_sheet(stage_name, out, SAMPLES, storage_options=storage_options)
    png = encode_png(sheet)
    path = f"reports/{STAGE_FLOWS[stage_name]}-samples.png"
    return png, write_report(open_store(out, storage_options), path, png), caption


def prepare_training_data(renders: str, out: str, storage_options: dict | None, cfg: RodinConfig) -> dict[str, Any]:
    """Check what training reads (unique, complete subjects; every file's hash), extract the missing
    frontal views, then compute the plane statistics when missing.

    The held-out subjects of ``cfg.corpus`` (§4.5, appendix C.5) are left out of the statistics.
    """
    pending, current = plan_frontals(renders, out, storage_options)
    verify_training_inputs(renders, out, storage_options)
    extracted = extract_frontals.map(unmapped(renders), unmapped(out), pending, unmapped(storage_options)).result()
    stats = compute_stats(out, storage_options, cfg.corpus)
    get_run_logger().info("frontal views: %d shards extracted (%d subjects), %d current; plane statistics of %d "
                          "subjects %s", len(pending), sum(extracted), len(current), stats["subjects"],
                          "computed" if stats["computed"] else "reused")
    return {"frontal_shards_extracted": len(pending), "frontal_shards_current": len(current), **stats}


def publish_training_report(stage_name: str, out: str, storage_options: dict | None,
                            summary: dict[str, Any]) -> dict[str, Any]:
    """Publish the loss curve, the sample sheet and a summary of one stage's run; returns the flow's summary.

    A sample sheet that cannot be made is logged, never fatal: the checkpoint is what matters.
    """
    logger = get_run_logger()
    store = open_store(out, storage_options)
    key = STAGE_FLOWS[stage_name]
    result = publish_loss_curve(store, key, summary)
    state = make_sample_sheet(stage_name, out, storage_options, return_state=True)
    if state.is_completed():
        png, uri, caption = state.result()
        publish_image(f"{key}-samples", f"{key}: samples", png, uri, caption=caption)
        result["samples"] = uri
    else:
        logger.warning("no sample sheet for %s: %s", stage_name, state.message)
    markdown = summary_markdown(key, result)
    write_report(store, f"reports/{key}.md", markdown.encode("utf-8"))
    logger.info("%s: loss %s -> %s over steps %d..%d, %.2f steps/s", stage_name, _fmt(result["loss_first"]),
                _fmt(result["loss_last"]), result["start_step"], result["steps"], result["steps_per_s"] or 0.0)
    return result


def publish_loss_curve(store: Store, key: str, summary: dict[str, Any]) -> dict[str, Any]:
    """The run's :func:`brief` summary, with ``loss_curve``: the loss curve written to ``reports/{key}-loss.png``
    and published as an artifact (when the run logged any step)."""
    result = brief(summary)
    history = summary.get("history") or []
    if history:
        png = train_report.loss_curve_png(history, f"{key} loss")
        result["loss_curve"] = write_report(store, f"reports/{key}-loss.png", png)
        publish_image(f"{key}-loss", f"{key}: loss", png, result["loss_curve"],
                      caption=f"Loss terms averaged over each {len(history)}-point log window and over workers.")
    return result


def brief(summary: dict[str, Any]) -> dict[str, Any]:
    """The run summary without its history: what a flow returns per stage."""
    first, last = summary.get("first") or {}, summary.get("last") or {}
    return {key: summary[key] for key in ("stage", "run_name", "workers", "start_step", "steps", "steps_run",
                                          "steps_per_s", "seconds", "checkpoint")} | {
        "resumed_from": (summary.get("resumed") or {}).get("step"), "loss_first": first.get("loss"),
        "loss_last": last.get("loss"), "started_at": summary.get("started_at"),
        "finished_at": summary.get("finished_at")}


def summary_markdown(title: str, result: dict[str, Any]) -> str:
    """A small markdown table of one stage's run."""
    rows = [("run", result["run_name"]), ("workers", result["workers"]),
            ("steps", f"{result['start_step']} -> {result['steps']}"), ("resumed from step", result["resumed_from"]),
            ("loss (first, last log)", f"{_fmt(result['loss_first'])} -> {_fmt(result['loss_last'])}"),
            ("steps/s", _fmt(result["steps_per_s"])), ("seconds", result["seconds"]),
            ("checkpoint", f"`{result['checkpoint']}`")]
    return "\n".join([f"# {title}", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _train_one(stage_name: str, out: str, renders: str | None, preset: str, config_file: str | None,
               overrides: list[str] | None, steps: int | None, workers: int | None, cpus_per_worker: int | None,
               ray_address: str | None, storage_options: dict | None, resume: bool,
               run_name: str | None) -> dict[str, Any]:
    """The body of the three single-stage flows."""
    start = time.perf_counter()
    cfg = training_config(preset, config_file, overrides, (stage_name,), steps, workers)
    if ray_address is None and not ray.is_initialized():
        check_local_capacity(cfg, (stage_name,), os.cpu_count() or 1, torch.cuda.device_count(), cpus_per_worker)
    data = prepare_training_data(renders or out, out, storage_options, cfg)
    with ray_session(ray_address):
        summary = train_stage(stage_name, cfg, out, storage_options, run_name, resume, cpus_per_worker)
    result = publish_training_report(stage_name, out, storage_options, summary)
    return {**result, "data": data, "store": out, "flow_seconds": round(time.perf_counter() - start, 3)}


@flow(name="train-base")
def train_base(out: str = "data/tiny", renders: str | None = None, preset: str = "tiny",
               config_file: str | None = None, overrides: list[str] | None = None, steps: int | None = None,
               workers: int | None = None, cpus_per_worker: int | None = None, ray_address: str | None = None,
               storage_options: dict | None = None, resume: bool = True, run_name: str | None = None) -> dict[str, Any]:
    """Train the latent-conditioned base model (§3.2) on the tri-planes fitted into ``out``.

    ``renders``: the renders' dataset root (default ``out``), for the frontal views. ``steps`` and
    ``workers`` override ``base.train.steps``/``workers``; ``cpus_per_worker`` (and torch threads)
    defaults to the largest Ray node's CPUs divided by the workers. ``resume=False`` starts a fresh run.
    Returns ``{stage, run_name, start_step, steps, loss_first, loss_last, steps_per_s, checkpoint,
    loss_curve, samples, ...}``.
    """
    return _train_one("base", out, renders, preset, config_file, overrides, steps, workers, cpus_per_worker,
                      ray_address, storage_options, resume, run_name)


@flow(name="train-upsampler")
def train_upsampler(out: str = "data/tiny", renders: str | None = None, preset: str = "tiny",
                    config_file: str | None = None, overrides: list[str] | None = None, steps: int | None = None,
                    workers: int | None = None, cpus_per_worker: int | None = None, ray_address: str | None = None,
                    storage_options: dict | None = None, resume: bool = True,
                    run_name: str | None = None) -> dict[str, Any]:
    """Train the tri-plane upsampler (§3.3) on the tri-planes fitted into ``out``; see :func:`train_base`."""
    return _train_one("upsampler", out, renders, preset, config_file, overrides, steps, workers, cpus_per_worker,
                      ray_address, storage_options, resume, run_name)


@flow(name="train-latent-prior")
def train_latent_prior(out: str = "data/tiny", renders: str | None = None, preset: str = "tiny",
                       config_file: str | None = None, overrides: list[str] | None = None, steps: int | None = None,
                       workers: int | None = None, cpus_per_worker: int | None = None,
                       ray_address: str | None = None, storage_options: dict | None = None, resume: bool = True,
                       run_name: str | None = None) -> dict[str, Any]:
    """Train the latent prior (appendix B.4) on the latents of the trained base's encoder; see :func:`train_base`."""
    return _train_one("prior", out, renders, preset, config_file, overrides, steps, workers, cpus_per_worker,
                      ray_address, storage_options, resume, run_name)


@flow(name="train-all")
def train_all(out: str = "data/tiny", renders: str | None = None, preset: str = "tiny",
              config_file: str | None = None, overrides: list[str] | None = None, steps: int | None = None,
              workers: int | None = None, cpus_per_worker: int | None = None, ray_address: str | None = None,
              storage_options: dict | None = None, resume: bool = True) -> dict[str, Any]:
    """Train the three stages after fitting: base and upsampler side by side on a node of
    :data:`~workflows.flow_config.SIDE_BY_SIDE_MIN_CPUS` CPUs or more (else the base, then the upsampler,
    each worker with the node's CPUs over its stage's workers), then the prior.

    ``steps``/``workers`` override every stage's. Each stage's run is named after it, so launching
    the flow again resumes every unfinished stage. Returns ``{base, upsampler, prior}`` summaries;
    raises :class:`TrainingStagesFailedError` after the reports when a stage failed.
    """
    start = time.perf_counter()
    cfg = training_config(preset, config_file, overrides, STAGE_NAMES, steps, workers)
    if ray_address is None and not ray.is_initialized():
        check_local_capacity(cfg, STAGE_NAMES, os.cpu_count() or 1, torch.cuda.device_count(), cpus_per_worker)
    data = prepare_training_data(renders or out, out, storage_options, cfg)
    with ray_session(ray_address):
        largest = largest_node_cpus()
        together = side_by_side(largest)
        cpus = {name: cpus_per_worker or count for name, count in cpus_per_stage_worker(cfg, largest).items()}
        get_run_logger().info("training base and upsampler %s on nodes of up to %d CPUs (CPUs per worker: %s)",
                              "side by side" if together else "one after the other", largest,
                              ", ".join(f"{name} {count}" for name, count in cpus.items()))
        base = train_stage.submit("base", cfg, out, storage_options, None, resume, cpus["base"])
        # One after the other, the upsampler still trains when the base failed (its failure is reported below).
        after = [] if together else [allow_failure(base)]
        upsampler = train_stage.submit("upsampler", cfg, out, storage_options, None, resume, cpus["upsampler"],
                                       wait_for=after)
        prior = train_stage.submit("prior", cfg, out, storage_options, None, resume, cpus["prior"],
                                   wait_for=[base, *([allow_failure(upsampler)] if after else [])])
        summaries, failed = wait_for_stages({"base": base, "upsampler": upsampler, "prior": prior})
    results = {stage: publish_training_report(stage, out, storage_options, summary)
               for stage, summary in summaries.items()}
    summary = {**results, "failed": failed, "data": data, "store": out,
               "flow_seconds": round(time.perf_counter() - start, 3)}
    if failed:
        raise TrainingStagesFailedError(summary, failed)
    return summary


def checkpoint_uri(out: str, stage_name: str) -> str:
    """Where the committed checkpoint of ``stage_name`` is under the dataset root ``out``."""
    return f"{out}/{CHECKPOINTS_STAGE}/{stage_name}"


def trained_steps(cfg: RodinConfig, out: str, storage_options: dict | None = None) -> dict[str, int] | None:
    """``{stage: committed step}`` when every stage's committed checkpoint has at least its configured steps
    and the network and diffusion of ``cfg``; else None (``train-all`` then resumes or refuses)."""
    steps = {}
    for name in STAGE_NAMES:
        step = committed_step(out, name, storage_options)
        if step is None or step < train_config_for(name, cfg).steps:
            return None
        try:
            check_compatible(name, cfg, committed_config(out, name, storage_options) or {},
                             f"committed checkpoint {checkpoint_uri(out, name)}")
        except ResumeMismatchError:
            return None
        steps[name] = step
    return steps


def cpus_per_stage_worker(cfg: RodinConfig, largest: int) -> dict[str, int]:
    """CPUs per worker of each stage on a largest node of ``largest`` CPUs: side by side (see
    :func:`~workflows.flow_config.side_by_side`) the base and upsampler runs share the node, and the
    prior gets as much as each of them; one after the other, each stage's workers share the whole node."""
    if side_by_side(largest):
        shared = max(1, largest // (train_config_for("base", cfg).workers + train_config_for("upsampler", cfg).workers))
        return dict.fromkeys(STAGE_NAMES, shared)
    return {name: max(1, largest // train_config_for(name, cfg).workers) for name in STAGE_NAMES}


def wait_for_stages(futures: dict[str, PrefectFuture]) -> tuple[dict[str, dict], dict[str, str]]:
    """Summaries of the stages that finished and ``{stage: error}`` of the others."""
    summaries, failed = {}, {}
    for stage, future in futures.items():
        future.wait()
        if future.state.is_completed():
            summaries[stage] = future.result()
        else:
            failed[stage] = str(future.state.message or future.state.name)
            get_run_logger().error("stage %s did not finish: %s", stage, failed[stage])
    return summaries, failed
