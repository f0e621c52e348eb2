"""docs/conventions.md, checked: world axes, OpenCV cameras, the Blender conversion, the rig, planes."""

import math

import numpy as np
import pytest

from rodin_core import cameras
from rodin_core.triplane.planes import (
    PLANE_AXES,
    PLANE_NAMES,
    pixel_of,
    project_to_planes,
)


def test_world_axes_are_right_handed_z_up_face_minus_y():
    assert np.allclose(cameras.WORLD_UP, [0, 0, 1])
    assert np.allclose(cameras.FACE_DIRECTION, [0, -1, 0])
    # the avatar's right hand is along face x up, so +X is its left
    assert np.allclose(np.cross(cameras.FACE_DIRECTION, cameras.WORLD_UP), [-1, 0, 0])


def test_look_at_is_opencv_right_down_forward():
    c2w = cameras.look_at(np.array([0.0, -4.0, 0.0]))
    right, down, forward, centre = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3]
    assert np.allclose(forward, [0, 1, 0])  # looks at the face from the front
    assert np.allclose(right, [1, 0, 0])  # image right = world +X (the avatar's left)
    assert np.allclose(down, [0, 0, -1])  # image down = world -Z
    assert np.allclose(centre, [0, -4, 0])
    assert np.allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3))
    assert np.isclose(np.linalg.det(c2w[:3, :3]), 1.0)


def test_look_at_rejects_degenerate_poses():
    with pytest.raises(ValueError, match="up axis"):
        cameras.look_at(np.array([0.0, 0.0, 3.0]))
    with pytest.raises(ValueError, match="coincides"):
        cameras.look_at(np.zeros(3))


def test_projection_pixel_centres_and_axes():
    K = cameras.intrinsics_from_fov(30.0, 64, 64)
    assert np.isclose(K[0, 0], 32 / math.tan(math.radians(15)))
    c2w = cameras.look_at(np.array([0.0, -4.0, 0.0]))
    pts = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.5]])
    uv, depth = cameras.project_points(pts, c2w, K)
    assert np.allclose(uv[0], [32, 32]) and np.allclose(depth, 4.0)
    assert uv[1, 0] > 32 and np.isclose(uv[1, 1], 32)  # +X to the image right
    assert uv[2, 1] < 32 and np.isclose(uv[2, 0], 32)  # +Z up in the image


def test_pixel_rays_pass_through_the_projected_pixel():
    K = cameras.intrinsics_from_fov(40.0, 16, 12)
    c2w = cameras.make_rig(7, 16, 40.0, 3.0, -20, 40).c2w[3]
    origins, dirs = cameras.pixel_rays(c2w, K, 16, 12)
    assert origins.shape == dirs.shape == (12, 16, 3)
    assert np.allclose(np.linalg.norm(dirs, axis=-1), 1.0)
    point = origins[5, 9] + 2.5 * dirs[5, 9]
    uv, _ = cameras.project_points(point[None], c2w, K)
    assert np.allclose(uv[0], [9.5, 5.5])


def test_blender_conversion_is_the_axis_flip_and_an_involution():
    # A Blender camera with identity rotation looks down world -Z with image up = world +Y.
    blender = np.eye(4)
    blender[:3, 3] = [1.0, 2.0, 3.0]
    cv = cameras.opencv_from_blender(blender)
    assert np.allclose(cv[:3, 2], [0, 0, -1])  # forward
    assert np.allclose(cv[:3, 1], [0, -1, 0])  # image down = world -Y
    assert np.allclose(cv[:3, 3], [1, 2, 3])
    rig = cameras.make_rig(5, 32, 30.0, 4.0, -10, 30)
    assert np.allclose(cameras.opencv_from_blender(cameras.opencv_from_blender(rig.c2w)), rig.c2w)


def test_rig_view0_frontal_and_views_spread_over_360_degrees():
    rig = cameras.make_rig(300, 256, 30.0, 4.0, -25.0, 50.0)
    assert len(rig) == 300 and rig.c2w.shape == (300, 4, 4)
    centres = rig.c2w[:, :3, 3]
    assert np.allclose(centres[0], [0, -4, 0])
    assert np.allclose(np.linalg.norm(centres, axis=1), 4.0)
    elevation = np.degrees(np.arcsin(centres[1:, 2] / 4.0))
    assert elevation.min() >= -25.0 - 1e-6 and elevation.max() <= 50.0 + 1e-6
    azimuth = np.degrees(np.arctan2(centres[1:, 0], -centres[1:, 1])) % 360
    counts, _ = np.histogram(azimuth, bins=12, range=(0, 360))
    assert counts.min() >= 20  # every 30° sector holds views (25 expected on average)
    # every camera looks at the origin
    uv = np.stack([cameras.project_points(np.zeros((1, 3)), c, rig.intrinsics)[0][0] for c in rig.c2w])
    assert np.allclose(uv, 128.0)


def test_view_directions_are_deterministic_and_low_discrepancy():
    a = cameras.view_directions(50, -20, 40)
    assert np.array_equal(a, cameras.view_directions(50, -20, 40))
    # low discrepancy: nearest-neighbour angles are all similar (no clumps, no holes)
    cos = np.clip(a[1:] @ a[1:].T, -1, 1)
    np.fill_diagonal(cos, -1)
    nearest = np.degrees(np.arccos(cos.max(axis=1)))
    assert nearest.max() < 3.0 * nearest.min()


def test_plane_order_and_projection():
    assert PLANE_NAMES == ("xy", "xz", "yz")
    assert PLANE_AXES == ((0, 1), (0, 2), (1, 2))
    p = np.array([[0.1, -0.2, 0.3]])
    xy, xz, yz = project_to_planes(p)
    assert np.allclose(xy, [[0.1, -0.2]]) and np.allclose(xz, [[0.1, 0.3]]) and np.allclose(yz, [[-0.2, 0.3]])
    assert pixel_of(-1.0, 8) == 0 and pixel_of(1.0, 8) == 7 and pixel_of(0.0, 8) == 4 and pixel_of(-0.01, 8) == 3
    with pytest.raises(ValueError, match="outside"):
        pixel_of(1.5, 8)
