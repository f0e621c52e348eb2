"""Ancestral (appendix A, Eq. 7) and DDIM (Song et al. 2021, Eq. 12) samplers."""

import math

import numpy as np
import pytest
import torch

from rodin_core.diffusion.gaussian import GaussianDiffusion
from rodin_core.diffusion.respace import respace_diffusion, space_timesteps
from rodin_core.diffusion.samplers import ancestral_sample, ddim_sample
from rodin_core.diffusion.schedules import get_beta_schedule

BASE = GaussianDiffusion(get_beta_schedule("linear", 1000))
SPACED = respace_diffusion(BASE, space_timesteps(1000, 10))  # original steps 0, 111, ..., 999


def _oracle(x0: torch.Tensor):
    """A model returning the true noise of x_t around the fixed x0, at the original timestep it is shown."""

    def model(x, t):
        alpha_bar = torch.from_numpy(BASE.alphas_cumprod)[t].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()

    return model


def _linear_model(x, t):
    """A fixed deterministic stand-in network: ε̂ = 0.9 x + 0.1 sin(t / 100)."""
    return 0.9 * x + 0.1 * torch.sin(t.to(x.dtype) / 100).reshape(-1, 1, 1, 1)


X0 = torch.tensor([[[[0.5, -0.25], [0.75, -1.0]], [[0.0, 0.3], [-0.6, 0.9]]]], dtype=torch.float64)  # (1, 2, 2, 2)


@pytest.mark.parametrize(
    "sample",
    [ancestral_sample, lambda *a, **k: ddim_sample(*a, eta=0.0, **k), lambda *a, **k: ddim_sample(*a, eta=1.0, **k)],
    ids=["ancestral", "ddim-eta0", "ddim-eta1"],
)
def test_a_perfect_denoiser_recovers_x0(sample):
    x0 = X0.repeat(3, 1, 1, 1)  # (3, 2, 2, 2)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen: list[tuple[int, int]] = []

    def callback(step, t, x_t, pred_xstart):
        seen.append((step, t))
        assert torch.allclose(pred_xstart, x0, atol=1e-9)

    generator = torch.Generator().manual_seed(1)
    out = sample(SPACED, _oracle(x0), x0.shape, noise=noise, generator=generator, callback=callback)
    assert torch.allclose(out, x0, atol=1e-10)
    assert seen == list(enumerate([999, 888, 777, 666, 555, 444, 333, 222, 111, 0]))


