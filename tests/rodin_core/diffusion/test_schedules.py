"""Beta schedules (appendix B.1; Ho et al. 2020 §4; Nichol & Dhariwal 2021 Eq. 17)."""

import math

import numpy as np
import pytest

from rodin_core.diffusion.schedules import get_beta_schedule


def test_linear_1000_steps_has_the_ddpm_endpoints():
    betas = get_beta_schedule("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4, abs=1e-15)
    assert betas[-1] == pytest.approx(2e-2, abs=1e-15)
    assert np.allclose(np.diff(betas), (2e-2 - 1e-4) / 999)


def test_linear_is_rescaled_for_other_step_counts():
    betas = get_beta_schedule("linear", 100)
    assert betas.shape == (100,)
    assert betas[0] == pytest.approx(1e-3) and betas[-1] == pytest.approx(0.2)


def test_linear_with_too_few_steps_raises():
    with pytest.raises(ValueError, match="num_steps > 20.*got 20"):
        get_beta_schedule("linear", 20)


def test_cosine_alphas_cumprod_follow_the_closed_form():
    steps, s = 50, 0.008

    def f(t: float) -> float:
        return math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2

    betas = get_beta_schedule("cosine", steps)
    alphas_cumprod = np.cumprod(1.0 - betas)
    unclipped = betas < 0.999
    assert unclipped[:-1].all() and betas[-1] == 0.999  # only the last step is clipped at T = 50
    expected = np.array([f(t) / f(0) for t in range(1, steps + 1)])
    assert np.allclose(alphas_cumprod[:-1], expected[:-1], rtol=1e-12, atol=0)


def test_unknown_schedule_lists_the_known_ones():
    with pytest.raises(ValueError, match="'quadratic'.*linear, cosine"):
        get_beta_schedule("quadratic", 1000)
