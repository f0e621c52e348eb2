"""The upsampler stage (paper §3.3, Eq. 4): x_0 prediction on a degraded condition plus rendered-patch perceptual loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rodin_core.generation.sampling import sample_upsampler
from rodin_core.networks.perceptual import PerceptualLoss
from rodin_core.rendering.renderer import render_rays
from rodin_core.training.optimisation import step_generator
from rodin_core.training.registry import build_stage
from rodin_core.training.upsampler import FOREGROUND_OPACITY, UpsamplerStage
from rodin_core.triplane.rescale import downsample_planes, upsample_planes
from rodin_core.triplane.rollout import roll_out

from ...stage_data import decoder_for, plane_stats, small_config, synthetic_batch

PERCEPTUAL = "upsampler.perceptual_weight=1"
"""The paper's image-level perceptual term of Eq. 4 (the tiny preset trains the upsampler without it)."""


@pytest.fixture(scope="module")
def perceptual() -> PerceptualLoss:
    return PerceptualLoss(backend="stlpips")


@pytest.mark.parametrize("residual", [False, True])
def test_loss_decreases_on_a_fixed_batch(residual):
    cfg = small_config("upsampler.perceptual_weight=0", "upsampler.train.lr=3e-3", f"upsampler.residual={residual}",
                       "upsampler.aug_blur_sigma=0", "upsampler.aug_noise_std=0")
    stage = build_stage("upsampler", cfg, plane_stats(cfg))
    batch = synthetic_batch(cfg, 4)
    low_res = stage.condition(batch.planes, None)
    x0 = stage.target(low_res).encode(roll_out(stage.stats.normalize(batch.planes)))  # (B, C, H, 3H)
    t = torch.linspace(0, stage.diffusion.num_timesteps - 1, 4).long()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))

    def fixed_loss() -> float:
        with torch.no_grad():
            stage.model.eval()
            terms = stage.diffusion.training_losses(stage.model, x0, t, noise=noise, model_kwargs={"low_res": low_res})
            return terms["loss"].mean().item()

    before = fixed_loss()
    for step in range(25):
        metrics = stage.train_step(batch, step)
    after = fixed_loss()
    # The residual form starts from the bilinear up-sample (a zero prediction is already its mean), so there is
    # less to gain in 25 steps than for the direct form, which starts from nothing.
    assert after < (0.8 if residual else 0.5) * before, f"fixed-batch loss went from {before:.4f} to {after:.4f}"
    assert set(metrics) == {"loss", "mse", "lr", "grad_norm"}


def test_condition_is_low_resolution_and_degraded_only_in_training():
    cfg = small_config("upsampler.perceptual_weight=0", "upsampler.aug_noise_std=0.5")
    stage = build_stage("upsampler", cfg, plane_stats(cfg))
    planes = synthetic_batch(cfg, 8).planes
    clean = stage.condition(planes, None)
    assert clean.shape == (8, 4, 8, 24)
    assert torch.equal(stage.condition(planes, step_generator(0, 0, 0)), stage.condition(planes, step_generator(0, 0, 0)))
    changed = (stage.condition(planes, step_generator(0, 0, 0)) - clean).flatten(1).abs().amax(dim=1) > 0
    assert 0 < int(changed.sum())  # each degradation applies with probability 0.5 per sample


def test_perceptual_patches_have_the_configured_size_and_train_only_the_triplane(perceptual):
    cfg = small_config(PERCEPTUAL)
    decoder = decoder_for(cfg)
    stage = UpsamplerStage(cfg, plane_stats(cfg), decoder, perceptual=perceptual)
    batch = synthetic_batch(cfg, 2)
    predicted = (batch.planes + 0.3 * torch.randn_like(batch.planes)).requires_grad_(True)
    pred_patches, target_patches = stage.renderer.patches(predicted, batch.planes, step_generator(0, 0, 0))
    assert pred_patches.shape == target_patches.shape == (2, 3, 18, 18)
    assert not target_patches.requires_grad
    perceptual(pred_patches, target_patches).sum().backward()
    assert predicted.grad is not None and predicted.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in decoder.parameters())


