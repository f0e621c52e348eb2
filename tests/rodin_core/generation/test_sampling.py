"""Sampling helpers (paper §3.2 Eq. 3, §3.3, appendix B.4): shapes, raw units, seeded determinism, guidance."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rodin_core.diffusion import DiffusionConfig
from rodin_core.generation.sampling import (
    run_sampler,
    sample_base,
    sample_prior,
    sample_upsampler,
)
from rodin_core.training.registry import build_stage
from rodin_core.triplane.rescale import upsample_planes
from rodin_core.triplane.rollout import roll_in

from ...stage_data import clustered_latents, decoder_for, plane_stats, small_config


def randomise_outputs(model: torch.nn.Module) -> torch.nn.Module:
    """Give the zero-initialised output layers random weights, so that the network's output depends on its inputs."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.abs().sum() == 0:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


def test_base_samples_repeat_with_the_same_z_and_seed():
    cfg = small_config()
    stats = plane_stats(cfg)
    model = randomise_outputs(build_stage("base", cfg, stats).modules["model"])
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))

    def draw(seed: int, **kwargs: float) -> torch.Tensor:
        return sample_base(model, cfg, stats, z, generator=torch.Generator().manual_seed(seed), **kwargs)

    first = draw(0)
    assert first.shape == (2, 3, 4, 8, 8) and torch.isfinite(first).all()
    assert torch.equal(first, draw(0))
    assert not torch.equal(first, draw(1))
    assert not torch.allclose(draw(0, guidance_scale=1.0), draw(0, guidance_scale=3.0))
    assert model.training  # the sampler restores the training mode it found
    unconditional = sample_base(model, cfg, stats, None, n=3, generator=torch.Generator().manual_seed(0))
    assert unconditional.shape == (3, 3, 4, 8, 8)
    with pytest.raises(ValueError, match="needs n >= 1"):
        sample_base(model, cfg, stats, None)


def test_samples_are_the_sampler_output_in_raw_units():
    cfg = small_config("base.diffusion.sampling_steps=ddim5")
    stats = plane_stats(cfg)
    model = randomise_outputs(build_stage("base", cfg, stats).modules["ema"])
    planes = sample_base(model, cfg, stats, None, n=2, generator=torch.Generator().manual_seed(0))
    rolled = run_sampler(cfg.base.diffusion, model, (2, 4, 8, 24), torch.device("cpu"),
                         torch.Generator().manual_seed(0))  # (n, C, h, 3h) normalised
    torch.testing.assert_close(planes, stats.denormalize(roll_in(rolled)))
    assert not torch.allclose(planes, roll_in(rolled))


def test_upsampler_samples_repeat_with_the_same_seed():
    cfg = small_config()
    stats = plane_stats(cfg)
    model = randomise_outputs(build_stage("upsampler", cfg, stats, decoder=decoder_for(cfg)).modules["ema"])
    low = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    first = sample_upsampler(model, cfg, stats, low, generator=torch.Generator().manual_seed(0))
    assert first.shape == (2, 3, 4, 16, 16)
    assert torch.equal(first, sample_upsampler(model, cfg, stats, low, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(first, sample_upsampler(model, cfg, stats, low + 1.0,
                                                   generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=r"\(n, 3, 4, 8, 8\)"):
        sample_upsampler(model, cfg, stats, torch.zeros(2, 3, 4, 16, 16))


def test_prior_samples_repeat_and_come_back_in_the_encoder_scale():
    cfg = small_config()
    stage = build_stage("prior", cfg, None, latents=clustered_latents())
    model = randomise_outputs(stage.modules["ema"])
    first = sample_prior(model, stage.modules["latent_norm"], cfg, 5, generator=torch.Generator().manual_seed(0))
    assert first.shape == (5, 32)
    assert torch.equal(first, sample_prior(model, stage.modules["latent_norm"], cfg, 5,
                                           generator=torch.Generator().manual_seed(0)))
    standard = run_sampler(cfg.prior.diffusion, model, (5, 32), torch.device("cpu"),
                           torch.Generator().manual_seed(0))
    torch.testing.assert_close(first, stage.modules["latent_norm"].denormalize(standard))  # not projected


class DivergingModel(torch.nn.Module):
    """An ε-model gone wrong: it predicts ε = -50 everywhere, so x̂0 = (x_t + 50 sqrt(1 - ᾱ_t)) / sqrt(ᾱ_t) explodes."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full_like(x, -50.0)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_clipping_bounds_a_diverging_models_samples(sampler):
    cfg = DiffusionConfig(steps=100, var_type="fixed_small", loss="simple", sampling_steps="10", clip_x0=2.5)
    kwargs = {"shape": (3, 4, 4, 12), "device": torch.device("cpu"), "sampler": sampler}
    clipped = run_sampler(cfg, DivergingModel(), generator=torch.Generator().manual_seed(0), **kwargs)
    free = run_sampler(dataclasses.replace(cfg, clip_x0=0.0), DivergingModel(),
                       generator=torch.Generator().manual_seed(0), **kwargs)
    assert free.abs().max() > 100.0  # unclipped, the divergence reaches the sample
    assert clipped.abs().max() <= 2.5 + 1e-5 and torch.isfinite(clipped).all()


def test_clip_bound_must_be_finite_and_not_negative():
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="diffusion.clip_x0"):
            DiffusionConfig(clip_x0=bad).validate()


def test_a_residual_upsampler_that_predicts_nothing_returns_the_bilinear_upsample():
    """With ``upsampler.residual`` a network whose x̂0 is 0 adds no detail: the sample is exactly the bilinear
    up-sample of its condition (the ancestral sampler's last step returns x̂0 without noise)."""
    cfg = small_config("upsampler.residual=true", "upsampler.residual_scale=3.0")
    stats = plane_stats(cfg)
    model = build_stage("upsampler", cfg, stats, decoder=decoder_for(cfg)).modules["ema"]  # zero output layer
    low = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sample = sample_upsampler(model, cfg, stats, low, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sample, stats.denormalize(upsample_planes(stats.normalize(low), 16)))
    direct = sample_upsampler(model, small_config("upsampler.residual=false"), stats, low, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(direct, stats.denormalize(torch.zeros_like(sample)))
