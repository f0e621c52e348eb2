"""A small committed renders stage with real recipes, for the attribute classifier's data and benchmark.

Each subject's recipe is ``sample_recipe(0, id)``; every view is a 16 px picture: the hair colour
over the garment colour inside a disc, transparent outside, so the two colours are learnable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from render.caption import caption_for
from render.recipe import sample_recipe
from rodin_core.cameras import make_rig
from rodin_core.datasets.layout import SUBJECTS_TABLE, VIEWS_TABLE
from rodin_core.datasets.renders import SUBJECTS_SCHEMA, VIEWS_SCHEMA
from rodin_core.imaging import encode_png
from rodin_core.storage import open_store, shard_id_for

SIZE = 16
VIEWS = 4
"""Of the render rig's 4 views, 0 (frontal) and 3 (60 degrees) are near-frontal."""


def subject_image(subject_id: int, view: int) -> np.ndarray:
    """RGBA (SIZE, SIZE, 4) uint8: hair colour above garment colour in a disc; the view dims it a little."""
    recipe = sample_recipe(0, subject_id)
    y, x = np.mgrid[0:SIZE, 0:SIZE] - (SIZE - 1) / 2
    image = np.zeros((SIZE, SIZE, 4), np.uint8)
    top, bottom = np.array(recipe.hair.rgb), np.array(recipe.garment_colour.rgb)
    colour = np.where((y < 0)[..., None], top, bottom) * (1.0 - 0.05 * view)  # (H, W, 3)
    image[..., :3] = np.rint(255 * colour).astype(np.uint8)
    image[..., 3] = np.where(x**2 + y**2 < (SIZE / 2.2) ** 2, 255, 0)
    return image


def make_attribute_renders(root: Path, subjects: int, shard_size: int = 4) -> str:
    """Commit renders shards of subjects ``0..subjects-1`` under ``root``; returns the dataset root URI."""
    store = open_store(str(root))
    rig = make_rig(VIEWS, SIZE, 30.0, 4.0, -25.0, 50.0)
    for index, start in enumerate(range(0, subjects, shard_size)):
        ids = list(range(start, min(start + shard_size, subjects)))
        rows = [{"subject_id": s, "view_index": v, "png": encode_png(subject_image(s, v)),
                 "c2w": rig.c2w[v].ravel().tolist(), "intrinsics": rig.intrinsics.ravel().tolist(),
                 "width": SIZE, "height": SIZE} for s in ids for v in range(VIEWS)]
        recipes = [sample_recipe(0, s) for s in ids]
        writer = store.stage("renders").begin(shard_id_for(index))
        writer.write_table(VIEWS_TABLE, pa.Table.from_pylist(rows, schema=VIEWS_SCHEMA))
        writer.write_table(SUBJECTS_TABLE, pa.table({
            "subject_id": ids, "recipe_json": [r.to_json() for r in recipes],
            "caption": [caption_for(r) for r in recipes], "render_seconds": [1.0] * len(ids)}, schema=SUBJECTS_SCHEMA))
        writer.commit(ids, "renders-config", extra={"views": VIEWS})
    return str(root)
