"""KL and decoder-likelihood terms of L_vlb (Ho et al. 2020 Eq. 13; Nichol & Dhariwal 2021 §3.1)."""

import math

import pytest
import torch

from rodin_core.diffusion.losses import (
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
)


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def test_kl_of_identical_gaussians_is_zero():
    mean = torch.tensor([-1.0, 0.0, 2.5])
    logvar = torch.tensor([-3.0, 0.0, 1.2])
    assert torch.allclose(normal_kl(mean, logvar, mean, logvar), torch.zeros(3), atol=1e-7)


def test_kl_matches_the_closed_form():
    # KL(N(1, 2) || N(0, 0.5)) = log(s2 / s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2
    s1, s2 = math.sqrt(2.0), math.sqrt(0.5)
    expected = math.log(s2 / s1) + (s1**2 + 1.0) / (2 * s2**2) - 0.5  # = 3 - 0.5 - log 2 = 1.80685...
    got = normal_kl(torch.tensor(1.0, dtype=torch.float64), math.log(2.0), 0.0, math.log(0.5))
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_kl_needs_a_tensor():
    with pytest.raises(TypeError, match="at least one tensor"):
        normal_kl(0.0, 0.0, 1.0, 0.0)


def test_approximate_cdf_is_within_its_stated_error():
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64)
    exact = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    assert (approx_standard_normal_cdf(x) - exact).abs().max() < 2e-4


def test_discretized_likelihood_of_a_central_bin():
    # P(x = 0) under N(0, 0.5^2): the bin [-1/255, 1/255] -> Phi(2/255) - Phi(-2/255)
    expected = math.log(_phi((1 / 255) / 0.5) - _phi(-(1 / 255) / 0.5))
    zero = torch.zeros(1, dtype=torch.float64)
    got = discretized_gaussian_log_likelihood(zero, zero, torch.full_like(zero, math.log(0.5)))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_discretized_likelihood_edge_bins_extend_to_infinity():
    mean, scale = 0.2, 0.5
    x = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    got = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, math.log(scale)))
    p_low = _phi((-1 + 1 / 255 - mean) / scale)  # (-inf, -1 + 1/255]
    p_high = 1 - _phi((1 - 1 / 255 - mean) / scale)  # [1 - 1/255, inf)
    # the tanh CDF is within 2e-4 of Phi, so log P is within 2e-4 / P
    assert got[0].item() == pytest.approx(math.log(p_low), abs=2e-4 / p_low)
    assert got[1].item() == pytest.approx(math.log(p_high), abs=2e-4 / p_high)


def test_discretized_probabilities_of_all_levels_sum_to_one():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)  # the 256 values of 8-bit data
    for mean, log_scale in ((0.0, math.log(0.3)), (0.7, math.log(0.05)), (-0.95, 0.0)):
        log_p = discretized_gaussian_log_likelihood(
            levels, torch.full_like(levels, mean), torch.full_like(levels, log_scale)
        )
        assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_discretized_likelihood_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(2,\), \(3,\), \(2,\)"):
        discretized_gaussian_log_likelihood(torch.zeros(2), torch.zeros(3), torch.zeros(2))


def test_mean_flat_averages_all_but_the_batch_dimension():
    x = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(mean_flat(x), torch.tensor([5.5, 17.5]))
