"""The convolutional refiner (paper §3.3, Fig. 8): volume renders -> images at 2x or 4x their side.

Volume rendering is too costly at high resolution and misses high-frequency detail, so the paper
renders the tri-plane at a lower resolution and lets a 2D network (after Wang et al. 2018, ESRGAN)
add the missing detail. Here the network reads the render's colour, opacity and depth
(:func:`refiner_inputs`) and predicts a residual over the bilinear up-sample of the colour; its last
convolution starts at zero, so an untrained refiner is exactly bilinear up-sampling.

Trained on pairs (render of a fitted tri-plane, corpus render of the same view at the higher
resolution) by :mod:`rodin_core.training.refiner`; files: :mod:`rodin_core.networks.refiner_io`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rodin_core.config_dict import DictConfig

REFINER_SCALES = (2, 4)
"""Up-sampling factors a refiner can have."""
REFINER_INPUTS = ("red", "green", "blue", "opacity", "depth")
"""The channels :func:`refiner_inputs` stacks, in order."""


@dataclass
class RefinerConfig(DictConfig):
    """Shape of a :class:`ConvRefiner`."""

    scale: int = 2
    """Output side / input side: 2 or 4."""
    channels: int = 32
    """Width of every convolution."""
    blocks: int = 4
    """Residual blocks at the input resolution."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> RefinerConfig:
        """Raise ``ValueError`` naming the first invalid field and its value; return self."""
        if isinstance(self.scale, bool) or self.scale not in REFINER_SCALES:
            raise ValueError(f"refiner scale must be one of {REFINER_SCALES}, got {self.scale!r}")
        for name, low in (("channels", 1), ("blocks", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"refiner {name} must be an integer >= {low}, got {value!r}")
        return self


def refiner_inputs(rgb: Tensor, opacity: Tensor, depth: Tensor, camera_radius: float) -> Tensor:
    """Stack a batch of renders into the refiner's input (B, 5, h, w).

    ``rgb`` (B, 3, h, w) composited colour, ``opacity`` (B, h, w), ``depth`` (B, h, w) distance along
    each ray. Depth enters as ``opacity * (depth - camera_radius)``: the surface's offset from the
    plane through the orbit centre, 0 where the ray sees nothing.
    """
    if rgb.dim() != 4 or rgb.shape[1] != 3 or opacity.shape != (rgb.shape[0], *rgb.shape[2:]) \
            or depth.shape != opacity.shape:
        raise ValueError(f"refiner inputs need rgb (B, 3, h, w), opacity and depth (B, h, w); got "
                         f"{tuple(rgb.shape)}, {tuple(opacity.shape)}, {tuple(depth.shape)}")
    offset = opacity * (depth - camera_radius)  # (B, h, w)
    return torch.cat([rgb, opacity[:, None], offset[:, None]], dim=1)


def bilinear_upsample(rgb: Tensor, scale: int) -> Tensor:
    """The baseline the refiner starts from: images (B, 3, h, w) -> (B, 3, scale h, scale w), bilinear."""
    return F.interpolate(rgb, scale_factor=scale, mode="bilinear", align_corners=False)


class ResidualBlock(nn.Module):
    """conv 3x3 -> ReLU -> conv 3x3, added to the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, C, h, w)."""
        return x + self.conv2(F.relu(self.conv1(x)))


class ConvRefiner(nn.Module):
    """Renders (B, 5, h, w) from :func:`refiner_inputs` -> images (B, 3, scale h, scale w).

    ``head`` (5 -> C), ``blocks`` residual blocks, log2(scale) x (conv C -> 4C, pixel shuffle 2, ReLU),
    ``tail`` (C -> 3, zero-initialised); the output is the bilinear up-sample of the colour plus the
    tail's residual. Values are not clamped (training sees the raw output; callers clamp to [0, 1]).
    """

    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        width = cfg.channels
        self.head = nn.Conv2d(len(REFINER_INPUTS), width, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(width) for _ in range(cfg.blocks)))
        self.up = nn.Sequential(*(layer for _ in range(int(math.log2(cfg.scale)))
                                  for layer in (nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2),
                                                nn.ReLU())))
        self.tail = nn.Conv2d(width, 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 5, h, w) -> (B, 3, scale h, scale w)."""
        if x.dim() != 4 or x.shape[1] != len(REFINER_INPUTS):
            raise ValueError(f"the refiner takes (B, {len(REFINER_INPUTS)}, h, w) from refiner_inputs "
                             f"({', '.join(REFINER_INPUTS)}), got {tuple(x.shape)}")
        base = bilinear_upsample(x[:, :3], self.cfg.scale)  # (B, 3, sh, sw)
        features = self.head(x)  # (B, C, h, w)
        features = features + self.body(features)
        return base + self.tail(self.up(features))

    @torch.no_grad()
    def refine(self, rgb: Tensor, opacity: Tensor, depth: Tensor, camera_radius: float) -> Tensor:
        """One render, rgb (h, w, 3), opacity and depth (h, w) -> refined colour (scale h, scale w, 3) in [0, 1]."""
        inputs = refiner_inputs(rgb.permute(2, 0, 1)[None], opacity[None], depth[None], camera_radius)
        param = next(self.parameters())
        out = self(inputs.to(param.device, param.dtype))[0]  # (3, sh, sw)
        return out.clamp(0.0, 1.0).permute(1, 2, 0)

