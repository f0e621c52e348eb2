"""Near-frontal views and recipes of rendered subjects: the data of the attribute classifier (§4.5).

A subject's recipe is the ``recipe_json`` column of its renders shard's ``subjects.parquet``
(docs/data-contracts.md); its views are the rows of ``views.parquet``. The classifier reads the
views whose camera lies within ``max_angle_deg`` of the face direction (view 0, the frontal view,
always), composited over a white background like the renders of generated avatars.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow.compute as pc

from rodin_core.cameras import FACE_DIRECTION
from rodin_core.datasets.errors import StageInputError
from rodin_core.datasets.integrity import corrupt_inputs
from rodin_core.datasets.layout import SUBJECTS_TABLE, VIEWS_TABLE
from rodin_core.datasets.renders import decode_view_row, renders_index
from rodin_core.imaging import composite_over
from rodin_core.storage import StageStore


def view_angles(c2w: np.ndarray) -> np.ndarray:
    """Degrees between each camera's direction from the head centre and the face direction: (V, 4, 4) -> (V,)."""
    eyes = np.asarray(c2w, dtype=np.float64)[:, :3, 3]  # (V, 3) camera centres
    eyes = eyes / np.linalg.norm(eyes, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip(eyes @ FACE_DIRECTION, -1.0, 1.0)))


def near_frontal(c2w: np.ndarray, max_angle_deg: float) -> list[int]:
    """Indices of the views within ``max_angle_deg`` of the face direction, view 0 always among them."""
    angles = view_angles(c2w)
    return sorted({0} | {int(i) for i in np.flatnonzero(angles <= max_angle_deg)})


def read_recipes(stage: StageStore) -> dict[int, dict[str, Any]]:
    """Subject id -> its recipe (the parsed ``recipe_json``) for every committed renders shard."""
    recipes: dict[int, dict[str, Any]] = {}
    for shard_id in sorted({source.shard_id for source in renders_index(stage).values()}):
        with corrupt_inputs():
            table = stage.read_table(shard_id, SUBJECTS_TABLE, columns=["subject_id", "recipe_json"])
        for row in table.to_pylist():
            recipes[int(row["subject_id"])] = json.loads(row["recipe_json"])
    return dict(sorted(recipes.items()))


def read_frontal_views(stage: StageStore, max_angle_deg: float,
                       subject_ids: list[int] | None = None) -> dict[int, np.ndarray]:
    """Subject id -> its near-frontal views over white, (V, H, W, 3) uint8, for every (or each given) subject."""
    index = renders_index(stage)
    wanted = sorted(index) if subject_ids is None else sorted(subject_ids)
    by_shard: dict[str, list[int]] = {}
    for subject_id in wanted:
        if subject_id not in index:
            raise StageInputError(f"subject {subject_id} is in no committed renders shard of {stage.uri}; render it "
                                  f"(`rodin render --out {stage.store.uri} --subjects N`) or leave it out")
        by_shard.setdefault(index[subject_id].shard_id, []).append(subject_id)
    views: dict[int, np.ndarray] = {}
    for shard_id, ids in sorted(by_shard.items()):
        with corrupt_inputs():
            table = stage.read_table(shard_id, VIEWS_TABLE)
        for subject_id in ids:
            own = table.filter(pc.equal(table["subject_id"], subject_id)).to_pylist()
            rows = sorted((decode_view_row(r) for r in own), key=lambda v: v.view_index)
            keep = near_frontal(np.stack([r.c2w for r in rows]), max_angle_deg)
            views[subject_id] = np.stack([composite_over(rows[k].rgba) for k in keep])
    return views
