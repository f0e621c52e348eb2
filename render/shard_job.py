"""Render one shard of the synthetic corpus into the object store (paper §4.1, appendix B.2).

A shard is a contiguous block of ``corpus.shard_size`` subject ids. One attempt at a shard:

1. skip it when it is already committed for the same subjects and the same config hash;
2. run Blender on it in a fresh temporary folder (:func:`render.launcher.run_blender_shard`,
   bounded by ``render.timeout_s``), then validate every file it wrote;
3. write ``views.parquet`` and ``subjects.parquet`` (:mod:`rodin_core.datasets.renders`) under the attempt's key
   and commit the manifest.

Any failure is recorded as a failure of that attempt (with the end of Blender's log) and raised
again, so that the orchestrator retries the shard; the temporary folder is always deleted. This
module never imports ``bpy``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from render.asset_library import scan_asset_library
from render.caption import caption_for
from render.launcher import (
    LOG_NAME,
    RECIPE_NAME,
    SPEC_NAME,
    BlenderError,
    load_view,
    log_tail,
    run_blender_shard,
    subject_dir,
    validate_outputs,
    view_name,
)
from render.recipe import RECIPE_VERSION, AvatarRecipe
from rodin_core.cameras import make_rig
from rodin_core.config import RodinConfig
from rodin_core.datasets.layout import RENDERS_STAGE, SUBJECTS_TABLE, VIEWS_TABLE
from rodin_core.datasets.renders import SUBJECTS_SCHEMA, VIEWS_SCHEMA
from rodin_core.imaging import encode_png
from rodin_core.storage import StageStore, config_hash, open_store, shard_id_for

log = logging.getLogger(__name__)


NON_OUTPUT_FIELDS = ("timeout_s", "threads")
"""Render settings that cannot change a pixel; they are left out of the config hash."""


@dataclass(frozen=True)
class ShardReport:
    """Outcome of one call of :func:`render_shard_to_store`."""

    shard_id: str
    attempt_id: str
    """The attempt that wrote the shard (for a skipped shard: the committed one)."""
    subject_ids: list[int]
    views: int
    """Views per subject."""
    seconds: float
    """Wall-clock seconds of this call."""
    skipped: bool
    """True when the shard was already committed with the same config and nothing was rendered."""


def shard_plan(cfg: RodinConfig) -> list[tuple[int, list[int]]]:
    """All shards of the corpus: ``(shard index, subject ids)``; the last shard may be shorter."""
    size, total = cfg.corpus.shard_size, cfg.corpus.subjects
    return [(i, list(range(i * size, min((i + 1) * size, total)))) for i in range(math.ceil(total / size))]


def asset_catalog(cfg: RodinConfig) -> dict[str, list[str]]:
    """Files of the asset library (``corpus.asset_dir``) by category; empty without a library."""
    if cfg.corpus.asset_dir is None:
        return {}
    return {category: sorted(files) for category, files in scan_asset_library(cfg.corpus.asset_dir).items()}


def render_config_hash(cfg: RodinConfig, catalog: dict[str, list[str]]) -> str:
    """Hash of everything that determines the pixels and recipes of a subject."""
    render = {k: v for k, v in dataclasses.asdict(cfg.render).items() if k not in NON_OUTPUT_FIELDS}
    return config_hash({"corpus_seed": cfg.corpus.seed, "render": render, "asset_catalog": catalog,
                        "recipe_version": RECIPE_VERSION})


def _subject_ids_of(cfg: RodinConfig, shard_index: int) -> list[int]:
    plan = shard_plan(cfg)
    if not 0 <= shard_index < len(plan):
        raise ValueError(f"shard index {shard_index} is outside the corpus plan: {cfg.corpus.subjects} subjects in "
                         f"shards of {cfg.corpus.shard_size} give indices 0..{len(plan) - 1}")
    return plan[shard_index][1]


def _write_views(cfg: RodinConfig, workdir: Path, subject_ids: list[int], path: Path) -> int:
    """Write ``views.parquet`` on local disk, one row group per subject; returns the row count.

    The PNGs are re-encoded without Blender's metadata (render times, dates), so that identical
    pixels are stored as identical bytes.
    """
    r = cfg.render
    rig = make_rig(r.views, r.resolution, r.fov_deg, r.camera_radius, r.elevation_min_deg, r.elevation_max_deg)
    intrinsics = rig.intrinsics.reshape(-1).tolist()  # (9,) row-major
    rows = 0
    with pq.ParquetWriter(path, VIEWS_SCHEMA, compression="zstd") as writer:
        for subject_id in subject_ids:
            folder = subject_dir(workdir, subject_id)
            table = pa.table({
                "subject_id": [subject_id] * len(rig),
                "view_index": list(range(len(rig))),
                "png": [encode_png(load_view(folder / view_name(k), r.resolution)) for k in range(len(rig))],
                "c2w": [rig.c2w[k].reshape(-1).tolist() for k in range(len(rig))],  # (16,) row-major
                "intrinsics": [intrinsics] * len(rig),
                "width": [rig.width] * len(rig),
                "height": [rig.height] * len(rig),
            }, schema=VIEWS_SCHEMA)
            writer.write_table(table)
            rows += table.num_rows
    return rows


def _subjects_table(workdir: Path, subject_ids: list[int], seconds: dict[int, float]) -> pa.Table:
    recipes = [(subject_dir(workdir, s) / RECIPE_NAME).read_text() for s in subject_ids]
    return pa.table({
        "subject_id": subject_ids,
        "recipe_json": recipes,
        "caption": [caption_for(AvatarRecipe.from_json(text)) for text in recipes],
        "render_seconds": [seconds[s] for s in subject_ids],
    }, schema=SUBJECTS_SCHEMA)


def committed_attempt(stage: StageStore, shard_id: str, subject_ids: list[int], digest: str) -> str | None:
    """Attempt id of the committed shard when it holds these subjects rendered with config ``digest``.

    None when the shard has no manifest, or was committed for other subjects or another config
    (then it must be rendered again).
    """
    if not stage.is_committed(shard_id):
        return None
    manifest = stage.read_manifest(shard_id)
    if manifest.config_hash == digest and list(manifest.subject_ids) == subject_ids:
        return manifest.attempt_id
    log.info("renders shard %s is committed with config %s for %d subjects; re-rendering it for config %s",
             shard_id, manifest.config_hash, len(manifest.subject_ids), digest)
    return None


def render_shard_to_store(cfg: RodinConfig, out_uri: str, shard_index: int,
                          storage_options: dict | None = None) -> ShardReport:
    """Render shard ``shard_index`` of ``cfg``'s corpus into ``<out_uri>/renders`` and commit it.

    Skips the shard (``report.skipped``) when it is committed with the same subjects and config
    hash. On any failure the attempt is recorded with ``record_failure`` and the error re-raised.
    """
    start = time.perf_counter()
    subject_ids = _subject_ids_of(cfg, shard_index)
    shard_id = shard_id_for(shard_index)
    stage = open_store(out_uri, storage_options).stage(RENDERS_STAGE)
    catalog = asset_catalog(cfg)
    digest = render_config_hash(cfg, catalog)
    done = committed_attempt(stage, shard_id, subject_ids, digest)
    if done is not None:
        log.info("renders shard %s already committed (attempt %s); skipping", shard_id, done)
        return ShardReport(shard_id, done, subject_ids, cfg.render.views, time.perf_counter() - start, True)

    # The worker runs in its own folder: give it an absolute asset path.
    asset_dir = None if cfg.corpus.asset_dir is None else str(Path(cfg.corpus.asset_dir).expanduser().resolve())
    writer = stage.begin(shard_id)
    workdir = Path(tempfile.mkdtemp(prefix=f"rodin-{shard_id}-"))
    try:
        spec: dict[str, Any] = {
            "subject_ids": subject_ids, "seed": cfg.corpus.seed, "render": dataclasses.asdict(cfg.render),
            "asset_dir": asset_dir, "asset_catalog": catalog,
        }
        log.info("rendering %s: subjects %d..%d, %d views each, attempt %s", shard_id, subject_ids[0],
                 subject_ids[-1], cfg.render.views, writer.attempt_id)
        run = run_blender_shard(spec, workdir, cfg.render.timeout_s)
        validate_outputs(workdir, subject_ids, cfg.render.views, cfg.render.resolution)
        views_path = workdir / VIEWS_TABLE
        rows = _write_views(cfg, workdir, subject_ids, views_path)
        writer.write_bytes(VIEWS_TABLE, views_path.read_bytes(), rows=rows)
        writer.write_table(SUBJECTS_TABLE, _subjects_table(workdir, subject_ids, run.subject_seconds))
        seconds = time.perf_counter() - start
        writer.commit(subject_ids, digest, extra={
            "preset": cfg.preset, "corpus_subjects": cfg.corpus.subjects, "views": cfg.render.views,
            "resolution": cfg.render.resolution,
            "seconds": round(seconds, 3), "blender_seconds": round(run.seconds, 3),
            "blender_version": run.blender_version,
        })
        log.info("committed %s: %d views in %.1f s (Blender %.1f s)", shard_id, rows, seconds, run.seconds)
        return ShardReport(shard_id, writer.attempt_id, subject_ids, cfg.render.views, seconds, False)
    except Exception as exc:
        tail = exc.log_tail if isinstance(exc, BlenderError) else log_tail(workdir / LOG_NAME)
        spec_path = workdir / SPEC_NAME
        stage.record_failure(shard_id, writer.attempt_id, exc, {
            "log_tail": tail, "subject_ids": subject_ids, "config_hash": digest,
            "spec": json.loads(spec_path.read_text()) if spec_path.is_file() else None,
        })
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
