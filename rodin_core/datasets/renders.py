"""The rendered corpus as stored: table schemas of a renders shard and readers (paper §4.1, B.2).

A committed shard of the ``renders`` stage holds two parquet files (docs/data-contracts.md):

* ``views.parquet``: one row per view — subject id, view index, the RGBA PNG bytes, the OpenCV
  camera-to-world matrix (16 float64, row-major) and the pinhole intrinsics (9 float64,
  row-major), image width and height. One row group per subject, so readers can stream.
* ``subjects.parquet``: one row per subject — the recipe JSON it was built from, its caption and
  the seconds Blender spent rendering its views.

Pure host-side code (no bpy): the tri-plane fitting stage and the tests read renders through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rodin_core.datasets.errors import FitDataError
from rodin_core.datasets.integrity import corrupt_inputs, id_ranges, shared_subjects
from rodin_core.datasets.layout import SUBJECTS_TABLE, VIEWS_TABLE
from rodin_core.imaging import contact_sheet, decode_png, thumbnail
from rodin_core.storage import StageStore
from rodin_core.triplane.subject import SubjectViews

VIEWS_SCHEMA = pa.schema([
    pa.field("subject_id", pa.int64(), nullable=False),
    pa.field("view_index", pa.int32(), nullable=False),
    pa.field("png", pa.binary(), nullable=False),
    pa.field("c2w", pa.list_(pa.float64(), 16), nullable=False),
    pa.field("intrinsics", pa.list_(pa.float64(), 9), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
])
"""One row per rendered view; ``c2w`` is OpenCV camera-to-world, row-major."""

SUBJECTS_SCHEMA = pa.schema([
    pa.field("subject_id", pa.int64(), nullable=False),
    pa.field("recipe_json", pa.string(), nullable=False),
    pa.field("caption", pa.string(), nullable=False),
    pa.field("render_seconds", pa.float64(), nullable=False),
])
"""One row per subject: its recipe, caption and render time."""


@dataclass(frozen=True)
class RenderedView:
    """One decoded view of one subject."""

    subject_id: int
    view_index: int
    rgba: np.ndarray
    """(H, W, 4) uint8, straight (un-premultiplied) alpha; alpha 0 is background."""
    c2w: np.ndarray
    """(4, 4) float64 OpenCV camera-to-world."""
    intrinsics: np.ndarray
    """(3, 3) float64 pinhole matrix in pixels."""


def decode_view_row(row: dict[str, Any]) -> RenderedView:
    """Decode one row of ``views.parquet`` (as a dict of Python values) into a :class:`RenderedView`."""
    rgba = decode_png(row["png"])  # (H, W, 4)
    if rgba.shape != (row["height"], row["width"], 4):
        raise ValueError(f"subject {row['subject_id']} view {row['view_index']}: PNG is {rgba.shape} but the row says "
                         f"({row['height']}, {row['width']}, 4) RGBA; re-render the shard")
    return RenderedView(
        subject_id=int(row["subject_id"]),
        view_index=int(row["view_index"]),
        rgba=rgba,
        c2w=np.asarray(row["c2w"], dtype=np.float64).reshape(4, 4),
        intrinsics=np.asarray(row["intrinsics"], dtype=np.float64).reshape(3, 3),
    )


def iter_views(stage: StageStore, shard_id: str, subject_id: int | None = None) -> Iterator[RenderedView]:
    """Decoded views of a committed renders shard, in stored order (one subject's only if given)."""
    table = stage.read_table(shard_id, VIEWS_TABLE)
    if subject_id is not None:
        ids = table.column("subject_id").to_numpy()
        if not (ids == subject_id).any():
            raise KeyError(f"shard {shard_id!r} has no subject {subject_id}; it holds {sorted(set(ids.tolist()))}")
        table = table.filter(pa.array(ids == subject_id))
    for batch in table.to_batches():
        for row in batch.to_pylist():
            yield decode_view_row(row)


def read_views(stage: StageStore, shard_id: str, subject_id: int | None = None) -> list[RenderedView]:
    """All decoded views of a shard (or of one of its subjects); see :func:`iter_views`."""
    return list(iter_views(stage, shard_id, subject_id))


def read_subjects(stage: StageStore, shard_id: str) -> list[dict[str, Any]]:
    """Rows of ``subjects.parquet`` of a committed renders shard, as dicts."""
    return stage.read_table(shard_id, SUBJECTS_TABLE).to_pylist()


def frontal_contact_sheet(stage: StageStore, shard_ids: Iterable[str], count: int = 16, columns: int = 4,
                          tile_px: int | None = None, labels: bool = True) -> np.ndarray | None:
    """View 0 (frontal) of the first ``count`` subjects of ``shard_ids`` tiled into one RGB image.

    Reads one shard at a time (only its subject id, view index and PNG columns) until ``count``
    subjects are found; tiles are shrunk to ``tile_px`` when given and labelled with the subject id.
    Returns None when the shards hold no view.
    """
    images, names = [], []
    for shard_id in shard_ids:
        table = stage.read_table(shard_id, VIEWS_TABLE, columns=["subject_id", "view_index", "png"])
        for row in table.filter(pc.equal(table["view_index"], 0)).to_pylist()[: count - len(images)]:
            image = decode_png(row["png"])
            images.append(thumbnail(image, tile_px) if tile_px else image)
            names.append(f"#{row['subject_id']}")
        if len(images) >= count:
            break
    if not images:
        return None
    return contact_sheet(images, min(len(images), columns), names if labels else None)


@dataclass(frozen=True)
class RenderSource:
    """Where one subject's views are stored: its renders shard and that shard's config hash."""

    shard_id: str
    config_hash: str
    views: int
    """Views of the subject (from the renders manifest; 0 when it does not say)."""


def renders_index(stage: StageStore) -> dict[int, RenderSource]:
    """Subject id -> :class:`RenderSource` of every committed renders shard (reads manifests only).

    Raises :class:`FitDataError` when there is none, or when two shards hold one subject.
    """
    index: dict[int, RenderSource] = {}
    subjects: dict[str, tuple[int, ...]] = {}
    for shard_id in stage.committed_shards():
        manifest = stage.read_manifest(shard_id)
        views = manifest.extra.get("views", 0)
        subjects[shard_id] = manifest.subject_ids
        index.update((s, RenderSource(shard_id, manifest.config_hash, views)) for s in manifest.subject_ids)
    if not index:
        raise FitDataError(f"no committed renders shard under {stage.uri}; render the corpus first "
                           f"(`rodin render --out {stage.store.uri}`) or point `renders` at a rendered dataset root")
    twice = shared_subjects(subjects)
    if twice:
        shards = sorted({shard for owners in twice.values() for shard in owners})
        raise FitDataError(f"subjects {id_ranges(twice)} are in more than one committed renders shard of {stage.uri} "
                           f"({', '.join(shards)}): shards of another corpus.shard_size or --subjects were left "
                           f"there; delete the manifests of those that do not belong to the corpus "
                           f"({stage.uri}/manifests/) and run `rodin render --out {stage.store.uri}` again")
    return dict(sorted(index.items()))


def rendered_corpus_size(stage: StageStore) -> int:
    """Subjects of the corpus the committed renders shards were rendered for (``corpus.subjects`` at render time,
    from their manifests; 0 when no manifest says): ids past the last committed one are missing, not absent."""
    sizes = [stage.read_manifest(shard_id).extra.get("corpus_subjects", 0) for shard_id in stage.committed_shards()]
    return max((int(size) for size in sizes if isinstance(size, int) and not isinstance(size, bool)), default=0)


def iter_subjects(stage: StageStore, subject_ids: list[int], sources: dict[int, RenderSource]) -> Iterator[SubjectViews]:
    """Views of ``subject_ids`` as :class:`SubjectViews`, one subject decoded at a time.

    Each renders shard is read (and verified: a damaged one raises
    :class:`~rodin_core.datasets.errors.CorruptInputError`) once, then its subjects' PNGs are decoded one
    subject after the other, so at most one renders shard and one subject's images are in memory.
    """
    by_shard: dict[str, list[int]] = {}
    for subject_id in subject_ids:
        if subject_id not in sources:
            raise FitDataError(f"subject {subject_id} is in no committed renders shard of {stage.uri}; "
                               "re-render its shard or re-plan the fitting (run the flow without `shards`)")
        by_shard.setdefault(sources[subject_id].shard_id, []).append(subject_id)
    for shard_id, ids in by_shard.items():
        with corrupt_inputs():
            table = stage.read_table(shard_id, VIEWS_TABLE)
        for subject_id in ids:
            rows = table.filter(pc.equal(table["subject_id"], subject_id)).to_pylist()
            views = sorted((decode_view_row(row) for row in rows), key=lambda v: v.view_index)
            if not views or [v.view_index for v in views] != list(range(len(views))):
                raise FitDataError(f"renders shard {shard_id} holds views {[v.view_index for v in views]} of subject "
                                   f"{subject_id}, expected 0..V-1; delete its manifest and re-render it")
            yield SubjectViews.from_arrays(subject_id, np.stack([v.rgba for v in views]),  # (V, H, W, 4) uint8
                                           np.stack([v.c2w for v in views]), np.stack([v.intrinsics for v in views]))
