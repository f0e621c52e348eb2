"""The tri-plane fitting stage as a Prefect flow (paper §3.1, Eq. 1; appendix B.2).

``fit-triplanes`` reads the committed renders and plans fitting shards of ``fit.shard_size``
subjects (:mod:`rodin_core.fitting.shard_job`). Phase A fits the shared MLP decoder jointly with the planes
of the first ``fit.shared_subjects`` subjects and commits both with the decoder (skipped when the
decoder is committed for the same config); phase B fits every shard against the frozen decoder,
phase A's subjects starting from their phase A planes, one ``fit_shard`` task per shard (on Ray:
1 CPU and 1 torch thread per task, so one shard per core).
Then it publishes a per-shard table, the held-out PSNR histogram and ground truth vs fitted
held-out views as artifacts, also written under ``{out}/reports/``.

A re-run fits only what is not committed for the current config; ``shards=[i, ...]`` re-fits
those shards even when committed (the newest commit wins); ``only_failed`` re-fits the shards
whose records hold a failed subject or whose last attempt failed. Fitting shards are keyed by
subject id: one whose ids are not all rendered (a renders manifest was deleted) waits, its
committed tri-planes untouched. A shard that still fails after its retries (a damaged input is not
retried) or that waits does not stop the others: the flow reports, then fails naming it (the shard
machinery it shares with ``render-avatars`` is in :mod:`workflows.shards`).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner
from prefect_ray.context import remote_options

from rodin_core.config import RodinConfig
from rodin_core.datasets.decoder import committed_decoder
from rodin_core.datasets.integrity import id_ranges
from rodin_core.datasets.layout import (
    DECODER_STAGE,
    DECODER_WEIGHTS,
    RENDERS_STAGE,
    TRIPLANES_STAGE,
)
from rodin_core.datasets.renders import RenderSource
from rodin_core.fitting import shard_job
from rodin_core.fitting.shard_job import FitPlan, FitShardJob, FitShardReport
from rodin_core.imaging import encode_png
from rodin_core.storage import StageStore, open_store, shard_id_for
from workflows.artifacts import (
    ShardRow,
    image_markdown,
    publish_image,
    publish_shard_report,
    totals_markdown,
    write_report,
)
from workflows.flow_config import FIT_FIELDS, build_config
from workflows.logs import relay_logs
from workflows.ray_runner import RodinRayTaskRunner, build_task_runner, largest_node_cpus
from workflows.shards import (
    FailureWording,
    ShardsFailedError,
    failed_rows,
    open_runner,
    retry_unless_data_error,
    shard_counts,
    submit_shards,
)

MODULE = "workflows.fit_triplanes"
"""The import name of this module, under which Ray workers find its tasks."""
ARTIFACT_KEY = "fit-triplanes"
REPORT_PATH, HISTOGRAM_PATH, COMPARISON_PATH = (
    "reports/fit-triplanes.md", "reports/fit-psnr-histogram.png", "reports/fit-gt-vs-fitted.png")
HISTOGRAM_BINS = 10
RETRIES = 2
RETRY_DELAY_S = 5
PARAMETER_FIELDS = FIT_FIELDS
"""Flow parameters that override one config field each."""
LOGGER = shard_job.__name__
"""The logger whose records (progress lines) the tasks relay into their run logs."""
FAILURE_WORDING = FailureWording(
    kind="tri-plane", stage=TRIPLANES_STAGE, retries=RETRIES,
    remedy="re-fit only the failed ones with `rodin fit ... --only-failed` (or --shards N)", records="Failure records")


class FitShardsFailedError(ShardsFailedError):
    """Some fitting shards failed after all their retries; ``summary`` is the flow's summary of the run."""


@dataclass(frozen=True)
class FitSetup:
    """What the flow found before fitting: the plan, where each subject's views are, the decoder."""

    plan: FitPlan
    sources: dict[int, RenderSource]
    decoder_digest: str
    decoder_sha256: str | None
    """Weights sha256 of the decoder committed for ``decoder_digest``, or None (phase A must run)."""
    selected: list[int] | None
    """Shard indices to fit whatever their state (``shards`` / ``only_failed``); None: every stale shard."""


