"""Where along each ray the field is queried (volume rendering of paper §3.1 / appendix B.2).

Samples are represented by their interval **edges** t_edges (R, S+1), sorted along each ray; the
field is queried at the **midpoint** of each interval and interval i has length
delta_i = t_{i+1} - t_i (the representation of Mip-NeRF 360, Barron et al. 2022, §2, which the
distortion loss of :mod:`rodin_core.rendering.regularisers` also needs).

* :func:`stratified_samples` splits [near, far] into n equal bins (NeRF, Mildenhall et al. 2020,
  Eq. 2). With ``perturb`` the interior edges are jittered uniformly within half a bin either side,
  so every interval stays non-empty on average, the edges stay sorted and [near, far] stays covered
  exactly (the end edges stay at near and far).
* :func:`importance_samples` draws n new edges from the piecewise-constant pdf of the coarse
  weights by inverse-transform sampling (NeRF §5.2, hierarchical volume sampling) and merges them
  with the coarse edges; stratified uniforms in [0, 1) when ``perturb``, bin centres otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

_WEIGHT_PADDING = 1e-5
"""Added to every coarse weight (NeRF's 1e-5) so empty rays fall back to uniform sampling."""


def _uniform(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniforms in [0, 1) with ``like``'s dtype and device; the generator must live on that device."""
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def stratified_samples(
    near: Tensor, far: Tensor, n: int, generator: torch.Generator | None = None, perturb: bool = True
) -> Tensor:
    """Edges (R, n+1) of n stratified intervals between near (R,) and far (R,)."""
    if n < 1:
        raise ValueError(f"need at least one sample per ray, got n={n}")
    if near.dim() != 1 or far.shape != near.shape:
        raise ValueError(f"near and far must both be (R,), got {tuple(near.shape)} and {tuple(far.shape)}")
    steps = torch.linspace(0.0, 1.0, n + 1, device=near.device, dtype=near.dtype)  # (n+1,)
    if perturb and n > 1:
        jitter = (_uniform((near.shape[0], n - 1), near, generator) - 0.5) / n  # (R, n-1) within half a bin
        interior = steps[1:-1] + jitter  # (R, n-1)
        ends = steps[[0, -1]].expand(near.shape[0], 2)  # (R, 2)
        steps = torch.cat([ends[:, :1], interior, ends[:, 1:]], dim=-1)  # (R, n+1)
    return near[:, None] + (far - near)[:, None] * steps  # (R, n+1)


def importance_samples(
    t_edges: Tensor, weights: Tensor, n: int, generator: torch.Generator | None = None, perturb: bool = True
) -> Tensor:
    """Coarse edges (R, S+1) merged with n edges drawn from the weights (R, S): sorted (R, S+n+1).

    The result carries no gradient (sample positions are not optimised).
    """
    if t_edges.dim() != 2 or weights.shape != (t_edges.shape[0], t_edges.shape[1] - 1):
        raise ValueError(
            f"t_edges must be (R, S+1) and weights (R, S), got {tuple(t_edges.shape)} and {tuple(weights.shape)}"
        )
    if n < 0:
        raise ValueError(f"number of importance samples must be >= 0, got {n}")
    t_edges = t_edges.detach()
    if n == 0:
        return t_edges
    rays, bins = weights.shape
    with torch.no_grad():
        pdf = weights.detach().clamp(min=0.0) + _WEIGHT_PADDING  # (R, S)
        pdf = pdf / pdf.sum(dim=-1, keepdim=True)
        cdf = torch.cat([torch.zeros_like(pdf[:, :1]), pdf.cumsum(dim=-1)], dim=-1).clamp(max=1.0)  # (R, S+1)
        offsets = _uniform((rays, n), t_edges, generator) if perturb else torch.full_like(t_edges[:, :1], 0.5)
        u = (torch.arange(n, device=t_edges.device, dtype=t_edges.dtype) + offsets) / n  # (R, n) sorted in [0, 1)
        above = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True).clamp(1, bins)  # (R, n)
        below = above - 1
        cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)  # (R, n) each
        t_lo, t_hi = t_edges.gather(1, below), t_edges.gather(1, above)  # (R, n) each
        frac = ((u - cdf_lo) / (cdf_hi - cdf_lo).clamp(min=1e-12)).clamp(0.0, 1.0)
        fine = t_lo + frac * (t_hi - t_lo)  # (R, n)
        merged, _ = torch.sort(torch.cat([t_edges, fine], dim=-1), dim=-1)  # (R, S+n+1)
    return merged
