"""How a diffusion network arranges the three planes (paper §3.2, §4.4, Table 2).

- ``rollout`` (the paper's model): the planes side by side, y~ = hstack(y_uv, y_wu, y_vw) in
  R^{H x 3W x C} (:mod:`.rollout`); the network keeps them apart as three planes (B, 3, C, H, W) of
  shared weights and lets them meet only where it is built to (attention, the 3D-aware convolution).
- ``channels`` (the baseline of Table 2, after EG3D): the planes concatenated on channels,
  y = y_uv ⊕ y_wu ⊕ y_vw in R^{H x W x 3C}, one 2D map that a plain U-Net convolves as a whole, so
  features of planes that are not spatially aligned mix from the first convolution on.

Channel block ``k`` of the stacked map, ``stacked[:, k * C:(k + 1) * C]``, is plane ``k`` in the order of
:mod:`rodin_core.triplane.planes`. Stacking and unstacking are exact inverses (pure reshapes).
"""

from __future__ import annotations

from torch import Tensor

PLANE_LAYOUTS = ("rollout", "channels")
"""The plane arrangements a tri-plane U-Net can be built with; ``rollout`` is the paper's."""


def stack_channels(planes: Tensor) -> Tensor:
    """Planes (B, n, C, H, W) concatenated on channels: (B, n * C, H, W) (the paper's y_uv ⊕ y_wu ⊕ y_vw)."""
    if planes.dim() != 5:
        raise ValueError(f"stack_channels expects planes (B, n_planes, C, H, W), got shape {tuple(planes.shape)}")
    return planes.flatten(1, 2)  # (B, n*C, H, W)


def unstack_channels(stacked: Tensor, n_planes: int = 3) -> Tensor:
    """The inverse of :func:`stack_channels`: (B, n * C, H, W) -> planes (B, n, C, H, W)."""
    if n_planes < 1:
        raise ValueError(f"unstack_channels needs n_planes >= 1, got {n_planes}")
    if stacked.dim() != 4 or stacked.shape[1] % n_planes != 0:
        raise ValueError(f"unstack_channels expects a channel-stacked tri-plane (B, {n_planes} * C, H, W), "
                         f"got shape {tuple(stacked.shape)}")
    return stacked.unflatten(1, (n_planes, stacked.shape[1] // n_planes))  # (B, n, C, H, W)