@task(cache_policy=NO_CACHE, tags=["rodin", "fit"])
def plan_fitting(cfg: RodinConfig, renders: str, out: str, storage_options: dict | None, shards: list[int] | None,
                 only_failed: bool) -> FitSetup:
    """Plan the fitting shards over the committed renders and check whether the decoder is committed."""
    sources, plan = shard_job.plan_over_renders(cfg, open_store(renders, storage_options).stage(RENDERS_STAGE), shards)
    store = open_store(out, storage_options)
    digest = shard_job.decoder_hash(cfg, plan.shared_ids, sources)
    manifest = committed_decoder(store.stage(DECODER_STAGE), digest)
    selected = sorted(set(shards)) if shards is not None else None
    if only_failed:
        failed = shard_job.failed_shards(store.stage(TRIPLANES_STAGE), len(plan.shards))
        selected = [i for i in failed if selected is None or i in selected]
    sha = manifest.file(DECODER_WEIGHTS).sha256 if manifest is not None else None
    return FitSetup(plan, sources, digest, sha, selected)


@task(retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=retry_unless_data_error,
      cache_policy=NO_CACHE, tags=["rodin", "fit"], task_run_name="fit-shared-decoder")
def fit_shared_decoder_task(cfg: RodinConfig, renders: str, out: str, plan: FitPlan, digest: str,
                            sources: dict[int, RenderSource], threads: int,
                            storage_options: dict | None) -> str:
    """Phase A with ``threads`` torch threads: fit and commit the decoder (with phase A's planes)."""
    with relay_logs(LOGGER), shard_job.torch_threads(threads):
        return shard_job.fit_shared_to_store(cfg, renders, out, plan, digest, sources, storage_options)


@task(retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=retry_unless_data_error,
      cache_policy=NO_CACHE, tags=["rodin", "fit"], task_run_name="fit-shard-{job.shard_index}")
def fit_shard(cfg: RodinConfig, renders: str, out: str, job: FitShardJob, storage_options: dict | None) -> FitShardReport:
    """Phase B of one shard on one torch thread; every failure but a subject's own is one attempt."""
    with relay_logs(LOGGER), shard_job.torch_threads(1):
        return shard_job.fit_shard_to_store(cfg, renders, out, job, storage_options)


@task(cache_policy=NO_CACHE, tags=["rodin", "fit"])
def find_pending_fit_shards(cfg: RodinConfig, renders: str, out: str, setup: FitSetup, decoder_sha256: str,
                            storage_options: dict | None
                            ) -> tuple[list[FitShardJob], list[FitShardReport], list[str], dict[str, str]]:
    """(jobs to fit, reports of current committed shards left alone, ids of stale shards not selected,
    ``{shard id: why}`` of the shards to fit that wait for renders: they are never fitted)."""
    stage = open_store(out, storage_options).stage(TRIPLANES_STAGE)
    warn_outside_plan(stage, setup.plan)
    pending, skipped, not_run, waiting = [], [], [], {}
    for index, ids in enumerate(setup.plan.shards):
        shard_id = shard_id_for(index)
        if index in setup.plan.missing:
            if setup.selected is None or index in setup.selected:
                waiting[shard_id] = waiting_message(setup.plan.missing[index], renders)
                get_run_logger().warning("%s waits for renders: %s", shard_id, waiting[shard_id])
            else:
                not_run.append(shard_id)
            continue
        digest = shard_job.planes_hash(cfg, decoder_sha256, ids, setup.sources)
        attempt = shard_job.committed_planes(stage, shard_id, ids, digest)
        wanted = attempt is None if setup.selected is None else index in setup.selected
        if wanted:
            pending.append(FitShardJob(index, ids, digest, decoder_sha256, {s: setup.sources[s] for s in ids}))
        elif attempt is not None:
            skipped.append(FitShardReport(shard_id, attempt, ids, 0.0, True))
        else:
            not_run.append(shard_id)
    return pending, skipped, not_run, waiting


def warn_outside_plan(stage: StageStore, plan: FitPlan) -> None:
    """Log the committed shards beyond ``plan`` that hold subjects of it (left by another ``fit.shard_size``):
    training refuses subjects that two shards hold."""
    planned = {s for ids in plan.shards for s in ids}
    beyond = [shard for shard in stage.committed_shards()
              if shard not in {shard_id_for(i) for i in range(len(plan.shards))}
              and planned & set(stage.read_manifest(shard).subject_ids)]
    if beyond:
        get_run_logger().warning("tri-plane shards %s are beyond this fitting plan (%d shards) but hold subjects of it, "
                                 "so training will refuse them: delete their manifests (%s)", ", ".join(beyond),
                                 len(plan.shards), ", ".join(f"{stage.uri}/manifests/{s}.json" for s in beyond))


