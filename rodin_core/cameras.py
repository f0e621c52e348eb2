"""Camera conventions, the view rig of every subject, and pixel rays.

One convention everywhere (see ``docs/conventions.md``):

* World: head centre at the origin, +Z up, the face looks towards -Y, +X is the avatar's left
  (the viewer's right when facing it). The avatar fits in the tri-plane cube [-1, 1]^3.
* Camera-to-world matrices are OpenCV style: camera +X right, +Y down, +Z forward (viewing
  direction). Intrinsics are a pinhole ``K`` in pixels; pixel (row i, column j) has its centre at
  image coordinates (u, v) = (j + 0.5, i + 0.5).
* Blender cameras look along their local -Z with +Y up; :func:`opencv_from_blender` is the one
  place where that is converted.

The rig follows paper §4.1 / appendix B.2 (many known views per subject, 300 in the paper): view 0
is the frontal view at a fixed pose; the others lie on a spherical Fibonacci lattice restricted to
an elevation band, covering the full 360° of azimuth with low-discrepancy spacing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Flips camera axes between Blender (+Y up, looks along -Z) and OpenCV (+Y down, looks along +Z).
_BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])

WORLD_UP = np.array([0.0, 0.0, 1.0])
"""World up axis (+Z)."""
FACE_DIRECTION = np.array([0.0, -1.0, 0.0])
"""Direction the avatar's face looks towards (-Y)."""

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


@dataclass(frozen=True)
class CameraRig:
    """All views of one subject: per-view OpenCV camera-to-world poses and shared intrinsics."""

    c2w: np.ndarray
    """(N, 4, 4) float64 camera-to-world matrices, OpenCV convention."""
    intrinsics: np.ndarray
    """(3, 3) float64 pinhole matrix in pixels, the same for every view."""
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.c2w.shape[0])


def look_at(eye: np.ndarray, target: np.ndarray = np.zeros(3), up: np.ndarray = WORLD_UP) -> np.ndarray:
    """OpenCV camera-to-world (4, 4) for a camera at ``eye`` looking at ``target``.

    Raises ValueError when the viewing direction is parallel to ``up`` (the roll is undefined).
    """
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    norm = np.linalg.norm(forward)
    if norm == 0.0:
        raise ValueError(f"camera at {eye.tolist()} coincides with its target")
    forward = forward / norm
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError(f"camera at {eye.tolist()} looks along the up axis {np.asarray(up).tolist()}")
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye
    return c2w


def opencv_from_blender(c2w_blender: np.ndarray) -> np.ndarray:
    """Convert Blender camera ``matrix_world`` (..., 4, 4) to the OpenCV convention (..., 4, 4).

    The conversion is an involution: applying it twice gives the input back, so it also converts
    OpenCV poses to the matrices Blender expects.
    """
    return np.asarray(c2w_blender, dtype=np.float64) @ _BLENDER_TO_OPENCV


def intrinsics_from_fov(fov_deg: float, width: int, height: int) -> np.ndarray:
    """Pinhole (3, 3) with square pixels whose horizontal field of view is ``fov_deg``."""
    focal = 0.5 * width / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def view_directions(n_views: int, elevation_min_deg: float, elevation_max_deg: float) -> np.ndarray:
    """Unit directions from the head centre to each camera, (N, 3).

    Direction 0 is frontal (-Y, elevation 0). The others form a spherical Fibonacci lattice in the
    band of elevations: heights uniform in sin(elevation) (equal area), azimuth advancing by the
    golden angle, which spreads the views evenly over the full 360°.
    """
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    dirs = np.empty((n_views, 3))
    dirs[0] = FACE_DIRECTION
    rest = n_views - 1
    if rest:
        i = np.arange(1, n_views, dtype=np.float64)
        z_lo, z_hi = math.sin(math.radians(elevation_min_deg)), math.sin(math.radians(elevation_max_deg))
        z = z_lo + (z_hi - z_lo) * (i - 0.5) / rest
        azimuth = i * _GOLDEN_ANGLE
        ring = np.sqrt(1.0 - z**2)
        dirs[1:, 0] = ring * np.sin(azimuth)
        dirs[1:, 1] = -ring * np.cos(azimuth)
        dirs[1:, 2] = z
    return dirs


def make_rig(
    n_views: int,
    resolution: int,
    fov_deg: float,
    radius: float,
    elevation_min_deg: float,
    elevation_max_deg: float,
) -> CameraRig:
    """The fixed rig shared by every subject: ``n_views`` cameras at ``radius`` looking at the origin."""
    eyes = radius * view_directions(n_views, elevation_min_deg, elevation_max_deg)  # (N, 3)
    c2w = np.stack([look_at(eye) for eye in eyes])  # (N, 4, 4)
    return CameraRig(c2w=c2w, intrinsics=intrinsics_from_fov(fov_deg, resolution, resolution),
                     width=resolution, height=resolution)


def project_points(points: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points (M, 3) into one camera: pixel coordinates (M, 2) as (u, v), depth (M,)."""
    w2c = np.linalg.inv(c2w)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]  # (M, 3) camera-frame points
    depth = cam[:, 2]
    uv = cam[:, :2] / depth[:, None] * np.diag(intrinsics)[:2] + intrinsics[:2, 2]  # (M, 2)
    return uv, depth


def pixel_rays(c2w: np.ndarray, intrinsics: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Rays through every pixel centre of one camera: origins and unit directions, each (H, W, 3)."""
    j, i = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)  # (H, W) each
    cam_dirs = np.stack(
        [(j - intrinsics[0, 2]) / intrinsics[0, 0], (i - intrinsics[1, 2]) / intrinsics[1, 1], np.ones_like(i)],
        axis=-1,
    )  # (H, W, 3) camera frame
    dirs = cam_dirs @ c2w[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    origins = np.broadcast_to(c2w[:3, 3], dirs.shape).copy()
    return origins, dirs
