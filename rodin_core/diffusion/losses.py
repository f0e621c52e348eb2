"""Closed-form terms of the variational lower bound (paper §3.2, L_VLB "as suggested in [41]").

The hybrid objective of Nichol & Dhariwal 2021 ("Improved Denoising Diffusion Probabilistic
Models", §3.1, Eq. 16) adds λ·L_vlb to the simple loss. L_vlb is a sum of KL divergences between
Gaussians (:func:`normal_kl`, Eq. 5-6 there) and, at t = 0, the negative log-likelihood of a
discretised Gaussian decoder (:func:`discretized_gaussian_log_likelihood`, Ho et al. 2020, "Denoising
Diffusion Probabilistic Models", Eq. 13), which treats data in [-1, 1] as 256 levels (255 bins).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BIN_HALF_WIDTH = 1.0 / 255.0
"""Half the width of one of the 255 bins that split [-1, 1] into 256 levels (Ho et al. 2020, Eq. 13)."""
EDGE = 0.999
"""Values beyond ±EDGE belong to the first/last level, whose bin extends to ∓infinity."""
LOG_FLOOR = 1e-12
"""Probabilities are clamped to at least this before the logarithm."""


def normal_kl(
    mean1: Tensor | float, logvar1: Tensor | float, mean2: Tensor | float, logvar2: Tensor | float
) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) element-wise, in nats (broadcasts).

    0.5 · (logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)² · exp(-logvar2) - 1).
    """
    like = next((value for value in (mean1, logvar1, mean2, logvar2) if isinstance(value, Tensor)), None)
    if like is None:
        raise TypeError("normal_kl needs at least one tensor argument; got only Python numbers")
    m1, lv1, m2, lv2 = (
        torch.as_tensor(value, dtype=like.dtype, device=like.device) for value in (mean1, logvar1, mean2, logvar2)
    )
    return 0.5 * (lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2) - 1.0)


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """Φ(x) by the tanh approximation 0.5 · (1 + tanh(sqrt(2/π) · (x + 0.044715 x³))) (abs. error < 2e-4).

    The approximation Ho et al. 2020 use in their decoder likelihood; it is cheap and smooth in x.
    """
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(x) element-wise under N(means, exp(log_scales)²) discretised to 256 levels of [-1, 1].

    Each level owns the bin [x - 1/255, x + 1/255]; the first level (x < -0.999) owns (-inf, x + 1/255]
    and the last (x > 0.999) owns [x - 1/255, inf), so the 256 probabilities sum to one. ``x`` is
    data in [-1, 1]; all three arguments have the same shape.
    """
    if not x.shape == means.shape == log_scales.shape:
        raise ValueError(
            "x, means and log_scales must share one shape, got "
            f"{tuple(x.shape)}, {tuple(means.shape)}, {tuple(log_scales.shape)}"
        )
    inv_scale = torch.exp(-log_scales)
    centred = x - means
    cdf_upper = approx_standard_normal_cdf(inv_scale * (centred + BIN_HALF_WIDTH))
    cdf_lower = approx_standard_normal_cdf(inv_scale * (centred - BIN_HALF_WIDTH))
    log_below_upper = torch.log(cdf_upper.clamp(min=LOG_FLOOR))
    log_above_lower = torch.log((1.0 - cdf_lower).clamp(min=LOG_FLOOR))
    log_in_bin = torch.log((cdf_upper - cdf_lower).clamp(min=LOG_FLOOR))
    return torch.where(x < -EDGE, log_below_upper, torch.where(x > EDGE, log_above_lower, log_in_bin))


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the first: (B, ...) -> (B,)."""
    return x.mean(dim=tuple(range(1, x.dim())))