def waiting_message(missing: list[int], renders: str) -> str:
    """Why a fitting shard whose ids are not all rendered is not fitted, and what to do."""
    return (f"FitDataError: no committed renders shard of {renders}/{RENDERS_STAGE} holds subjects "
            f"{id_ranges(missing)} of this fitting shard, so it was not fitted (its committed tri-planes are left as "
            f"they are); re-render them with the options the corpus was rendered with (`rodin render --out "
            f"{renders}`), then fit again")


def ensure_decoder(cfg: RodinConfig, renders: str, out: str, setup: FitSetup, storage_options: dict | None,
                   runner: TaskRunner) -> str:
    """The committed decoder's sha256, running phase A on ``runner`` first when it is not committed.

    Phase A failing after its retries fails the flow: no shard can be fitted without the decoder
    (its failure records are under ``{out}/decoder/failures/``).
    """
    logger = get_run_logger()
    if setup.decoder_sha256 is not None:
        logger.info("decoder committed for config %s: reused (phase A skipped)", setup.decoder_digest)
        return setup.decoder_sha256
    threads = _largest_node_cpus(runner)
    logger.info("phase A: fitting the decoder on %d subjects with %d threads", len(setup.plan.shared_ids), threads)
    with remote_options(num_cpus=threads):
        future = runner.submit(fit_shared_decoder_task, {
            "cfg": cfg, "renders": renders, "out": out, "plan": setup.plan, "digest": setup.decoder_digest,
            "sources": {s: setup.sources[s] for s in setup.plan.shared_ids}, "threads": threads,
            "storage_options": storage_options})
    return future.result()


def _largest_node_cpus(runner: TaskRunner) -> int:
    """CPUs (and torch threads) of phase A: the largest live Ray node's, or this machine's for threads."""
    if isinstance(runner, RodinRayTaskRunner):
        return largest_node_cpus()
    return os.cpu_count() or 1


def fit_pending_shards(cfg: RodinConfig, renders: str, out: str, pending: list[FitShardJob],
                       storage_options: dict | None, runner: TaskRunner) -> tuple[list[FitShardReport], dict[str, str]]:
    """Run ``fit_shard`` for every pending shard (1 CPU each on Ray); wait for all of them."""
    return submit_shards(runner, fit_shard, {job.shard_id: {
        "cfg": cfg, "renders": renders, "out": out, "job": job, "storage_options": storage_options}
        for job in pending}, num_cpus=1)


@task(retries=1, cache_policy=NO_CACHE, tags=["rodin", "fit"])
def make_comparison(cfg: RodinConfig, renders: str, out: str, shard_id: str, subject_ids: list[int],
                    sources: dict[int, RenderSource], decoder_sha256: str,
                    storage_options: dict | None) -> tuple[bytes, str] | None:
    """Ground truth vs fitted held-out views of one committed shard, as a PNG under ``reports/``."""
    store = open_store(out, storage_options)
    sheet = shard_job.comparison_sheet(cfg, open_store(renders, storage_options).stage(RENDERS_STAGE), store,
                                      shard_id, subject_ids, sources, decoder_sha256)
    if sheet is None:
        return None
    png = encode_png(sheet)
    return png, write_report(store, COMPARISON_PATH, png)