def test_training_step_with_the_perceptual_term(perceptual):
    cfg = small_config("upsampler.perceptual_weight=2.0")
    stage = UpsamplerStage(cfg, plane_stats(cfg), decoder_for(cfg), perceptual=perceptual)
    metrics = stage.train_step(synthetic_batch(cfg, 2), 0)
    assert metrics["perceptual"] > 0
    assert metrics["loss"] == pytest.approx(metrics["mse"] + 2.0 * metrics["perceptual"], rel=1e-5)
    assert set(stage.modules) == {"model", "ema"}


def test_foreground_patches_are_centred_on_opaque_pixels(perceptual):
    cfg = small_config(PERCEPTUAL, "upsampler.face_patch_prob=1.0", "render.views=8")
    stage = UpsamplerStage(cfg, plane_stats(cfg), decoder_for(cfg, density_bias=3.0), perceptual=perceptual)
    renderer = stage.renderer
    planes = synthetic_batch(cfg, 1).planes
    half = renderer.patch_size // 2
    for step in range(6):
        view, top, left = renderer.choose_patch(planes, step_generator(0, 0, step))
        origins, directions = renderer.view_rays(view)
        centre = (slice(top + half, top + half + 1), slice(left + half, left + half + 1))
        opacity = render_rays(planes, renderer.decoder, origins[centre].reshape(1, 3), directions[centre].reshape(1, 3),
                              renderer.probe, renderer.background).opacity
        assert opacity.item() > FOREGROUND_OPACITY


def test_perceptual_setup_errors_are_clear(perceptual):
    cfg = small_config(PERCEPTUAL)
    with pytest.raises(ValueError, match="decoder="):
        UpsamplerStage(cfg, plane_stats(cfg), None, perceptual=perceptual)
    with pytest.raises(ValueError, match="patch_size=12"):
        UpsamplerStage(small_config(PERCEPTUAL, "upsampler.patch_size=12"), plane_stats(cfg), decoder_for(cfg),
                       perceptual=perceptual)
    with pytest.raises(ValueError, match="exceeds render.resolution"):
        UpsamplerStage(small_config(PERCEPTUAL, "upsampler.patch_size=40"), plane_stats(cfg), decoder_for(cfg),
                       perceptual=perceptual)


def test_a_trained_residual_upsampler_beats_bilinear_upsampling_of_its_training_subjects():
    """The residual upsampler (§3.3) adds detail: on four training subjects whose planes carry detail that the
    bilinear up-sample of their low-resolution planes cannot recover, the trained model's 2-step sample (its
    conditional mean) is closer to the full-resolution planes than the bilinear up-sample is."""
    cfg = small_config("upsampler.train.lr=3e-3", "upsampler.train.ema_decay=0.9", "upsampler.residual=true",
                       "upsampler.residual_scale=3.0")
    stats = plane_stats(cfg)
    stage = build_stage("upsampler", cfg, stats)
    batch = synthetic_batch(cfg, 4, seed=5)
    detail = 0.3 * torch.randn(batch.planes.shape, generator=torch.Generator().manual_seed(6))  # (4, 3, C, H, H)
    batch = dataclasses.replace(batch, planes=batch.planes + detail)
    for step in range(300):
        stage.train_step(batch, step)
    low = stats.denormalize(downsample_planes(stats.normalize(batch.planes), cfg.triplane.rescale_min))
    with torch.no_grad():
        sample = sample_upsampler(stage.modules["ema"].eval(), cfg, stats, low, respacing="2",
                                  generator=torch.Generator().manual_seed(0))  # (4, 3, C, H, H) raw
    target = stats.normalize(batch.planes)
    bilinear = upsample_planes(stats.normalize(low), cfg.triplane.resolution)
    bilinear_mse = float(((bilinear - target) ** 2).mean())
    sample_mse = float(((stats.normalize(sample) - target) ** 2).mean())
    print(f"plane MSE: upsampler {sample_mse:.4f}, bilinear {bilinear_mse:.4f}")  # shown with `pytest -s`
    assert sample_mse < 0.5 * bilinear_mse, f"upsampler {sample_mse:.4f} vs bilinear {bilinear_mse:.4f}"
