"""Volume compositing x_hat = R(c, sigma) (paper §3.1 and appendix B.2; NeRF, Mildenhall et al. 2020, Eq. 3).

For intervals i = 0..S-1 of a ray with edges t_i < t_{i+1}, length delta_i and midpoint m_i:

    alpha_i = 1 - exp(-sigma_i delta_i)
    T_i     = prod_{j<i} (1 - alpha_j) = exp(-sum_{j<i} sigma_j delta_j)   (exclusive product)
    w_i     = T_i alpha_i
    C       = sum_i w_i c_i + (1 - sum_i w_i) * background
    depth   = sum_i w_i m_i / max(sum_i w_i, eps)

T_i is computed as the exponential of an exclusive cumulative sum, which equals the exclusive
cumulative product and stays exact when some alpha_j round to 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_DEPTH_EPS = 1e-6


@dataclass
class RenderOutput:
    """What a batch of R rays with S intervals each renders to."""

    rgb: Tensor
    """(R, 3) composited colour, background included."""
    opacity: Tensor
    """(R,) accumulated opacity sum_i w_i in [0, 1]."""
    depth: Tensor
    """(R,) expected distance of the visible surface along the (unit) ray, normalised by the opacity."""
    weights: Tensor
    """(R, S) compositing weights w_i."""
    t_edges: Tensor
    """(R, S+1) interval edges along each ray."""
    sigma: Tensor
    """(R, S) density at each interval's midpoint."""


def background_colour(background: Tensor | float, rays: int, like: Tensor) -> Tensor:
    """The background as (R, 3) from a float grey level, an RGB (3,) or per-ray colours (R, 3)."""
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if bg.dim() == 0:
        return bg.expand(rays, 3)
    if bg.shape == (3,):
        return bg.expand(rays, 3)
    if bg.shape == (rays, 3):
        return bg
    raise ValueError(f"background must be a float, (3,) or ({rays}, 3), got shape {tuple(bg.shape)}")


def composite(sigma: Tensor, rgb: Tensor, t_edges: Tensor, background: Tensor | float) -> RenderOutput:
    """Alpha-composite densities (R, S) and colours (R, S, 3) over intervals t_edges (R, S+1)."""
    if sigma.dim() != 2 or rgb.shape != (*sigma.shape, 3) or t_edges.shape != (sigma.shape[0], sigma.shape[1] + 1):
        raise ValueError(
            "expected sigma (R, S), rgb (R, S, 3), t_edges (R, S+1); got "
            f"{tuple(sigma.shape)}, {tuple(rgb.shape)}, {tuple(t_edges.shape)}"
        )
    rays = sigma.shape[0]
    delta = (t_edges[:, 1:] - t_edges[:, :-1]).clamp(min=0.0)  # (R, S)
    tau = sigma * delta  # (R, S) optical depth of each interval
    alpha = 1.0 - torch.exp(-tau)
    before = torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1].cumsum(dim=-1)], dim=-1)  # (R, S)
    weights = torch.exp(-before) * alpha  # (R, S)
    opacity = weights.sum(dim=-1)  # (R,)
    colour = (weights[..., None] * rgb).sum(dim=1)  # (R, 3)
    colour = colour + (1.0 - opacity)[:, None] * background_colour(background, rays, colour)
    mids = 0.5 * (t_edges[:, 1:] + t_edges[:, :-1])  # (R, S)
    depth = (weights * mids).sum(dim=-1) / opacity.clamp(min=_DEPTH_EPS)
    return RenderOutput(rgb=colour, opacity=opacity, depth=depth, weights=weights, t_edges=t_edges, sigma=sigma)
