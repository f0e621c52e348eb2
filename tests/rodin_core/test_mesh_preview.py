"""rodin_core.mesh_preview: which side of a coloured mesh each view shows, its lighting and framing."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from rodin_core.mesh_preview import AMBIENT, mesh_preview

WHITE = np.array([255, 255, 255])


def half_coloured_sphere() -> trimesh.Trimesh:
    """A unit sphere, red where x > 0 (the avatar's left, the viewer's right from the front), blue elsewhere."""
    sphere = trimesh.creation.icosphere(subdivisions=5)
    colours = np.where(sphere.vertices[:, :1] > 0, [[255, 0, 0, 255]], [[0, 0, 255, 255]]).astype(np.uint8)
    sphere.visual.vertex_colors = colours
    return sphere


def test_views_turn_around_the_up_axis_from_the_front() -> None:
    size = 64
    picture = mesh_preview(half_coloured_sphere(), views=4, size=size)
    assert picture.shape == (size, 4 * size, 3) and picture.dtype == np.uint8
    front, back = picture[:, :size].astype(int), picture[:, 2 * size:3 * size].astype(int)
    row = size // 2
    # the front view sees +X on its right, the back view on its left
    assert front[row, size // 2 + 10, 0] > 100 and front[row, size // 2 + 10, 2] == 0
    assert front[row, size // 2 - 10, 2] > 100 and front[row, size // 2 - 10, 0] == 0
    assert back[row, size // 2 + 10, 2] > 100 and back[row, size // 2 - 10, 0] > 100
    # outside the sphere's disc: the background
    for view in range(4):
        assert (picture[0, view * size] == WHITE).all() and (picture[-1, (view + 1) * size - 1] == WHITE).all()


def test_faces_turned_to_the_viewer_are_brightest() -> None:
    size = 96
    front = mesh_preview(half_coloured_sphere(), views=1, size=size).astype(int)
    row = size // 2
    red = front[row, size // 2:, 0]  # the red half, centre to edge
    drawn = red[np.any(front[row, size // 2:] != WHITE, axis=-1)]
    assert drawn[2] >= 250  # at the centre the face looks straight at the viewer
    assert drawn[-1] < drawn[2] and drawn[-1] >= int(AMBIENT * 255) - 1  # the limb keeps the ambient share


def test_the_picture_frames_the_mesh_wherever_and_however_big_it_is() -> None:
    sphere = half_coloured_sphere()
    small = mesh_preview(sphere, views=2, size=48)
    moved = sphere.copy()
    moved.apply_scale(7.0)
    moved.apply_translation([3.0, -2.0, 5.0])
    differ = np.any(mesh_preview(moved, views=2, size=48) != small, axis=-1)
    assert differ.mean() < 0.01  # the same picture up to pixels on rounding boundaries


def test_bad_input_is_one_line() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        mesh_preview(half_coloured_sphere(), views=0)
    with pytest.raises(ValueError, match="no vertex colours"):
        mesh_preview(trimesh.creation.icosphere(subdivisions=1))
    with pytest.raises(ValueError, match="no faces"):
        mesh_preview(trimesh.Trimesh(vertices=np.zeros((3, 3)), faces=np.zeros((0, 3), dtype=np.int64)))
