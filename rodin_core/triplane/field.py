"""The tri-plane radiance field: plane sampling and the shared MLP decoder (paper §3.1, Eq. 1, Fig. 12).

A point p = (x, y, z) in [-1, 1]^3 is projected onto the three planes (order and axes from
:mod:`rodin_core.triplane.planes`), each plane is sampled bilinearly and the three features are
summed: y_p = y_uv(p_uv) + y_wu(p_wu) + y_vw(p_vw). The decoder then maps

    c(p, d), sigma(p) = G_theta(y_p, xi(y_p), d)                                  (Eq. 1)

where xi is the Fourier embedding of the *feature* (not of the coordinate; Mildenhall et al.,
NeRF §5.1, positional encoding gamma(p) = (sin(2^k pi p), cos(2^k pi p))) and d the unit viewing
direction. The decoder has ``layers`` fully connected layers in total (paper appendix B.2 and
Fig. 12: 4): a ReLU trunk on [y_p, xi(y_p)] whose last layer also emits the density, then one
colour layer that receives the trunk features and the embedded direction.

Density uses a truncated exponential (Müller et al., Instant-NGP: exp forward, gradient clamped)
so that large densities (opaque surfaces at fine sample spacing) are reachable in few steps; its
bias starts at ``DENSITY_BIAS_INIT`` so an untrained field is nearly empty, which keeps early
fitting from having to carve away fog. Colour goes through a sigmoid.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rodin_core.config_dict import DictConfig
from rodin_core.triplane.planes import PLANE_AXES

DENSITY_BIAS_INIT = -5.0
"""Initial bias of the density output: exp(-5) ~ 0.007, a nearly transparent field."""
_EXP_CLAMP = 15.0


def sample_triplane(planes: Tensor, points: Tensor) -> Tensor:
    """Features of points (B, N, 3) from planes (B, 3, C, H, W): the sum over planes, (B, N, C).

    Plane p is read at grid x = world axis ``PLANE_AXES[p][0]`` (columns) and grid y = world axis
    ``PLANE_AXES[p][1]`` (rows), bilinearly, ``align_corners=False``, border padding outside the cube.
    """
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be (B, 3, C, H, W), got shape {tuple(planes.shape)}")
    if points.dim() != 3 or points.shape[-1] != 3 or points.shape[0] != planes.shape[0]:
        raise ValueError(
            f"points must be (B, N, 3) with B = {planes.shape[0]} (the planes' batch), got {tuple(points.shape)}"
        )
    batch, _, channels, height, width = planes.shape
    n = points.shape[1]
    axes = torch.tensor(PLANE_AXES, device=points.device)  # (3, 2)
    grid = points[:, :, axes]  # (B, N, 3, 2): per plane (column coord, row coord)
    grid = grid.permute(0, 2, 1, 3).reshape(batch * 3, 1, n, 2)  # (B*3, 1, N, 2)
    flat = planes.reshape(batch * 3, channels, height, width)  # (B*3, C, H, W)
    sampled = F.grid_sample(flat, grid.to(flat.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    sampled = sampled.reshape(batch, 3, channels, n)  # (B, 3, C, N)
    return sampled.sum(dim=1).transpose(1, 2)  # (B, N, C)


class FourierEmbedding(nn.Module):
    """xi(x) = [x, sin(2^k pi x), cos(2^k pi x) for k < frequencies] (NeRF §5.1; Rodin Eq. 1)."""

    def __init__(self, in_dim: int, frequencies: int) -> None:
        super().__init__()
        if in_dim < 1 or frequencies < 0:
            raise ValueError(f"FourierEmbedding needs in_dim >= 1 and frequencies >= 0, got {in_dim}, {frequencies}")
        self.in_dim = in_dim
        self.frequencies = frequencies
        self.out_dim = in_dim * (1 + 2 * frequencies)
        scales = math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32)
        self.register_buffer("scales", scales, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"FourierEmbedding expects (..., {self.in_dim}), got {tuple(x.shape)}")
        if self.frequencies == 0:
            return x
        scaled = x[..., None, :] * self.scales[:, None]  # (..., F, D)
        scaled = scaled.flatten(-2)  # (..., F*D)
        return torch.cat([x, torch.sin(scaled), torch.cos(scaled)], dim=-1)  # (..., D*(1+2F))


@dataclass
class DecoderConfig(DictConfig):
    """Shape of the shared MLP decoder G_theta (paper Eq. 1, appendix B.2, Fig. 12)."""

    channels: int = 32
    """Feature channels C of the tri-plane it decodes (paper: 32)."""
    hidden: int = 128
    """Width of the hidden layers."""
    layers: int = 4
    """Fully connected layers in total, colour layer included (paper: 4); at least 2."""
    feature_frequencies: int = 4
    """Octaves of the Fourier embedding xi of the queried feature."""
    direction_frequencies: int = 4
    """Octaves of the Fourier embedding of the viewing direction."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> DecoderConfig:
        """Raise ``ValueError`` naming the first invalid field and its value; return self."""
        for name, low in (("channels", 1), ("hidden", 1), ("layers", 2), ("feature_frequencies", 0),
                          ("direction_frequencies", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"DecoderConfig.{name} must be an int >= {low}, got {value!r}")
        return self


class _TruncExp(torch.autograd.Function):
    """exp(x) with the input clamped at 15 in both passes; the gradient passes straight through the clamp."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = torch.exp(x.clamp(max=_EXP_CLAMP))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return grad * out


def trunc_exp(x: Tensor) -> Tensor:
    """Truncated exponential density activation (Instant-NGP): finite for any input."""
    return _TruncExp.apply(x)


class TriplaneDecoder(nn.Module):
    """G_theta of Eq. 1: (feature, direction) -> (density >= 0, colour in [0, 1])."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.feature_embedding = FourierEmbedding(cfg.channels, cfg.feature_frequencies)
        self.direction_embedding = FourierEmbedding(3, cfg.direction_frequencies)
        widths = [self.feature_embedding.out_dim] + [cfg.hidden] * (cfg.layers - 2)
        self.trunk = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.density_and_features = nn.Linear(widths[-1], 1 + cfg.hidden)
        self.colour = nn.Linear(cfg.hidden + self.direction_embedding.out_dim, 3)
        with torch.no_grad():
            self.density_and_features.bias[0] = DENSITY_BIAS_INIT

    def forward(self, features: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
        """features (..., C), unit directions (..., 3) -> sigma (...,) >= 0, rgb (..., 3) in [0, 1]."""
        if features.shape[-1] != self.cfg.channels:
            raise ValueError(f"decoder expects features (..., {self.cfg.channels}), got {tuple(features.shape)}")
        if directions.shape[:-1] != features.shape[:-1] or directions.shape[-1] != 3:
            raise ValueError(
                f"directions must be (..., 3) matching features {tuple(features.shape)}, got {tuple(directions.shape)}"
            )
        return self.decode(features, self.direction_logits(directions))

    def direction_logits(self, directions: Tensor) -> Tensor:
        """Unit directions (..., 3) -> their share (..., 3) of the colour layer's pre-activation (bias included).

        The colour layer reads ``[h, xi(d)]``; its output splits exactly into ``W_h h + (W_d xi(d) + b)``.
        The second term depends on the ray only, so a renderer computes it once per ray, not per sample.
        """
        weight = self.colour.weight[:, self.cfg.hidden:]  # (3, D_dir)
        return self.direction_embedding(directions) @ weight.T + self.colour.bias  # (..., 3)

    def decode(self, features: Tensor, direction_logits: Tensor) -> tuple[Tensor, Tensor]:
        """features (..., C) and :meth:`direction_logits` broadcastable to (..., 3) -> sigma (...,), rgb (..., 3)."""
        if features.shape[-1] != self.cfg.channels:
            raise ValueError(f"decoder expects features (..., {self.cfg.channels}), got {tuple(features.shape)}")
        h = self.feature_embedding(features)
        for layer in self.trunk:
            h = F.relu(layer(h))
        out = self.density_and_features(h)  # (..., 1 + hidden)
        sigma = trunc_exp(out[..., 0])
        h = F.relu(out[..., 1:])  # (..., hidden)
        rgb = torch.sigmoid(h @ self.colour.weight[:, :self.cfg.hidden].T + direction_logits)  # (..., 3)
        return sigma, rgb


def query_field(planes: Tensor, decoder: TriplaneDecoder, points: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
    """Density (B, N) and colour (B, N, 3) of points (B, N, 3) seen along unit directions (B, N, 3)."""
    if directions.shape != points.shape:
        raise ValueError(f"directions {tuple(directions.shape)} must match points {tuple(points.shape)}")
    return decoder(sample_triplane(planes, points), directions)


def freeze_decoder(decoder: TriplaneDecoder) -> TriplaneDecoder:
    """Put the decoder in eval mode with no parameter requiring gradients (phase B); returns it."""
    decoder.eval()
    decoder.requires_grad_(False)
    return decoder
