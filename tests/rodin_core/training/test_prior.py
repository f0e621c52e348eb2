"""The latent prior stage (paper appendix B.4): standardised latents, batches per rank, ε-prediction training."""

from __future__ import annotations

import pytest
import torch

from rodin_core.datasets.triplanes import TriplaneBatch
from rodin_core.networks.latent_normalizer import LatentNormalizer
from rodin_core.training.prior import encode_latents, latent_batches
from rodin_core.training.registry import build_stage

from ...stage_data import clustered_latents, small_config


def test_normalizer_standardises_and_inverts():
    latents = clustered_latents()
    norm = LatentNormalizer(32).fit(latents)
    standard = norm.normalize(latents)
    assert standard.mean(dim=0).abs().max() < 1e-5
    assert standard.pow(2).mean().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(norm.denormalize(standard), latents)
    with pytest.raises(ValueError, match="at least 2"):
        LatentNormalizer(32).fit(latents[:1])
    with pytest.raises(ValueError, match="identical"):
        LatentNormalizer(32).fit(latents[:1].repeat(4, 1))


def test_latent_batches_split_ranks_and_repeat_deterministically():
    latents = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 3)  # row i holds i
    taken = {}
    for rank in (0, 1):
        stream = latent_batches(latents, 2, seed=1, rank=rank, world_size=2)
        first_epoch = [next(stream) for _ in range(2)]  # 5 rows -> 2 full batches per epoch
        taken[rank] = {int(v) for batch in first_epoch for v in batch[:, 0]}
        assert all(batch.shape == (2, 3) for batch in first_epoch)
    assert taken[0] <= {0, 2, 4, 6, 8} and taken[1] <= {1, 3, 5, 7, 9}
    again = latent_batches(latents, 2, seed=1, rank=0, world_size=2)
    stream = latent_batches(latents, 2, seed=1, rank=0, world_size=2)
    assert all(torch.equal(next(again), next(stream)) for _ in range(6))
    with pytest.raises(ValueError, match="no latents"):
        next(latent_batches(latents[:1], 2, rank=1, world_size=2))


def test_loss_decreases_on_a_fixed_set():
    cfg = small_config("prior.train.lr=3e-3", "prior.train.batch_size=16")
    latents = clustered_latents()
    stage = build_stage("prior", cfg, None, latents=latents)
    z0 = stage.latent_norm.normalize(latents)
    t = torch.linspace(0, stage.diffusion.num_timesteps - 1, 16).long()
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(2))

    def fixed_loss() -> float:
        with torch.no_grad():
            stage.model.eval()
            return stage.diffusion.training_losses(stage.model, z0, t, noise=noise)["loss"].mean().item()

    before = fixed_loss()
    batches = latent_batches(latents, 16)
    for step in range(80):
        metrics = stage.train_step(next(batches), step)
    after = fixed_loss()
    assert after < 0.6 * before, f"fixed-set loss went from {before:.4f} to {after:.4f}"
    assert set(metrics) == {"loss", "mse", "lr", "grad_norm"}
    assert set(stage.modules) == {"model", "ema", "latent_norm"}
    with pytest.raises(ValueError, match=r"latents \(B, 32\)"):
        stage.train_step(torch.zeros(4, 7), 0)


def test_encode_latents_keeps_each_subject_once():
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(5))
    frontal = torch.rand(3, 4, 8, 8)
    batches = [TriplaneBatch(torch.tensor([7, 3, 7]), torch.zeros(3, 3, 1, 2, 2), frontal),
               TriplaneBatch(torch.tensor([1]), torch.zeros(1, 3, 1, 2, 2), frontal[:1])]
    ids, latents = encode_latents(encoder, batches)
    assert ids.tolist() == [1, 3, 7] and latents.shape == (3, 5)
    with torch.no_grad():
        torch.testing.assert_close(latents[2], encoder(frontal[:1])[0])
    with pytest.raises(ValueError, match="no batches"):
        encode_latents(encoder, [])
