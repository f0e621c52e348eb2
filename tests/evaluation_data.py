"""A tiny dataset root holding what evaluation reads: renders, fitted tri-planes, statistics, checkpoints, decoder.

Four subjects of 8 views each (a coloured disc, 24 px, seen by the render rig's cameras) in two
renders shards; their fitted tri-planes (random planes; subject 3's fit failed); the plane
statistics; and the tiny random checkpoints and decoder of :mod:`tests.generation_data`. With
:data:`HOLDOUT` the checkpoints are trained with ``corpus.subjects=4`` and
``corpus.holdout_subjects=2``: subjects 0 and 1 are the training subjects, 2 and 3 the held-out ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rodin_core.cameras import make_rig
from rodin_core.config import RodinConfig
from rodin_core.datasets.layout import PLANES_FILE, RECORDS_FILE, VIEWS_TABLE
from rodin_core.datasets.plane_stats import write_plane_stats
from rodin_core.datasets.renders import VIEWS_SCHEMA
from rodin_core.datasets.triplane_records import (
    FitResult,
    planes_to_safetensors,
    records_table,
)
from rodin_core.imaging import encode_png
from rodin_core.storage import open_store, shard_id_for

from .generation_data import make_generation_root, plane_stats

SIZE = 24
SHARDS = [[0, 1], [2, 3]]
FAILED = 3
HOLDOUT = ("corpus.subjects=4", "corpus.holdout_subjects=2", "render.views=8", "fit.holdout_views=2")


def subject_rows(subject_id: int, cfg: RodinConfig) -> list[dict]:
    """``views.parquet`` rows of one subject: a disc whose colour depends on the subject and the view."""
    render = cfg.render
    rig = make_rig(render.views, SIZE, render.fov_deg, render.camera_radius, render.elevation_min_deg,
                   render.elevation_max_deg)
    y, x = np.mgrid[0:SIZE, 0:SIZE] - (SIZE - 1) / 2
    inside = x**2 + y**2 < (SIZE / 3) ** 2  # (H, W)
    rows = []
    for view in range(render.views):
        rgba = np.zeros((SIZE, SIZE, 4), np.uint8)  # (H, W, 4)
        rgba[inside] = (40 + 25 * view, (60 * subject_id) % 256, 200 - 20 * view, 255)
        rows.append({"subject_id": subject_id, "view_index": view, "png": encode_png(rgba),
                     "c2w": rig.c2w[view].ravel().tolist(), "intrinsics": rig.intrinsics.ravel().tolist(),
                     "width": SIZE, "height": SIZE})
    return rows


def fitted_of(subject_id: int, cfg: RodinConfig) -> torch.Tensor:
    """The "fitted" raw planes (3, C, H, W) of a subject: random, seeded by its id."""
    size, channels = cfg.triplane.resolution, cfg.triplane.channels
    return 0.5 * torch.randn(3, channels, size, size, generator=torch.Generator().manual_seed(subject_id))


def make_reconstruction_root(root: Path, cfg: RodinConfig, stages: tuple[str, ...] = ("base", "upsampler"),
                             stats: bool = False) -> str:
    """Checkpoints of ``stages`` and the decoder of ``cfg``, committed renders and tri-planes of subjects 0..3,
    and with ``stats`` the plane statistics the checkpoints were trained with."""
    out = make_generation_root(root, cfg, stages=stages)
    store = open_store(out)
    for index, ids in enumerate(SHARDS):
        writer = store.stage("renders").begin(shard_id_for(index))
        rows = [row for s in ids for row in subject_rows(s, cfg)]
        writer.write_table(VIEWS_TABLE, pa.Table.from_pylist(rows, schema=VIEWS_SCHEMA))
        writer.commit(ids, "renders-config", extra={"views": cfg.render.views})
        results = [FitResult(s, fitted_of(s, cfg), 25.0, 26.0, 10, 1.0, error="diverged" if s == FAILED else None)
                   for s in ids]
        writer = store.stage("triplanes").begin(shard_id_for(index))
        writer.write_bytes(PLANES_FILE, planes_to_safetensors(results))
        writer.write_table(RECORDS_FILE, records_table(results))
        writer.commit(ids, f"planes-{index}")
    if stats:
        write_plane_stats(out, plane_stats(cfg))
    return out
