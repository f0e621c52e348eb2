"""Near-frontal views and recipes of rendered subjects, as the attribute classifier reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from render.recipe import AvatarRecipe, sample_recipe
from rodin_core.cameras import make_rig
from rodin_core.datasets.attribute_views import (
    near_frontal,
    read_frontal_views,
    read_recipes,
    view_angles,
)
from rodin_core.datasets.errors import StageInputError
from rodin_core.imaging import composite_over
from rodin_core.storage import open_store

from ...attribute_corpus import SIZE, make_attribute_renders, subject_image


def test_view_angles_of_the_rig_and_the_near_frontal_views() -> None:
    c2w = make_rig(16, 64, 30.0, 4.0, -25.0, 50.0).c2w
    angles = view_angles(c2w)
    assert angles[0] == pytest.approx(0.0, abs=1e-6)
    assert np.all((angles >= 0) & (angles <= 180))
    assert near_frontal(c2w, 40.0) == [0, *sorted(int(i) for i in np.flatnonzero(angles[1:] <= 40.0) + 1)]
    assert near_frontal(c2w, 0.0) == [0]
    assert near_frontal(make_rig(4, 64, 30.0, 4.0, -25.0, 50.0).c2w, 65.0) == [0, 3]


def test_views_are_the_near_frontal_ones_over_white_and_recipes_parse(tmp_path: Path) -> None:
    root = make_attribute_renders(tmp_path / "data", subjects=6, shard_size=4)
    stage = open_store(root).stage("renders")
    recipes = read_recipes(stage)
    assert list(recipes) == list(range(6))
    assert AvatarRecipe.from_dict(recipes[5]) == sample_recipe(0, 5)
    views = read_frontal_views(stage, 65.0)
    assert list(views) == list(range(6))
    assert views[4].shape == (2, SIZE, SIZE, 3) and views[4].dtype == np.uint8
    assert np.array_equal(views[4][1], composite_over(subject_image(4, 3)))
    assert np.array_equal(views[4][0][0, 0], [255, 255, 255])  # transparent corner over white
    assert list(read_frontal_views(stage, 10.0, subject_ids=[1, 5])) == [1, 5]
    with pytest.raises(StageInputError, match="subject 9 is in no committed renders shard of .*renders"):
        read_frontal_views(stage, 65.0, subject_ids=[9])