@pytest.mark.parametrize(
    "sample",
    [ancestral_sample, lambda *a, **k: ddim_sample(*a, eta=1.0, **k)],
    ids=["ancestral", "ddim-eta1"],
)
def test_stochastic_chains_follow_the_forward_marginals(sample):
    """With the true noise, every x_t of the chain is distributed as q(x_t | x0) = N(sqrt(ᾱ_t) x0, 1 - ᾱ_t)."""
    x0 = torch.full((20_000, 1), 0.6, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    checked = []

    def callback(step, t, x_t, pred_xstart):
        alpha_bar = BASE.alphas_cumprod[t]
        assert x_t.mean().item() == pytest.approx(math.sqrt(alpha_bar) * 0.6, abs=0.03), f"mean at t={t}"
        assert x_t.var().item() == pytest.approx(1 - alpha_bar, rel=0.05), f"variance at t={t}"
        checked.append(t)

    sample(SPACED, _oracle(x0), x0.shape, noise=noise, generator=torch.Generator().manual_seed(3), callback=callback)
    assert len(checked) == 10


def test_ddim_eta0_is_deterministic_and_keeps_the_initial_noise_direction():
    x0 = X0
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    eps_T = (noise - math.sqrt(BASE.alphas_cumprod[999]) * x0) / math.sqrt(1 - BASE.alphas_cumprod[999])

    def callback(step, t, x_t, pred_xstart):  # x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε_T all along the chain
        alpha_bar = BASE.alphas_cumprod[t]
        assert torch.allclose(x_t, math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * eps_T, atol=1e-10)

    a = ddim_sample(SPACED, _linear_model, x0.shape, noise=noise, generator=torch.Generator().manual_seed(5))
    b = ddim_sample(SPACED, _linear_model, x0.shape, noise=noise, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    ddim_sample(SPACED, _oracle(x0), x0.shape, noise=noise, callback=callback)


@pytest.mark.parametrize(
    "sample",
    [ancestral_sample, lambda *a, **k: ddim_sample(*a, eta=0.0, **k), lambda *a, **k: ddim_sample(*a, eta=0.5, **k)],
    ids=["ancestral", "ddim-eta0", "ddim-eta0.5"],
)
def test_same_seed_same_sample_other_seed_other_sample(sample):
    def run(seed: int) -> torch.Tensor:
        return sample(SPACED, _linear_model, (2, 2, 2, 2), generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


def test_ddim_with_eta_one_is_the_ancestral_sampler():
    """σ_t(η = 1) is the posterior standard deviation and Eq. 12's mean is then the posterior mean, so with
    a fixed-small variance the two samplers take the same steps and consume the same draws."""
    noise = torch.randn(2, 2, 2, 2, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    generators = [torch.Generator().manual_seed(11) for _ in range(2)]
    ancestral = ancestral_sample(SPACED, _linear_model, noise.shape, noise=noise, generator=generators[0])
    ddim = ddim_sample(SPACED, _linear_model, noise.shape, eta=1.0, noise=noise, generator=generators[1])
    assert torch.allclose(ancestral, ddim, atol=1e-10)


def test_stochastic_steps_draw_from_the_generator():
    noise = torch.randn(1, 2, 2, 2, generator=torch.Generator().manual_seed(9))
    for sample in (ancestral_sample, lambda *a, **k: ddim_sample(*a, eta=1.0, **k)):
        a = sample(SPACED, _linear_model, noise.shape, noise=noise, generator=torch.Generator().manual_seed(1))
        b = sample(SPACED, _linear_model, noise.shape, noise=noise, generator=torch.Generator().manual_seed(2))
        assert not torch.allclose(a, b)


# Golden values: _linear_model, linear schedule respaced to 10 of 1,000 steps, shape (1, 2, 2, 2), float32,
# torch.Generator().manual_seed(0). Recorded from this implementation (torch 2.14 CPU) after the tests above had
# verified the samplers, and cross-checked once against a separate float64 numpy loop of Eq. 7 / Eq. 12 fed the
# same draws (agreement within 3e-6); they pin the exact sequence of draws and updates against regressions.
GOLDEN_ANCESTRAL = [-0.0756488, -0.0599757, -0.5391135, -0.1714093, 0.1010300, 0.7191255, 0.7019454, -0.0496940]
GOLDEN_DDIM = [1.4550198, -0.3525739, -2.2103584, 0.4966803, -1.1320960, -1.4415758, 0.3340105, 0.7623320]
GOLDEN_DDIM_ETA_HALF = [0.6170147, 0.0462959, -2.2353861, -0.3053815, -0.8665425, 0.0575340, 0.6769552, 0.2196659]


def test_ancestral_golden_values():
    out = ancestral_sample(SPACED, _linear_model, (1, 2, 2, 2), generator=torch.Generator().manual_seed(0))
    assert np.allclose(out.flatten().numpy(), GOLDEN_ANCESTRAL, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("eta", "golden"), [(0.0, GOLDEN_DDIM), (0.5, GOLDEN_DDIM_ETA_HALF)])
def test_ddim_golden_values(eta, golden):
    out = ddim_sample(SPACED, _linear_model, (1, 2, 2, 2), eta=eta, generator=torch.Generator().manual_seed(0))
    assert np.allclose(out.flatten().numpy(), golden, atol=1e-5, rtol=0)


def test_progress_bar_is_shown_on_request(capsys):
    ddim_sample(SPACED, _linear_model, (1, 2, 2, 2), progress=True)
    assert "sampling" in capsys.readouterr().err
    ddim_sample(SPACED, _linear_model, (1, 2, 2, 2), progress=False)
    assert capsys.readouterr().err == ""


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"noise shape \(1, 2\) differs from the requested shape \(2, 2\)"):
        ancestral_sample(SPACED, _linear_model, (2, 2), noise=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="eta must be a finite number >= 0, got -0.5"):
        ddim_sample(SPACED, _linear_model, (1, 2), eta=-0.5)
