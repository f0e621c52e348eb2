"""Noise schedules β_1..β_T of the forward process q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t I).

Paper appendix A (Eq. 5) and appendix B.1: Rodin trains every diffusion stage with the *linear*
schedule of Ho et al. 2020 ("Denoising Diffusion Probabilistic Models", §4) over 1,000 steps. The
*cosine* schedule of Nichol & Dhariwal 2021 ("Improved Denoising Diffusion Probabilistic Models",
Eq. 17) is offered beside it. Schedules are looked up by name; a published schedule is never
changed, only rescaled in the way improved-diffusion rescales the linear one for other step counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

SCHEDULES = ("linear", "cosine")
"""Names accepted by :func:`get_beta_schedule`."""

LINEAR_BETA_START = 1e-4
"""β_1 of the 1,000-step linear schedule (Ho et al. 2020, §4)."""
LINEAR_BETA_END = 2e-2
"""β_T of the 1,000-step linear schedule (Ho et al. 2020, §4)."""
COSINE_OFFSET = 0.008
"""The offset s of the cosine schedule (Nichol & Dhariwal 2021, Eq. 17)."""
MAX_BETA = 0.999
"""Upper clip of cosine betas, which keeps β_t < 1 near t = T (Nichol & Dhariwal 2021, §3.2)."""


def get_beta_schedule(name: str, num_steps: int) -> np.ndarray:
    """The betas (num_steps,) in float64 of the named schedule.

    ``"linear"``: evenly spaced from 1e-4 to 2e-2 for 1,000 steps; for another step count both
    endpoints are multiplied by 1000 / num_steps so the total noise stays that of the 1,000-step
    schedule (improved-diffusion's convention). ``"cosine"``: ᾱ_t = f(t) / f(0) with
    f(t) = cos²((t/T + s) / (1 + s) · π/2), s = 0.008, betas clipped at 0.999.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if name == "linear":
        scale = 1000.0 / num_steps
        if scale * LINEAR_BETA_END >= 1.0:
            raise ValueError(
                f"the linear schedule needs num_steps > {int(1000 * LINEAR_BETA_END)} "
                f"(its last beta, {LINEAR_BETA_END} * 1000 / num_steps, must stay below 1), got {num_steps}"
            )
        return np.linspace(scale * LINEAR_BETA_START, scale * LINEAR_BETA_END, num_steps, dtype=np.float64)
    if name == "cosine":
        return betas_for_alpha_bar(num_steps, cosine_alpha_bar)
    raise ValueError(f"unknown beta schedule {name!r}; known schedules: {', '.join(SCHEDULES)}")


def cosine_alpha_bar(time: float) -> float:
    """f(t) of Nichol & Dhariwal 2021, Eq. 17, at the fraction ``time`` = t / T in [0, 1] (unnormalised)."""
    return math.cos((time + COSINE_OFFSET) / (1.0 + COSINE_OFFSET) * math.pi / 2) ** 2


def betas_for_alpha_bar(
    num_steps: int, alpha_bar: Callable[[float], float], max_beta: float = MAX_BETA
) -> np.ndarray:
    """Betas (num_steps,) whose cumulative product follows ``alpha_bar`` on [0, 1].

    β_t = min(1 - alpha_bar(t / T) / alpha_bar((t - 1) / T), max_beta) for t = 1..T, so that
    ᾱ_t = alpha_bar(t / T) / alpha_bar(0) wherever no clipping happened.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    betas = [
        min(1.0 - alpha_bar((step + 1) / num_steps) / alpha_bar(step / num_steps), max_beta)
        for step in range(num_steps)
    ]
    return np.asarray(betas, dtype=np.float64)
