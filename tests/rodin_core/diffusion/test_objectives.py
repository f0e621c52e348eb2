"""Prediction targets and loss weightings: v prediction (Salimans & Ho 2022) and min-SNR-γ (Hang et al. 2023)."""

import numpy as np
import pytest
import torch

from rodin_core.diffusion import DiffusionConfig, build_diffusion
from rodin_core.diffusion.gaussian import GaussianDiffusion, LossWeighting, ModelMeanType
from rodin_core.diffusion.schedules import get_beta_schedule

# alphas_cumprod 0.9, 0.72, 0.504: SNR 9, 2.5714..., 1.01612...
BETAS = np.array([0.1, 0.2, 0.3])
SNR = np.array([0.9 / 0.1, 0.72 / 0.28, 0.504 / 0.496])


def _t(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def test_v_round_trips_through_x0_and_eps():
    diffusion = GaussianDiffusion(get_beta_schedule("cosine", 100), mean_type=ModelMeanType.VELOCITY)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 2, 3, 9, generator=generator, dtype=torch.float64)
    eps = torch.randn(4, 2, 3, 9, generator=generator, dtype=torch.float64)
    t = _t(0, 10, 50, 99)
    x_t = diffusion.q_sample(x0, t, eps)
    v = diffusion.predict_v(x0, t, eps)
    torch.testing.assert_close(diffusion.predict_xstart_from_v(x_t, t, v), x0, atol=1e-9, rtol=0)
    # v = sqrt(ᾱ) ε − sqrt(1 − ᾱ) x0 at t = 10, written out
    a = diffusion.alphas_cumprod[10]
    torch.testing.assert_close(v[1], np.sqrt(a) * eps[1] - np.sqrt(1 - a) * x0[1])


def test_a_model_returning_the_true_v_recovers_x0_and_its_loss_is_zero():
    diffusion = GaussianDiffusion(BETAS, mean_type=ModelMeanType.VELOCITY)
    x0 = torch.tensor([[[[0.5, -0.25]]], [[[1.0, 0.0]]]], dtype=torch.float64)  # (2, 1, 1, 2)
    noise = torch.tensor([[[[1.0, 2.0]]], [[[-3.0, 0.5]]]], dtype=torch.float64)
    t = _t(1, 2)
    oracle = lambda x, model_t: diffusion.predict_v(x0, t, noise)
    terms = diffusion.training_losses(oracle, x0, t, noise=noise)
    assert torch.equal(terms["mse"], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(terms["pred_xstart"], x0)
    step = diffusion.p_mean_variance(oracle, diffusion.q_sample(x0, t, noise), t)
    torch.testing.assert_close(step["pred_xstart"], x0)
    torch.testing.assert_close(step["eps"], noise)


@pytest.mark.parametrize(("mean_type", "expected"), [
    (ModelMeanType.EPSILON, np.minimum(SNR, 2.0) / SNR),
    (ModelMeanType.START_X, np.minimum(SNR, 2.0)),
    (ModelMeanType.VELOCITY, np.minimum(SNR, 2.0) / (SNR + 1.0)),
])
def test_min_snr_weights_match_the_closed_form(mean_type, expected):
    diffusion = GaussianDiffusion(BETAS, mean_type=mean_type, loss_weighting="min_snr", min_snr_gamma=2.0)
    like = torch.zeros(3, 1)
    torch.testing.assert_close(diffusion.loss_weights(_t(0, 1, 2), like), torch.tensor(expected, dtype=torch.float32))
    uniform = GaussianDiffusion(BETAS, mean_type=mean_type)
    assert torch.equal(uniform.loss_weights(_t(0, 1, 2), like), torch.ones(3))


@pytest.mark.parametrize("mean_type", ["eps", "x0", "v"])
def test_min_snr_loss_is_the_same_x0_error_whatever_the_network_predicts(mean_type):
    """Hang et al. 2023, Eq. 7: with min-SNR weighting every parameterisation minimises min(SNR_t, γ)·‖x̂0 − x0‖²."""
    diffusion = build_diffusion(DiffusionConfig(mean_type=mean_type, var_type="fixed_small", loss="simple",
                                                schedule="cosine", steps=200, loss_weighting="min_snr",
                                                min_snr_gamma=5.0))
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 2, 4, 12, generator=generator, dtype=torch.float64)
    noise = torch.randn(5, 2, 4, 12, generator=generator, dtype=torch.float64)
    guess = torch.randn(5, 2, 4, 12, generator=generator, dtype=torch.float64)
    t = _t(0, 20, 90, 150, 199)
    terms = diffusion.training_losses(lambda x, model_t: guess, x0, t, noise=noise)
    x0_error = ((terms["pred_xstart"] - x0) ** 2).mean(dim=(1, 2, 3))
    gamma_snr = torch.from_numpy(np.minimum(diffusion.snr[t.numpy()], 5.0))
    torch.testing.assert_close(terms["mse"], gamma_snr * x0_error)


def test_the_weighting_survives_respacing_and_config_round_trips():
    cfg = DiffusionConfig(mean_type="v", var_type="fixed_small", loss="simple", loss_weighting="min_snr",
                          min_snr_gamma=3.0, sampling_steps="10")
    spaced = build_diffusion(cfg, cfg.sampling_steps)
    assert (spaced.mean_type, spaced.loss_weighting, spaced.min_snr_gamma) == (
        ModelMeanType.VELOCITY, LossWeighting.MIN_SNR, 3.0)
    assert DiffusionConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(("field", "value", "message"), [
    ("loss_weighting", "snr", r"diffusion.loss_weighting: 'snr'; choices: 'uniform', 'min_snr'"),
    ("min_snr_gamma", 0.0, r"diffusion.min_snr_gamma: 0.0; expected a finite number > 0"),
    ("min_snr_gamma", float("nan"), r"diffusion.min_snr_gamma: nan"),
])
def test_bad_weighting_values_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        DiffusionConfig(**{field: value}).validate()
