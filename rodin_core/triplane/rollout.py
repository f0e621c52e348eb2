"""Tri-plane roll-out and roll-in (paper §3.2, Fig. 4b; docs/conventions.md).

The diffusion networks see a tri-plane as one wide feature map: the planes stacked horizontally,
y~ = hstack(y_uv, y_wu, y_vw) in R^{H x 3W x C}. Here the planes keep the order of
:mod:`rodin_core.triplane.planes` (XY, XZ, YZ from left to right), so column block ``k`` of the
rolled tensor, ``rolled[..., k * W:(k + 1) * W]``, is plane ``k``.

    planes (B, n, C, H, W)  <->  rolled (B, C, H, n * W)

The two functions are exact inverses (pure reshapes, no arithmetic).
"""

from __future__ import annotations

from torch import Tensor


def roll_out(planes: Tensor) -> Tensor:
    """Planes (B, n, C, H, W) side by side: the rolled tensor (B, C, H, n * W) (paper's hstack)."""
    if planes.dim() != 5:
        raise ValueError(f"roll_out expects planes (B, n_planes, C, H, W), got shape {tuple(planes.shape)}")
    batch, n_planes, channels, height, width = planes.shape
    rolled = planes.permute(0, 2, 3, 1, 4)  # (B, C, H, n, W)
    return rolled.reshape(batch, channels, height, n_planes * width)  # (B, C, H, n*W)


def roll_in(rolled: Tensor, n_planes: int = 3) -> Tensor:
    """The inverse of :func:`roll_out`: rolled (B, C, H, n * W) -> planes (B, n, C, H, W)."""
    if n_planes < 1:
        raise ValueError(f"roll_in needs n_planes >= 1, got {n_planes}")
    if rolled.dim() != 4:
        raise ValueError(f"roll_in expects a rolled tensor (B, C, H, n_planes * W), got shape {tuple(rolled.shape)}")
    batch, channels, height, total_width = rolled.shape
    if total_width % n_planes != 0:
        raise ValueError(
            f"roll_in: rolled width {total_width} is not divisible by n_planes={n_planes}; "
            f"a rolled tri-plane is (B, C, H, {n_planes} * W), got shape {tuple(rolled.shape)}"
        )
    planes = rolled.reshape(batch, channels, height, n_planes, total_width // n_planes)  # (B, C, H, n, W)
    return planes.permute(0, 3, 1, 2, 4)  # (B, n, C, H, W)
