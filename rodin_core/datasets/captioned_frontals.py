"""Frontal renders with their recipes and captions: what the avatar-CLIP embedding learns from (§4.5).

Reads, from every committed ``renders/`` shard, view 0 (the frontal view) of each subject and the
subject's row of ``subjects.parquet`` (recipe JSON, caption). Only the id, view index and PNG
columns of ``views.parquet`` are read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from rodin_core.datasets.errors import TrainDataError
from rodin_core.datasets.integrity import corrupt_inputs
from rodin_core.datasets.layout import RENDERS_STAGE, SUBJECTS_TABLE, VIEWS_TABLE
from rodin_core.imaging import decode_png
from rodin_core.storage import open_store


@dataclass(frozen=True)
class CaptionedFrontals:
    """Subjects in id order: their frontal renders, recipes and stored captions."""

    subject_ids: list[int]
    images: np.ndarray
    """(N, H, W, 4) uint8 RGBA, straight alpha."""
    recipes: list[str]
    """Recipe JSON of each subject."""
    captions: list[str]
    """The stored one-sentence caption of each subject."""

    def select(self, ids: list[int]) -> CaptionedFrontals:
        """The subjects ``ids`` (in that order)."""
        index = {s: i for i, s in enumerate(self.subject_ids)}
        rows = [index[s] for s in ids]
        return CaptionedFrontals(list(ids), self.images[rows], [self.recipes[i] for i in rows],
                                 [self.captions[i] for i in rows])


def read_captioned_frontals(renders: str, storage_options: dict | None = None) -> CaptionedFrontals:
    """View 0, recipe and caption of every subject of the committed renders of the dataset root ``renders``."""
    stage = open_store(renders, storage_options).stage(RENDERS_STAGE)
    shards = stage.committed_shards()
    if not shards:
        raise TrainDataError(f"no committed renders shard under {stage.uri}; render the corpus first: "
                             f"`rodin render --out {renders}`")
    pngs: dict[int, bytes] = {}
    rows: dict[int, tuple[str, str]] = {}
    for shard_id in shards:
        with corrupt_inputs(renders):
            subjects = stage.read_table(shard_id, SUBJECTS_TABLE, columns=["subject_id", "recipe_json", "caption"])
            views = stage.read_table(shard_id, VIEWS_TABLE, columns=["subject_id", "view_index", "png"])
        table = subjects.to_pydict()
        rows.update({s: (r, c) for s, r, c in zip(table["subject_id"], table["recipe_json"], table["caption"],
                                                  strict=True)})
        front = views.filter(pc.equal(views["view_index"], 0)).to_pydict()
        pngs.update(zip(front["subject_id"], front["png"], strict=True))
    missing = sorted(set(rows) - set(pngs))
    if missing:
        raise TrainDataError(f"subjects {missing[:10]} of {stage.uri} have no view 0 (the frontal view); re-render "
                             f"them with `rodin render --out {renders}`")
    ids = sorted(rows)
    images = np.stack([decode_png(pngs[s]) for s in ids])
    if images.ndim != 4 or images.shape[-1] != 4:
        raise TrainDataError(f"frontal renders of {stage.uri} are {images.shape[1:]}, not RGBA; re-render them with "
                             f"`rodin render --out {renders}`")
    return CaptionedFrontals(ids, images, [rows[s][0] for s in ids], [rows[s][1] for s in ids])
