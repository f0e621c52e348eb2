"""Fitting regularisers against "floating" artifacts (paper §3.1, appendix B.2).

* Sparsity L_sparse: the l1 magnitude of the predicted density, :func:`density_l1`.
* Smoothness L_smooth: total variation of the plane features, :func:`plane_tv` (mean of the
  **squared** differences between vertically and between horizontally neighbouring pixels, summed
  over the two directions; averaged over batch, planes and channels so it does not grow with C or H).
* Compactness L_dist: the distortion loss of Mip-NeRF 360 (Barron et al. 2022, Eq. 15)

      L_dist(s, w) = sum_{i,j} w_i w_j |(s_i + s_{i+1})/2 - (s_j + s_{j+1})/2|
                     + 1/3 sum_i w_i^2 (s_{i+1} - s_i),

  on edges **normalised to [0, 1] per ray** (s = (t - t_0) / (t_S - t_0), the s-space of the
  paper), so rays of different lengths through the cube weigh the same. The double sum is computed
  in O(S) with cumulative sums over the sorted midpoints m (as in DVGO v2, Sun et al. 2022):
  sum_{i,j} w_i w_j |m_i - m_j| = 2 sum_i w_i (m_i W_{<i} - (wm)_{<i}).
"""

from __future__ import annotations

import torch
from torch import Tensor

_MIN_RAY_LENGTH = 1e-9


def density_l1(sigma: Tensor) -> Tensor:
    """Mean absolute density over all samples: a scalar."""
    return sigma.abs().mean()


def plane_tv(planes: Tensor) -> Tensor:
    """Mean squared difference of neighbouring plane pixels, rows plus columns: a scalar."""
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be (B, 3, C, H, W), got shape {tuple(planes.shape)}")
    d_rows = planes[..., 1:, :] - planes[..., :-1, :]  # (B, 3, C, H-1, W)
    d_cols = planes[..., :, 1:] - planes[..., :, :-1]  # (B, 3, C, H, W-1)
    return d_rows.square().mean() + d_cols.square().mean()


def distortion_loss(weights: Tensor, t_edges: Tensor) -> Tensor:
    """Mip-NeRF 360 distortion loss (Eq. 15) per ray, (R,), from weights (R, S) and edges (R, S+1)."""
    if weights.dim() != 2 or t_edges.shape != (weights.shape[0], weights.shape[1] + 1):
        raise ValueError(
            f"weights must be (R, S) and t_edges (R, S+1), got {tuple(weights.shape)} and {tuple(t_edges.shape)}"
        )
    length = (t_edges[:, -1:] - t_edges[:, :1]).clamp(min=_MIN_RAY_LENGTH)  # (R, 1)
    s = (t_edges - t_edges[:, :1]) / length  # (R, S+1) in [0, 1]
    mids = 0.5 * (s[:, 1:] + s[:, :-1])  # (R, S)
    widths = s[:, 1:] - s[:, :-1]  # (R, S)
    wm = weights * mids
    w_before = torch.cumsum(weights, dim=-1) - weights  # (R, S) sum_{j<i} w_j
    wm_before = torch.cumsum(wm, dim=-1) - wm  # (R, S) sum_{j<i} w_j m_j
    pairwise = 2.0 * (weights * (mids * w_before - wm_before)).sum(dim=-1)
    own = (weights.square() * widths).sum(dim=-1) / 3.0
    return pairwise + own
