"""The corpus stage as a Prefect flow: render every shard of synthetic avatars (paper §4.1, appendix B.2).

``render-avatars`` builds the config, skips the shards already committed for that config, renders
the others as ``render_shard`` tasks in parallel (a local Ray instance by default, a Ray cluster
with ``ray_address``, or a thread pool), then publishes a per-shard table, the totals and a
contact sheet of frontal views as artifacts.

A shard that still fails after its retries does not stop the others: the flow finishes every
shard, publishes its reports, and only then fails, naming each failed shard and its error.
Re-running the flow renders only what is not committed (failed shards, or shards whose manifest
was deleted). Storage credentials belong in the environment (e.g. ``AWS_*``), not in
``storage_options``, which the Prefect server stores with the run's parameters. What the sharded
flows share (runner, submission, failures, summary counts) is in :mod:`workflows.shards`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Literal

import pyarrow.compute as pc
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner

from render.shard_job import (
    ShardReport,
    asset_catalog,
    committed_attempt,
    render_config_hash,
    render_shard_to_store,
    shard_plan,
)
from rodin_core.config import RodinConfig
from rodin_core.datasets.layout import RENDERS_STAGE, VIEWS_TABLE
from rodin_core.datasets.renders import frontal_contact_sheet
from rodin_core.imaging import encode_png
from rodin_core.storage import open_store, shard_id_for
from workflows import shards
from workflows.artifacts import (
    ShardRow,
    publish_image,
    publish_shard_report,
    write_report,
)
from workflows.flow_config import RENDER_FIELDS, build_config
from workflows.logs import relay_logs
from workflows.ray_runner import build_task_runner

MODULE = "workflows.render_avatars"
"""The import name of this module, under which Ray workers find its tasks."""

ARTIFACT_KEY = "render-avatars"
CONTACT_SHEET_PATH = "reports/render-contact-sheet.png"
CONTACT_SHEET_SUBJECTS = 16
CONTACT_SHEET_COLUMNS = 8
THUMBNAIL_PX = 64
RETRIES = 2
RETRY_DELAY_S = 5
PARAMETER_FIELDS = RENDER_FIELDS
"""Flow parameters that override one config field each."""
FAILURE_WORDING = shards.FailureWording(kind="render", stage=RENDERS_STAGE, retries=RETRIES,
                                        remedy="re-run the flow to retry only the failed ones",
                                        records="Failure records with Blender's log")


def render_config(preset: str, config_file: str | None, overrides: list[str] | None, **fields: Any) -> RodinConfig:
    """The config of this flow: preset, YAML file, ``overrides``, then its parameters (``subjects=`` ...).

    Raises :class:`~rodin_core.config.ConfigError` naming any bad key or value.
    """
    return build_config(preset, config_file, overrides, PARAMETER_FIELDS, **fields)


@task(cache_policy=NO_CACHE, tags=["rodin", "render"])
def find_pending_shards(cfg: RodinConfig, out: str, storage_options: dict | None) -> tuple[list[int], list[ShardReport]]:
    """Shard indices still to render, and reports of the shards committed for the same config."""
    stage = open_store(out, storage_options).stage(RENDERS_STAGE)
    digest = render_config_hash(cfg, asset_catalog(cfg))
    pending, skipped = [], []
    for index, subject_ids in shard_plan(cfg):
        shard_id = shard_id_for(index)
        attempt = committed_attempt(stage, shard_id, subject_ids, digest)
        if attempt is not None:
            skipped.append(ShardReport(shard_id, attempt, subject_ids, cfg.render.views, 0.0, True))
        else:
            pending.append(index)
    return pending, skipped


@task(retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=shards.retry_unless_data_error,
      cache_policy=NO_CACHE, tags=["rodin", "render"], task_run_name="render-shard-{shard_index}")
def render_shard(cfg: RodinConfig, out: str, shard_index: int, storage_options: dict | None) -> ShardReport:
    """Render and commit one shard in an isolated Blender process; every failure is one attempt, retried unless
    the disk is full."""
    with relay_logs("render"):
        return render_shard_to_store(cfg, out, shard_index, storage_options)


def render_pending_shards(cfg: RodinConfig, out: str, pending: list[int], storage_options: dict | None,
                          runner: TaskRunner) -> tuple[list[ShardReport], dict[str, str]]:
    """Run ``render_shard`` for every pending shard on ``runner``; wait for all of them.

    Returns the reports of the committed shards and ``{shard id: error}`` of those that failed
    after their retries. Each task reserves ``render.threads`` CPUs on Ray (1 when threads is 0);
    with nothing pending, the runner (and Ray) is not started.
    """
    if not pending:
        return [], {}
    with shards.open_runner(runner, __name__, MODULE):
        return shards.submit_shards(runner, render_shard, {shard_id_for(i): {
            "cfg": cfg, "out": out, "shard_index": i, "storage_options": storage_options} for i in pending},
            num_cpus=max(1, cfg.render.threads))


@task(retries=1, cache_policy=NO_CACHE, tags=["rodin", "render"])
def make_contact_sheet(out: str, storage_options: dict | None, shard_ids: list[str]) -> tuple[bytes, str] | None:
    """Thumbnails of view 0 (frontal) of the first subjects of ``shard_ids``, as one PNG in ``reports/``.

    Reads whole shards until :data:`CONTACT_SHEET_SUBJECTS` subjects are found; returns the PNG and
    its URI, or None when there is no shard.
    """
    store = open_store(out, storage_options)
    sheet = frontal_contact_sheet(store.stage(RENDERS_STAGE), shard_ids, CONTACT_SHEET_SUBJECTS, CONTACT_SHEET_COLUMNS,
                                  THUMBNAIL_PX)
    if sheet is None:
        return None
    png = encode_png(sheet)
    return png, write_report(store, CONTACT_SHEET_PATH, png)


def frontal_views(out: str, subject_id: int, storage_options: dict | None = None) -> tuple[str | None, list[bytes]]:
    """The committed renders shard of ``out`` holding ``subject_id`` and the subject's frontal views there.

    Returns ``(shard id, RGBA PNGs of view 0)``, one PNG in a sound shard (the last shard when
    several hold the subject), or ``(None, [])`` when no committed shard holds it.
    """
    stage = open_store(out, storage_options).stage(RENDERS_STAGE)
    holding = [s for s in stage.committed_shards() if subject_id in stage.read_manifest(s).subject_ids]
    if not holding:
        return None, []
    table = stage.read_table(holding[-1], VIEWS_TABLE, columns=["subject_id", "view_index", "png"])
    rows = table.filter(pc.and_(pc.equal(table["subject_id"], subject_id), pc.equal(table["view_index"], 0)))
    return holding[-1], rows.column("png").to_pylist()


def shard_rows(cfg: RodinConfig, out: str, storage_options: dict | None, rendered: list[ShardReport],
               skipped: list[ShardReport], failed: dict[str, str]) -> list[ShardRow]:
    """One table row per shard of the plan, with the last failed attempt of each failed shard."""
    rows = [ShardRow(r.shard_id, "skipped" if r.skipped else "rendered", len(r.subject_ids),
                     len(r.subject_ids) * r.views, r.seconds, r.attempt_id) for r in [*rendered, *skipped]]
    sizes = {shard_id_for(i): len(ids) for i, ids in shard_plan(cfg)}
    return rows + shards.failed_rows(open_store(out, storage_options).stage(RENDERS_STAGE), failed, sizes)


@flow(name="render-avatars")
def render_avatars(
    preset: str = "tiny",
    out: str = "data/tiny",
    subjects: int | None = None,
    views: int | None = None,
    resolution: int | None = None,
    seed: int | None = None,
    shard_size: int | None = None,
    asset_dir: str | None = None,
    config_file: str | None = None,
    overrides: list[str] | None = None,
    ray_address: str | None = None,
    storage_options: dict | None = None,
    task_runner: Literal["ray", "threads"] = "ray",
) -> dict[str, Any]:
    """Render the synthetic avatar corpus into ``{out}/renders``, resuming from the committed shards.

    ``task_runner``: ``ray`` (local Ray with every core, or the cluster at ``ray_address``) or
    ``threads``. Returns the summary ``{shards_total, shards_rendered, shards_skipped,
    shards_failed: {shard id: error}, subjects, views, seconds, contact_sheet, store}`` where
    ``subjects``/``views`` count what this run rendered; raises :class:`~workflows.shards.ShardsFailedError` (with
    that summary) after the artifacts when some shard failed.
    """
    start = time.perf_counter()
    cfg = render_config(preset, config_file, overrides, subjects=subjects, views=views, resolution=resolution,
                       seed=seed, shard_size=shard_size, asset_dir=asset_dir)
    runner = build_task_runner(task_runner, ray_address, workers=_parallel_shards(cfg, task_runner))
    pending, skipped = find_pending_shards(cfg, out, storage_options)
    get_run_logger().info("%d subjects in %d shards: %d already committed, %d to render", cfg.corpus.subjects,
                          len(pending) + len(skipped), len(skipped), len(pending))
    rendered, failed = render_pending_shards(cfg, out, pending, storage_options, runner)
    seconds = time.perf_counter() - start
    sheet_uri = publish_reports(cfg, out, storage_options, rendered, skipped, failed, seconds)
    summary = summarize(rendered, skipped, failed, seconds, sheet_uri, out)
    if failed:
        raise shards.ShardsFailedError(summary, FAILURE_WORDING)
    return summary


def publish_reports(cfg: RodinConfig, out: str, storage_options: dict | None, rendered: list[ShardReport],
                    skipped: list[ShardReport], failed: dict[str, str], seconds: float) -> str | None:
    """Publish the shard table, the totals and the contact sheet; returns the contact sheet's URI.

    A contact sheet that cannot be made is logged, never fatal: the renders are what matters.
    """
    rows = shard_rows(cfg, out, storage_options, rendered, skipped, failed)
    publish_shard_report(ARTIFACT_KEY, "Render avatars", rows, seconds, out)
    committed = sorted(r.shard_id for r in [*rendered, *skipped])
    state = make_contact_sheet(out, storage_options, committed, return_state=True)
    if not state.is_completed():
        get_run_logger().warning("no contact sheet: %s", state.message)
        return None
    sheet = state.result()
    if sheet is None:
        return None
    png, uri = sheet
    publish_image(f"{ARTIFACT_KEY}-contact-sheet", "Frontal views", png, uri,
                  caption=f"View 0 of the first subjects of {len(committed)} committed shards.")
    return uri


def summarize(rendered: list[ShardReport], skipped: list[ShardReport], failed: dict[str, str], seconds: float,
              contact_sheet_uri: str | None, out: str) -> dict[str, Any]:
    """The flow's summary; ``subjects`` and ``views`` count what this run rendered."""
    skipped = [*skipped, *(r for r in rendered if r.skipped)]  # committed meanwhile by another run
    rendered = [r for r in rendered if not r.skipped]
    summary = {
        **shards.shard_counts("rendered", rendered, skipped, failed),
        "views": sum(len(r.subject_ids) * r.views for r in rendered),
        "seconds": round(seconds, 3), "contact_sheet": contact_sheet_uri, "store": out,
    }
    get_run_logger().info("rendered %d shards (%d views) in %.1f s; %d skipped, %d failed",
                          summary["shards_rendered"], summary["views"], seconds, summary["shards_skipped"],
                          len(failed))
    return summary


def _parallel_shards(cfg: RodinConfig, task_runner: str) -> int | None:
    """Threads of the thread-pool runner: one shard per ``render.threads`` cores (Ray schedules itself)."""
    if task_runner != "threads":
        return None
    return max(1, (os.cpu_count() or 1) // max(1, cfg.render.threads))
