"""The base stage (paper §3.2): ε-prediction with the hybrid loss, z from the frontal view, CFG dropout."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import rodin_core.training.base as base_module
from rodin_core.generation.sampling import sample_base
from rodin_core.training.base import cfg_dropout_mask
from rodin_core.training.optimisation import step_generator
from rodin_core.training.registry import build_stage
from rodin_core.triplane.rollout import roll_out

from ...stage_data import PAPER_OBJECTIVE, plane_stats, small_config, synthetic_batch


def fixed_loss(stage, batch) -> float:
    """Hybrid loss of the model on fixed timesteps and noise (no randomness, no update)."""
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        x0 = stage.targets(batch.planes)  # (B, C, h, 3h)
        t = torch.linspace(0, stage.diffusion.num_timesteps - 1, x0.shape[0]).long()
        noise = torch.randn(x0.shape, generator=generator)
        z = stage.encode(batch.frontal, batch.subject_ids)
        stage.model.eval()
        return stage.diffusion.training_losses(stage.model, x0, t, noise=noise, model_kwargs={"z": z})["loss"].mean().item()


def test_loss_decreases_on_a_fixed_batch():
    cfg = small_config("base.train.lr=2e-3", *PAPER_OBJECTIVE)
    stage = build_stage("base", cfg, plane_stats(cfg))
    batch = synthetic_batch(cfg, 4)
    before = fixed_loss(stage, batch)
    metrics = [stage.train_step(batch, step) for step in range(25)]
    after = fixed_loss(stage, batch)
    assert after < 0.7 * before, f"fixed-batch loss went from {before:.4f} to {after:.4f}"
    assert set(metrics[-1]) == {"loss", "mse", "vb", "cfg_kept", "lr", "grad_norm"}
    assert all(m["vb"] > 0 for m in metrics)  # the hybrid loss trains the learned variance


def test_cfg_dropout_zeroes_exactly_the_chosen_samples():
    cfg = small_config("base.cfg_drop=0.5")
    stage = build_stage("base", cfg, plane_stats(cfg))
    seen: list[Tensor] = []
    stage.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["z"].detach().clone()),
                                          with_kwargs=True)
    batch = synthetic_batch(cfg, 8)
    for step in (3, 4):
        seen.clear()
        metrics = stage.train_step(batch, step)
        keep = cfg_dropout_mask(8, 0.5, step_generator(cfg.base.train.seed, 0, step))  # first draw of the step
        zero_rows = seen[0].abs().sum(dim=1) == 0
        assert 0 < int(keep.sum()) < 8
        assert torch.equal(zero_rows, ~keep)
        assert metrics["cfg_kept"] == pytest.approx(keep.float().mean().item())
    assert torch.equal(cfg_dropout_mask(1000, 0.0, torch.Generator()), torch.ones(1000, dtype=torch.bool))
    assert abs(cfg_dropout_mask(4000, 0.2, torch.Generator().manual_seed(1)).float().mean().item() - 0.8) < 0.03


def test_latent_noise_feeds_the_model_perturbed_z_on_the_sphere():
    cfg = small_config("base.cfg_drop=0.5", "base.latent_noise=0.5")
    clean_cfg = small_config("base.cfg_drop=0.5")
    stages = {name: build_stage("base", c, plane_stats(c)) for name, c in (("noisy", cfg), ("clean", clean_cfg))}
    seen: dict[str, list[Tensor]] = {"noisy": [], "clean": []}
    for name, stage in stages.items():
        stage.model.register_forward_pre_hook(
            lambda module, args, kwargs, name=name: seen[name].append(kwargs["z"].detach().clone()), with_kwargs=True)
    batch = synthetic_batch(cfg, 8)
    stages["noisy"].train_step(batch, 3)
    stages["clean"].train_step(batch, 3)
    noisy, clean = seen["noisy"][0], seen["clean"][0]  # (8, D) each
    kept = clean.abs().sum(dim=1) > 0
    assert 0 < int(kept.sum()) < 8
    assert torch.equal(noisy.abs().sum(dim=1) > 0, kept)  # the same samples are dropped for guidance
    dim = noisy.shape[1]
    torch.testing.assert_close(noisy[kept].norm(dim=1), torch.full((int(kept.sum()),), dim ** 0.5))
    cosine = torch.nn.functional.cosine_similarity(noisy[kept], clean[kept], dim=1)
    assert bool(((cosine > 0.5) & (cosine < 1 - 1e-4)).all()), cosine


def test_a_negative_latent_noise_is_a_one_line_config_error():
    with pytest.raises(ValueError, match=r"base\.latent_noise.*-0\.1"):
        small_config("base.latent_noise=-0.1")


def test_conditional_and_unconditional_predictions_differ_after_brief_training():
    cfg = small_config("base.train.lr=2e-3", "base.cfg_drop=0.5")
    stage = build_stage("base", cfg, plane_stats(cfg))
    batch = synthetic_batch(cfg, 4)
    for step in range(15):
        stage.train_step(batch, step)
    x0 = stage.targets(batch.planes)
    t = torch.full((4,), 50)
    x_t = stage.diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)))
    model = stage.modules["model"].eval()
    with torch.no_grad():
        z = stage.encode(batch.frontal)
        conditional, unconditional = model(x_t, t, z)[:, :4], model(x_t, t, None)[:, :4]
    gap = (conditional - unconditional).abs().mean() / conditional.abs().mean()
    assert gap > 1e-2, f"z barely changes the prediction (relative gap {gap:.2e})"


def test_learned_encoder_trains_jointly_with_its_own_ema():
    cfg = small_config()
    stage = build_stage("base", cfg, plane_stats(cfg))
    assert set(stage.modules) == {"model", "ema", "encoder", "encoder_ema"}
    before = {n: p.detach().clone() for n, p in stage.modules["encoder"].named_parameters()}
    ema_before = [p.detach().clone() for p in stage.modules["encoder_ema"].parameters()]
    for step in range(3):  # zero-initialised output convolutions (ADM) pass no gradient to z before step 2
        stage.train_step(synthetic_batch(cfg, 4), step)
    moved = {n: not torch.equal(before[n], p) for n, p in stage.modules["encoder"].named_parameters()}
    ema_moved = [not torch.equal(a, p) for a, p in zip(ema_before, stage.modules["encoder_ema"].parameters(), strict=True)]
    assert all(p.grad is not None for p in stage.modules["encoder"].parameters())
    # a convolution's bias right before a normalisation has a zero gradient up to rounding (the norm removes it);
    # every other parameter moves
    conv_biases = {f"{name}.bias" for name, module in stage.modules["encoder"].named_modules()
                   if isinstance(module, nn.Conv2d)}
    assert [n for n, m in moved.items() if not m and n not in conv_biases] == [] and any(ema_moved)
    assert len(conv_biases) < len(moved) // 2
    assert len(stage.optimizers["model"].param_groups[0]["params"]) == sum(
        1 for m in ("model", "encoder") for _ in stage.modules[m].parameters())


class _FrozenEncoder(nn.Module):
    """Stands in for the frozen CLIP tower: counts the images it encodes."""

    trainable = False

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(3, latent_dim)
        self.encoded = 0

    def forward(self, images: Tensor) -> Tensor:
        self.encoded += images.shape[0]
        return self.proj(images[:, :3].mean(dim=(2, 3)))  # (B, D)


def test_frozen_encoder_is_cached_per_subject_and_not_checkpointed(monkeypatch):
    cfg = small_config()
    monkeypatch.setattr(base_module, "build_encoder", lambda encoder_cfg, device: _FrozenEncoder(32))
    stage = build_stage("base", cfg, plane_stats(cfg))
    assert set(stage.modules) == {"model", "ema"}
    batch = synthetic_batch(cfg, 4)
    stage.train_step(batch, 0)
    stage.train_step(batch, 1)
    assert stage.encoder.encoded == 4
    assert all(p.grad is None for p in stage.encoder.parameters())


def test_same_seed_same_training():
    cfg = small_config()
    batch = synthetic_batch(cfg, 4)
    runs = []
    for _ in range(2):
        stage = build_stage("base", cfg, plane_stats(cfg))
        metrics = [stage.train_step(batch, step) for step in range(2)]
        runs.append((metrics, [p.detach().clone() for p in stage.modules["model"].parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))
    with pytest.raises(TypeError, match="TriplaneBatch"):
        stage.train_step(torch.zeros(4, 32), 0)


STEPS_TO_MEMORISE = 150


def test_a_trained_base_model_reproduces_each_training_subject_from_its_own_frontal():
    """Conditional sampling (§3.2, Eq. 3) with the z of a training subject's frontal view lands on that subject.

    Four subjects with distinct frontals, trained jointly with the learned encoder (x0 objective, flattening
    pooling: the tiny preset's choices), then sampled from each subject's z: each sample must be nearest to its
    own subject and close to it. A model whose z carries no identity lands between subjects and fails."""
    cfg = small_config("base.train.lr=2e-3", "base.train.ema_decay=0.9", "base.cfg_drop=0.0",
                       "base.diffusion.mean_type=x0", "base.diffusion.var_type=fixed_small",
                       "base.diffusion.loss=simple", "encoder.learned_pooling=flatten")
    stats = plane_stats(cfg)
    stage = build_stage("base", cfg, stats)
    batch = synthetic_batch(cfg, 4, seed=3)
    for step in range(STEPS_TO_MEMORISE):
        stage.train_step(batch, step)
    encoder = stage.modules["encoder_ema"].eval()
    with torch.no_grad():
        z = encoder(batch.frontal)  # (4, D)
        samples = sample_base(stage.modules["ema"].eval(), cfg, stats, z, guidance_scale=1.0,
                              generator=torch.Generator().manual_seed(0))  # (4, 3, C, h, h) raw
    targets = stage.targets(batch.planes)  # (4, C, h, 3h) normalised
    rolled = roll_out(stats.normalize(samples))  # (4, C, h, 3h)
    distances = ((rolled[:, None] - targets[None]) ** 2).mean(dim=(2, 3, 4))  # (4, 4)
    own = distances.diagonal()
    nearest_is_own = distances.argmin(dim=1) == torch.arange(4)
    summary = f"own-subject MSE {[round(v, 4) for v in own.tolist()]}, data variance {targets.var():.3f}"
    print(summary)  # shown with `pytest -s`
    assert bool(nearest_is_own.all()), summary
    assert float(own.max()) < 0.1 * float(targets.var()), summary