@flow(name="fit-triplanes")
def fit_triplanes(
    renders: str = "data/tiny",
    out: str | None = None,
    preset: str = "tiny",
    config_file: str | None = None,
    overrides: list[str] | None = None,
    shared_subjects: int | None = None,
    steps: int | None = None,
    target_psnr: float | None = None,
    shards: list[int] | None = None,
    only_failed: bool = False,
    ray_address: str | None = None,
    storage_options: dict | None = None,
    task_runner: Literal["ray", "threads"] = "ray",
) -> dict[str, Any]:
    """Fit a tri-plane per rendered subject of ``{renders}/renders`` into ``{out}/decoder`` and ``{out}/triplanes``.

    ``out`` defaults to the renders' dataset root. Returns ``{decoder: committed|reused,
    shards_total, shards_fitted, shards_skipped, shards_failed: {shard id: error}, subjects,
    subject_errors, psnr_median, psnr_min, seconds, report, store}``: ``subjects`` counts what this
    run fitted, the PSNRs (held-out, dB) cover every current shard. Raises
    :class:`FitShardsFailedError` (with that summary) after the artifacts when a shard failed.
    """
    start = time.perf_counter()
    out = out or renders
    cfg = build_config(preset, config_file, overrides, PARAMETER_FIELDS, shared_subjects=shared_subjects,
                       steps=steps, target_psnr=target_psnr)
    runner = build_task_runner(task_runner, ray_address, workers=os.cpu_count() if task_runner == "threads" else None)
    setup = plan_fitting(cfg, renders, out, storage_options, shards, only_failed)
    get_run_logger().info("%d rendered subjects in %d fitting shards (%d of them phase A's)", len(setup.sources),
                          len(setup.plan.shards), setup.plan.shared_shards)
    with open_runner(runner, __name__, MODULE):
        decoder_sha = ensure_decoder(cfg, renders, out, setup, storage_options, runner)
        pending, skipped, not_run, waiting = find_pending_fit_shards(cfg, renders, out, setup, decoder_sha,
                                                                     storage_options)
        get_run_logger().info("phase B: %d shards to fit, %d current, %d not selected, %d waiting for renders",
                              len(pending), len(skipped), len(not_run), len(waiting))
        fitted, failed = fit_pending_shards(cfg, renders, out, pending, storage_options, runner)
        failed = {**failed, **waiting}
    summary = publish_reports(cfg, renders, out, storage_options, setup, decoder_sha, fitted, skipped, failed,
                              not_run, time.perf_counter() - start)
    if failed:
        raise FitShardsFailedError(summary, FAILURE_WORDING)
    return summary


def publish_reports(cfg: RodinConfig, renders: str, out: str, storage_options: dict | None, setup: FitSetup,
                    decoder_sha: str, fitted: list[FitShardReport], skipped: list[FitShardReport],
                    failed: dict[str, str], not_run: list[str], seconds: float) -> dict[str, Any]:
    """Publish the shard table, PSNR histogram and comparison sheet, write ``reports/fit-triplanes.md``.

    Returns the flow's summary. Reports that cannot be made are logged, never fatal.
    """
    store = open_store(out, storage_options)
    stage = store.stage(TRIPLANES_STAGE)
    ids_of = {shard_id_for(i): ids for i, ids in enumerate(setup.plan.shards)}
    current = sorted(r.shard_id for r in [*fitted, *skipped])
    records = shard_job.records_of(stage, current)
    rows = [shard_row(r, "skipped" if r.skipped else "fitted", setup.sources, records.get(r.shard_id, []))
            for r in [*fitted, *skipped]]
    rows += failed_rows(stage, failed, {shard_id: len(ids) for shard_id, ids in ids_of.items()})
    rows += [ShardRow(s, "not selected", len(ids_of[s]), 0, 0.0, "") for s in not_run]
    publish_shard_report(ARTIFACT_KEY, "Fit tri-planes", rows, seconds, out, done="fitted")
    page = [totals_markdown("Fit tri-planes", rows, seconds, out, done="fitted"), ""]

    values = [r["psnr_holdout"] for shard in records.values() for r in shard
              if r["error"] is None and math.isfinite(r["psnr_holdout"])]
    if values:
        png, bins = psnr_histogram(values)
        uri = write_report(store, HISTOGRAM_PATH, png)
        caption = psnr_markdown(values, cfg.fit.target_psnr, bins)
        publish_image(f"{ARTIFACT_KEY}-psnr", "Held-out PSNR", png, uri, caption=caption)
        page.append(image_markdown("Held-out PSNR", png, uri, caption))
    else:
        page.append("No subject has a held-out PSNR yet (no current shard, or fit.holdout_views=0).")
    if current:
        state = make_comparison(cfg, renders, out, current[0], ids_of[current[0]], setup.sources, decoder_sha,
                                storage_options, return_state=True)
        if not state.is_completed():
            get_run_logger().warning("no ground truth vs fitted sheet: %s", state.message)
        elif state.result() is not None:
            png, uri = state.result()
            caption = (f"Held-out views of the first subjects of {current[0]}: ground truth (upper row of each "
                       "pair) and rendered from the stored tri-plane (lower row, with its PSNR).")
            publish_image(f"{ARTIFACT_KEY}-comparison", "Ground truth vs fitted", png, uri, caption=caption)
            page += ["", image_markdown("Ground truth vs fitted", png, uri, caption)]
    report = write_report(store, REPORT_PATH, "\n".join(page).encode("utf-8"))
    return summarize(fitted, skipped, failed, values, setup.decoder_sha256 is None, seconds, report, out)


