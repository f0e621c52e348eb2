"""Two small corpora of the same subjects, at 8 and at 16 px, with fitted tri-planes and a decoder, for the refiner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from rodin_core.cameras import make_rig
from rodin_core.config import RodinConfig
from rodin_core.datasets.layout import SUBJECTS_TABLE, VIEWS_TABLE
from rodin_core.datasets.renders import SUBJECTS_SCHEMA, VIEWS_SCHEMA
from rodin_core.imaging import encode_png
from rodin_core.storage import open_store

from .training_corpus import make_corpus, tiny_config

LOW_SIDE = 8
REFINER_OVERRIDES = [f"render.resolution={LOW_SIDE}", "fit.coarse_samples=4", "fit.fine_samples=0",
                     "corpus.subjects=9", "corpus.holdout_subjects=1"]


def refiner_config() -> RodinConfig:
    return tiny_config(*REFINER_OVERRIDES)


def subject_view(subject_id: int, view: int, side: int) -> np.ndarray:
    """A subject- and view-dependent RGBA image (H, W, 4) uint8 with a transparent border."""
    rng = np.random.default_rng(1000 * subject_id + view)
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[side // 4: 3 * side // 4, side // 4: 3 * side // 4, :3] = rng.integers(0, 256, (side // 2, side // 2, 3))
    rgba[side // 4: 3 * side // 4, side // 4: 3 * side // 4, 3] = 255
    return rgba


def write_renders(root: str, cfg: RodinConfig, side: int, views: int, shards: list[list[int]],
                  recipe_seed: int = 0) -> None:
    """Commit renders shards of ``shards`` at ``side`` px from the ``views``-view rig, replacing any before."""
    r = cfg.render
    rig = make_rig(views, side, r.fov_deg, r.camera_radius, r.elevation_min_deg, r.elevation_max_deg)
    stage = open_store(root).stage("renders")
    for shard in stage.committed_shards():
        stage.delete_manifest(shard)
    for index, ids in enumerate(shards):
        rows = [{"subject_id": s, "view_index": v, "png": encode_png(subject_view(s, v, side)),
                 "c2w": rig.c2w[v].ravel().tolist(), "intrinsics": rig.intrinsics.ravel().tolist(), "width": side,
                 "height": side} for s in ids for v in range(views)]
        subjects = [{"subject_id": s, "recipe_json": json.dumps({"seed": recipe_seed, "id": s}), "caption": "a head",
                     "render_seconds": 1.0} for s in ids]
        writer = stage.begin(f"shard-{index:06d}")
        writer.write_table(VIEWS_TABLE, pa.Table.from_pylist(rows, schema=VIEWS_SCHEMA))
        writer.write_table(SUBJECTS_TABLE, pa.Table.from_pylist(subjects, schema=SUBJECTS_SCHEMA))
        writer.commit(ids, f"renders-{side}", extra={"resolution": side, "views": views})


def make_refiner_corpora(folder: Path, high_side: int = 2 * LOW_SIDE, high_views: int = 2) -> tuple[str, str]:
    """(fitted root with renders at :data:`LOW_SIDE` px, root of the same subjects at ``high_side`` px)."""
    cfg = refiner_config()
    out = make_corpus(folder / "fitted", cfg)
    write_renders(out, cfg, LOW_SIDE, 2, [[0, 1, 2, 3, 4], [5, 6, 7, 8]])
    high = str(folder / "high")
    write_renders(high, cfg, high_side, high_views, [[0, 1, 2, 3], [4, 5, 6, 7], [8]])
    return out, high
