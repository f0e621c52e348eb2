"""Latent interpolation between two avatars (paper §4.2, Fig. 6).

Fig. 6 morphs one generated avatar into another by interpolating their latents z and generating a
tri-plane from each intermediate z with the same noise. The latents lie near a sphere (the encoders
scale z to norm sqrt(D), :mod:`rodin_core.encoders`), so the path follows the great circle between
them: spherical linear interpolation (Shoemake, "Animating rotation with quaternion curves",
SIGGRAPH 1985)

    slerp(a, b; t) = sin((1 − t) Ω) / sin Ω · a + sin(t Ω) / sin Ω · b,   cos Ω = a·b / (|a| |b|),

which reduces to the straight line (1 − t) a + t b when a and b are (anti)parallel (sin Ω ≈ 0) or
one of them is zero. The weights are exactly (1, 0) at t = 0 and (0, 1) at t = 1, so the endpoints
are reproduced bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

PARALLEL_EPS = 1e-6
"""Below this sin Ω the two latents count as (anti)parallel and are interpolated linearly."""


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation of latents a, b (D,) at ``t`` (0 -> a, 1 -> b) -> (D,) in a's dtype (Fig. 6)."""
    if a.dim() != 1 or a.shape != b.shape:
        raise ValueError(f"slerp takes two latents of the same shape (D,), got {tuple(a.shape)} and {tuple(b.shape)}")
    t = float(t)
    if not math.isfinite(t):
        raise ValueError(f"the interpolation weight t must be finite, got {t!r}")
    a64, b64 = a.detach().to(torch.float64), b.detach().to(torch.float64)  # (D,), (D,)
    norms = float(a64.norm()) * float(b64.norm())
    cos = float(a64 @ b64) / norms if norms > 0 else 1.0
    omega = math.acos(min(1.0, max(-1.0, cos)))
    if math.sin(omega) < PARALLEL_EPS:
        weight_a, weight_b = 1.0 - t, t
    else:
        weight_a, weight_b = math.sin((1.0 - t) * omega) / math.sin(omega), math.sin(t * omega) / math.sin(omega)
    return (weight_a * a64 + weight_b * b64).to(a.dtype)  # (D,)
