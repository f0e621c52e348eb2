"""Random rescaling of tri-planes during fitting (paper §3.1, Fig. 3, appendix B.2).

Fitting only full-resolution planes leaves a decoder that cannot render their low-resolution
variants (Fig. 3b). Rodin therefore down-samples the planes to a random size in [64, 256] and
up-samples them back to 256 before rendering, so the shared decoder learns to read tri-planes at
every scale the hierarchical diffusion produces (Fig. 3c). Down-sampling is antialiased bilinear
(a proper low-pass filter for any, also non-integer, factor); up-sampling is bilinear with
``align_corners=False``, the same convention the sampler uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def downsample_planes(planes: Tensor, size: int) -> Tensor:
    """Planes (B, 3, C, H, W) down-sampled (antialiased bilinear) to (B, 3, C, size, size).

    The low-resolution tri-plane of the hierarchical diffusion (base model targets, upsampler
    conditions) and the first half of :func:`rescale_planes`.
    """
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be (B, 3, C, H, W), got shape {tuple(planes.shape)}")
    batch, _, channels, height, width = planes.shape
    if not 1 <= size <= min(height, width):
        raise ValueError(f"plane size must be in [1, {min(height, width)}] for planes {height}x{width}, got {size}; "
                         "the low resolution (triplane.rescale_min) cannot exceed triplane.resolution")
    if size == height == width:
        return planes
    flat = planes.reshape(batch * 3, channels, height, width)  # (B*3, C, H, W)
    low = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return low.reshape(batch, 3, channels, size, size)  # (B, 3, C, size, size)


def upsample_planes(planes: Tensor, size: int) -> Tensor:
    """Planes (B, 3, C, h, w) up-sampled bilinearly (``align_corners=False``) to (B, 3, C, size, size).

    The convention of :func:`rescale_planes` and of the U-Net's low-resolution condition; the upsampler's
    residual parameterisation predicts the difference to this up-sample.
    """
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be (B, 3, C, H, W), got shape {tuple(planes.shape)}")
    batch, _, channels, height, width = planes.shape
    if size == height == width:
        return planes
    flat = planes.reshape(batch * 3, channels, height, width)  # (B*3, C, h, w)
    up = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False)
    return up.reshape(batch, 3, channels, size, size)  # (B, 3, C, size, size)


def rescale_planes(planes: Tensor, size: int) -> Tensor:
    """Down-sample planes (B, 3, C, H, W) to size x size (antialiased) and back up to H x W, bilinearly.

    ``size == H == W`` returns the input unchanged. Differentiable with respect to ``planes``.
    """
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be (B, 3, C, H, W), got shape {tuple(planes.shape)}")
    batch, _, channels, height, width = planes.shape
    if size == height == width:
        return planes
    if height != width:
        low = downsample_planes(planes, size).flatten(0, 1)  # (B*3, C, size, size)
        back = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
        return back.reshape(batch, 3, channels, height, width)  # (B, 3, C, H, W)
    return upsample_planes(downsample_planes(planes, size), height)  # (B, 3, C, H, W)


def random_rescale(planes: Tensor, min_size: int, generator: torch.Generator | None = None) -> Tensor:
    """:func:`rescale_planes` at a size drawn uniformly from the integers in [min_size, H].

    A draw of H returns ``planes`` itself. ``generator`` must live on the CPU (the draw is one int).
    """
    if planes.dim() != 5:
        raise ValueError(f"planes must be (B, 3, C, H, W), got shape {tuple(planes.shape)}")
    height = planes.shape[-2]
    if not 1 <= min_size <= height:
        raise ValueError(f"min_size must be in [1, {height}] (the plane size), got {min_size}")
    size = int(torch.randint(min_size, height + 1, (1,), generator=generator).item())
    return rescale_planes(planes, size)
