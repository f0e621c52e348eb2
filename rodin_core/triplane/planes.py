"""Plane order and axis bookkeeping of the tri-plane (paper §3.1, Eq. 1; docs/conventions.md).

A tri-plane is a tensor (3, C, H, W) (or (B, 3, C, H, W)). Plane ``p`` spans the world axes
``PLANE_AXES[p] = (a, b)``: its column index (W) follows world axis ``a`` and its row index (H)
follows world axis ``b``, both increasing with the coordinate, over the cube [-1, 1]^3, with pixel
centres at ``-1 + (k + 0.5) * 2 / size`` (``grid_sample(align_corners=False)``).

    plane 0  XY  columns X, rows Y   (seen from above / below)
    plane 1  XZ  columns X, rows Z   (seen from the front)
    plane 2  YZ  columns Y, rows Z   (seen from the side)

A 3D point p = (x, y, z) projects to (x, y) on plane 0, (x, z) on plane 1 and (y, z) on plane 2;
its feature is the sum of the three bilinear samples (y_p = y_uv + y_wu + y_vw, Eq. 1). The
3D-aware convolution and the sampler both read these constants.
"""

from __future__ import annotations

from typing import TypeVar

PLANE_NAMES: tuple[str, str, str] = ("xy", "xz", "yz")
PLANE_AXES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))
"""(column axis, row axis) of each plane, as world-axis indices (0 = X, 1 = Y, 2 = Z)."""

ArrayT = TypeVar("ArrayT")


def project_to_planes(points: ArrayT) -> list[ArrayT]:
    """Coordinates of points (..., 3) on each plane, as a list of three (..., 2) arrays.

    Entry ``[..., 0]`` is the column coordinate and ``[..., 1]`` the row coordinate, the order
    ``grid_sample`` expects. Works on numpy arrays and torch tensors alike.
    """
    return [points[..., list(axes)] for axes in PLANE_AXES]


def pixel_of(coord: float, size: int) -> int:
    """Index of the plane pixel whose cell contains ``coord`` in [-1, 1] along an axis of ``size`` pixels."""
    if not -1.0 <= coord <= 1.0:
        raise ValueError(f"coordinate {coord} is outside the tri-plane cube [-1, 1]")
    return min(int((coord + 1.0) / 2.0 * size), size - 1)