def shard_row(report: FitShardReport, status: str, sources: dict[int, RenderSource], records: list[dict]) -> ShardRow:
    """Table row of a committed shard, with its held-out PSNR median/min and failed subjects."""
    held = [r["psnr_holdout"] for r in records if r["error"] is None and math.isfinite(r["psnr_holdout"])]
    extra = {"psnr_median": round(statistics.median(held), 2) if held else None,
             "psnr_min": round(min(held), 2) if held else None,
             "subject_errors": sum(r["error"] is not None for r in records)}
    views = sum(sources[s].views for s in report.subject_ids if s in sources)
    return ShardRow(report.shard_id, status, len(report.subject_ids), views, report.seconds, report.attempt_id,
                    extra=extra)


def psnr_histogram(values: list[float], bins: int = HISTOGRAM_BINS) -> tuple[bytes, list[tuple[float, float, int]]]:
    """A bar chart (PNG) of held-out PSNRs and its bins ``(low dB, high dB, subjects)``."""
    counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
    bar, margin = 36, 24
    width, height = bar * bins + 20, 160
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    tallest = max(int(counts.max()), 1)
    for k, count in enumerate(counts):
        x0, h = 10 + k * bar, int((height - 2 * margin - 12) * count / tallest)
        draw.rectangle([x0 + 2, height - margin - h, x0 + bar - 2, height - margin], fill=(70, 110, 180))
        draw.text((x0 + 4, height - margin - h - 12), str(int(count)), fill="black")
        draw.text((x0 + 2, height - margin + 4), f"{edges[k]:.1f}", fill="black")
    draw.line([10, height - margin, width - 10, height - margin], fill="black")
    draw.text((10, 4), f"held-out PSNR (dB) of {len(values)} subjects", fill="black")
    table = [(float(edges[k]), float(edges[k + 1]), int(c)) for k, c in enumerate(counts)]
    return encode_png(np.asarray(image)), table


def psnr_markdown(values: list[float], target: float, bins: list[tuple[float, float, int]]) -> str:
    """Held-out PSNR statistics and the histogram's bins as markdown."""
    reached = sum(v >= target for v in values)
    stats = (f"{len(values)} subjects: median {statistics.median(values):.2f} dB, min {min(values):.2f} dB, "
             f"max {max(values):.2f} dB; {reached} reach fit.target_psnr={target:g} dB.")
    lines = [stats, "",
             "| held-out PSNR (dB) | subjects |", "|---|---:|"]
    lines += [f"| {low:.2f} - {high:.2f} | {count} |" for low, high, count in bins]
    return "\n".join(lines)


def summarize(fitted: list[FitShardReport], skipped: list[FitShardReport], failed: dict[str, str],
              values: list[float], decoder_fitted: bool, seconds: float, report: str, out: str) -> dict[str, Any]:
    """The flow's summary (see :func:`fit_triplanes`)."""
    summary = {
        "decoder": "committed" if decoder_fitted else "reused",
        **shard_counts("fitted", fitted, skipped, failed),
        "subject_errors": sum(r.subject_errors for r in fitted),
        "psnr_median": round(statistics.median(values), 3) if values else None,
        "psnr_min": round(min(values), 3) if values else None,
        "seconds": round(seconds, 3), "report": report, "store": out,
    }
    get_run_logger().info("fitted %d shards (%d subjects) in %.1f s; %d skipped, %d failed; held-out PSNR median %s dB",
                          summary["shards_fitted"], summary["subjects"], seconds, summary["shards_skipped"],
                          len(failed), summary["psnr_median"])
    return summary
