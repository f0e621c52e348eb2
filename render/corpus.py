"""The rendered corpus as stored: table schemas of a renders shard and readers (paper §4.1, B.2).

A committed shard of the ``renders`` stage holds two parquet files (DESIGN.md, "Data contracts"):

* ``views.parquet``: one row per view — subject id, view index, the RGBA PNG bytes, the OpenCV
  camera-to-world matrix (16 float64, row-major) and the pinhole intrinsics (9 float64,
  row-major), image width and height. One row group per subject, so readers can stream.
* ``subjects.parquet``: one row per subject — the recipe JSON it was built from, its caption and
  the seconds Blender spent rendering its views.

Pure host-side code (no bpy): the tri-plane fitting stage and the tests read renders through it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from rodin_core.storage import StageStore

VIEWS_TABLE = "views.parquet"
SUBJECTS_TABLE = "subjects.parquet"

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


def encode_png(rgba: np.ndarray) -> bytes:
    """RGBA uint8 (H, W, 4) -> PNG bytes with no metadata (same pixels, same bytes)."""
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"encode_png needs an RGBA uint8 (H, W, 4) array, got {rgba.dtype} {rgba.shape}")
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> RGBA uint8 (H, W, 4)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGBA"))


def decode_view_row(row: dict[str, Any]) -> RenderedView:
    """Decode one row of ``views.parquet`` (as a dict of Python values) into a :class:`RenderedView`."""
    rgba = decode_png(row["png"])  # (H, W, 4)
    if rgba.shape[:2] != (row["height"], row["width"]):
        raise ValueError(f"subject {row['subject_id']} view {row['view_index']}: PNG is {rgba.shape[1]}x"
                         f"{rgba.shape[0]} but the row says {row['width']}x{row['height']}; re-render the shard")
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
