"""The Gaussian process (appendix A, Eq. 5-7): forward moments, posterior, reverse step, training losses."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from rodin_core.diffusion.gaussian import (
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
)
from rodin_core.diffusion.schedules import get_beta_schedule

# A 3-step process small enough to write every quantity out by hand:
# alphas 0.9, 0.8, 0.7; alphas_cumprod 0.9, 0.72, 0.504.
BETAS = np.array([0.1, 0.2, 0.3])


def _t(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def _full(value: float, shape: tuple[int, ...] = (1, 1, 2, 2)) -> torch.Tensor:
    return torch.full(shape, value, dtype=torch.float64)


def test_q_mean_variance_closed_form():
    diffusion = GaussianDiffusion(BETAS)
    x0 = _full(0.5)
    mean, variance, log_variance = diffusion.q_mean_variance(x0, _t(2))
    assert torch.allclose(mean, _full(math.sqrt(0.504) * 0.5), rtol=1e-12)
    assert torch.allclose(variance, _full(0.496), rtol=1e-12)
    assert torch.allclose(log_variance, _full(math.log(0.496)), rtol=1e-12)


def test_q_sample_has_the_forward_moments():
    diffusion = GaussianDiffusion(get_beta_schedule("linear", 1000))
    alpha_bar = float(np.prod(1.0 - np.linspace(1e-4, 2e-2, 1000)[:401]))  # ᾱ at index 400
    x0 = torch.tensor([0.8, -0.5], dtype=torch.float64).repeat(100_000, 1)  # (N, 2)
    torch.manual_seed(0)
    x_t = diffusion.q_sample(x0, torch.full((x0.shape[0],), 400, dtype=torch.long))
    assert torch.allclose(x_t.mean(0), math.sqrt(alpha_bar) * x0[0], atol=0.01)
    assert torch.allclose(x_t.var(0), torch.full((2,), 1.0 - alpha_bar, dtype=torch.float64), atol=0.01)


def test_posterior_matches_a_hand_computation():
    diffusion = GaussianDiffusion(BETAS)
    x0, x_t = 0.5, -0.2
    # t = 1: beta 0.2, ᾱ_{t-1} = 0.9, ᾱ_t = 0.72, alpha_t = 0.8
    coef1 = 0.2 * math.sqrt(0.9) / (1 - 0.72)
    coef2 = (1 - 0.9) * math.sqrt(0.8) / (1 - 0.72)
    variance = 0.2 * (1 - 0.9) / (1 - 0.72)  # 0.0714285...
    mean, var, log_var = diffusion.q_posterior_mean_variance(_full(x0), _full(x_t), _t(1))
    assert torch.allclose(mean, _full(coef1 * x0 + coef2 * x_t), rtol=1e-12)
    assert torch.allclose(var, _full(variance), rtol=1e-12)
    assert torch.allclose(log_var, _full(math.log(variance)), rtol=1e-12)
    # t = 0: the posterior is a point mass at x0; its log-variance is clipped to that of t = 1
    mean, var, log_var = diffusion.q_posterior_mean_variance(_full(x0), _full(x_t), _t(0))
    assert torch.allclose(mean, _full(x0), rtol=1e-12)
    assert torch.equal(var, _full(0.0))
    assert torch.allclose(log_var, _full(math.log(variance)), rtol=1e-12)


def test_eps_and_xstart_predictions_invert_q_sample():
    diffusion = GaussianDiffusion(get_beta_schedule("cosine", 100))
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 2, 3, 9, generator=generator, dtype=torch.float64)
    eps = torch.randn(4, 2, 3, 9, generator=generator, dtype=torch.float64)
    t = _t(0, 10, 50, 99)
    x_t = diffusion.q_sample(x0, t, eps)
    assert torch.allclose(diffusion.predict_xstart_from_eps(x_t, t, eps), x0, atol=1e-9)
    assert torch.allclose(diffusion.predict_eps_from_xstart(x_t, t, x0), eps, atol=1e-9)


def test_learned_range_interpolates_between_the_two_fixed_variances():
    diffusion = GaussianDiffusion(BETAS, var_type=ModelVarType.LEARNED_RANGE, loss_type=LossType.HYBRID)
    x_t = _full(0.3)
    posterior_log_var = math.log(0.2 * 0.1 / 0.28)
    middle = 0.5 * (math.log(0.2) + posterior_log_var)
    for v, expected in ((1.0, math.log(0.2)), (-1.0, posterior_log_var), (0.0, middle)):

        def model(x, t, v=v):
            return torch.cat([torch.zeros_like(x), torch.full_like(x, v)], dim=1)

        out = diffusion.p_mean_variance(model, x_t, _t(1))
        assert torch.allclose(out["log_variance"], _full(expected), rtol=1e-12)
        assert torch.allclose(out["variance"], _full(math.exp(expected)), rtol=1e-12)


@pytest.mark.parametrize(
    ("var_type", "expected"),
    [
        (ModelVarType.FIXED_SMALL, [0.2 * 0.1 / 0.28, 0.2 * 0.1 / 0.28, 0.3 * 0.28 / 0.496]),  # β̃_1 at t = 0
        (ModelVarType.FIXED_LARGE, [0.2 * 0.1 / 0.28, 0.2, 0.3]),
    ],
)
def test_fixed_variances(var_type, expected):
    diffusion = GaussianDiffusion(BETAS, var_type=var_type)
    x_t = _full(0.1, (3, 1, 2, 2))
    out = diffusion.p_mean_variance(lambda x, t: torch.zeros_like(x), x_t, _t(0, 1, 2))
    assert torch.allclose(out["variance"][:, 0, 0, 0], torch.tensor(expected, dtype=torch.float64), rtol=1e-12)


def test_reverse_step_of_an_x0_model_with_clipping():
    diffusion = GaussianDiffusion(BETAS, mean_type=ModelMeanType.START_X)
    x_t = torch.tensor([[[[0.4, -3.0], [2.5, 0.9]]]], dtype=torch.float64)  # (1, 1, 2, 2)
    prediction = torch.tensor([[[[0.5, -1.7], [1.4, 0.2]]]], dtype=torch.float64)
    t = _t(2)
    raw = diffusion.p_mean_variance(lambda x, t: prediction, x_t, t)
    assert torch.equal(raw["pred_xstart"], prediction)
    assert torch.allclose(raw["eps"], diffusion.predict_eps_from_xstart(x_t, t, prediction))
    clipped = diffusion.p_mean_variance(lambda x, t: prediction, x_t, t, clip_denoised=True)
    assert torch.equal(clipped["pred_xstart"], prediction.clamp(-1, 1))
    assert torch.allclose(clipped["mean"], diffusion.q_posterior_mean_variance(prediction.clamp(-1, 1), x_t, t)[0])
    bounded = diffusion.p_mean_variance(lambda x, t: prediction, x_t, t, clip_denoised=1.5)
    assert torch.equal(bounded["pred_xstart"], prediction.clamp(-1.5, 1.5))
    with pytest.raises(ValueError, match="positive bound, got -1"):
        diffusion.p_mean_variance(lambda x, t: prediction, x_t, t, clip_denoised=-1)


def test_eps_model_output_is_passed_through_unclipped():
    diffusion = GaussianDiffusion(BETAS)
    x_t = _full(0.7)
    eps = _full(0.25)
    out = diffusion.p_mean_variance(lambda x, t: eps, x_t, _t(1))
    assert out["eps"] is eps
    assert torch.allclose(out["pred_xstart"], (x_t - math.sqrt(1 - 0.72) * eps) / math.sqrt(0.72))


def test_wrong_model_output_shape_raises():
    diffusion = GaussianDiffusion(BETAS, var_type=ModelVarType.LEARNED_RANGE, loss_type=LossType.HYBRID)
    with pytest.raises(ValueError, match=r"shape \(1, 1, 2, 2\), expected \(1, 2, 2, 2\).*learned_range"):
        diffusion.p_mean_variance(lambda x, t: x, _full(0.0), _t(1))


def test_invalid_configurations_and_timesteps_raise():
    with pytest.raises(ValueError, match="learned_range with hybrid"):
        GaussianDiffusion(BETAS, var_type=ModelVarType.LEARNED_RANGE)
    with pytest.raises(ValueError, match="learned_range with hybrid"):
        GaussianDiffusion(BETAS, loss_type=LossType.HYBRID)
    with pytest.raises(ValueError, match=r"\(0, 1\).*max 1\.0"):
        GaussianDiffusion(np.array([0.1, 1.0]))
    diffusion = GaussianDiffusion(BETAS)
    with pytest.raises(ValueError, match=r"\[0, 3\), got min 0, max 3"):
        diffusion.q_sample(_full(0.0, (2, 1)), _t(0, 3))
    with pytest.raises(ValueError, match="integer tensor"):
        diffusion.q_sample(_full(0.0, (1, 1)), torch.tensor([1.0]))


def test_simple_loss_targets_the_noise_or_the_clean_sample():
    x0 = torch.tensor([[[[0.5, -0.25]]], [[[1.0, 0.0]]]], dtype=torch.float64)  # (2, 1, 1, 2)
    noise = torch.tensor([[[[1.0, 2.0]]], [[[-3.0, 0.5]]]], dtype=torch.float64)
    zero = lambda x, t: torch.zeros_like(x)
    eps_terms = GaussianDiffusion(BETAS).training_losses(zero, x0, _t(1, 2), noise=noise)
    assert torch.allclose(eps_terms["mse"], torch.tensor([2.5, 4.625], dtype=torch.float64))
    assert torch.equal(eps_terms["loss"], eps_terms["mse"]) and "vb" not in eps_terms
    x0_diffusion = GaussianDiffusion(BETAS, mean_type=ModelMeanType.START_X)
    x0_terms = x0_diffusion.training_losses(zero, x0, _t(1, 2), noise=noise)
    assert torch.allclose(x0_terms["mse"], torch.tensor([0.15625, 0.5], dtype=torch.float64))
    assert torch.equal(x0_terms["pred_xstart"], torch.zeros_like(x0))


def test_hybrid_vb_term_of_a_perfect_mean_matches_the_closed_form():
    """An x0 model that returns the true x0 and v = 1 (variance β_t): at t = 1 L_t is the KL between two
    Gaussians with the same mean, at t = 0 the decoder NLL of the bin of x0 under N(x0, β_0)."""
    diffusion = GaussianDiffusion(
        BETAS, mean_type=ModelMeanType.START_X, var_type=ModelVarType.LEARNED_RANGE, loss_type=LossType.HYBRID
    )
    x0 = torch.full((2, 1, 2, 2), 0.2, dtype=torch.float64)

    def perfect(x, t):
        return torch.cat([x0, torch.ones_like(x)], dim=1)

    terms = diffusion.training_losses(perfect, x0, _t(1, 0))
    weight = 0.001 * 3  # λ · T
    posterior_var, beta = 0.2 * 0.1 / 0.28, 0.2
    kl_bits = 0.5 * (math.log(beta / posterior_var) + posterior_var / beta - 1) / math.log(2)
    scale = math.sqrt(0.1)
    nll_bits = -math.log(
        0.5 * (math.erf((1 / 255) / scale / math.sqrt(2)) - math.erf(-(1 / 255) / scale / math.sqrt(2)))
    ) / math.log(2)
    assert terms["vb"][0].item() == pytest.approx(weight * kl_bits, rel=1e-9)
    assert terms["vb"][1].item() == pytest.approx(weight * nll_bits, rel=1e-5)
    assert torch.equal(terms["mse"], torch.zeros(2, dtype=torch.float64))
    assert torch.equal(terms["loss"], terms["mse"] + terms["vb"])


class LearnedSigmaToy(nn.Module):
    """Output (ε, v) = (a · x, tanh(b · x)): `a` only moves the mean, `b` only the variance."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))
        self.b = nn.Parameter(torch.tensor(0.3))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a * x, torch.tanh(self.b * x)], dim=1)  # (B, 2C, ...)


def test_hybrid_vb_gradient_reaches_only_the_variance():
    diffusion = GaussianDiffusion(
        get_beta_schedule("linear", 100), var_type=ModelVarType.LEARNED_RANGE, loss_type=LossType.HYBRID
    )
    model = LearnedSigmaToy()
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 2, 4, 12, generator=generator) * 2 - 1
    noise = torch.randn(3, 2, 4, 12, generator=generator)
    t = _t(0, 37, 99)
    terms = diffusion.training_losses(model, x0, t, noise=noise)
    assert terms["loss"].shape == (3,)
    assert torch.equal(terms["loss"], terms["mse"] + terms["vb"])

    terms["vb"].sum().backward()
    assert model.a.grad is None or model.a.grad.item() == 0.0
    assert model.b.grad is not None and model.b.grad.abs().item() > 0
    model.zero_grad(set_to_none=True)
    diffusion.training_losses(model, x0, t, noise=noise)["mse"].sum().backward()
    assert model.b.grad is None or model.b.grad.item() == 0.0
    assert model.a.grad is not None and model.a.grad.abs().item() > 0
