"""The text prior stage (appendix B.5): paired batches, text dropout, and a short run that learns which z a text names."""

from __future__ import annotations

import math

import pytest
import torch

from rodin_core.datasets.triplanes import TriplaneBatch
from rodin_core.generation.text_prior import TextPrior
from rodin_core.stage_specs import TEXT_PRIOR
from rodin_core.training.registry import build_stage
from rodin_core.training.text_prior import TextLatentBatch, text_latent_batches

from ...stage_data import small_config

DIM = 32
"""encoder.latent_dim of ``small_config``: the size of z and of the text embeddings."""
TOY = ("text_prior.mlp.width=128", "text_prior.mlp.depth=2", "text_prior.diffusion.steps=100",
       "text_prior.diffusion.sampling_steps=20", "text_prior.train.lr=2e-3", "text_prior.train.batch_size=32",
       "text_prior.train.ema_decay=0.9", "text_prior.text_drop=0.15")


def toy_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """4 (text, z) pairs: unit text embeddings and z on the sqrt(D) sphere, as the encoders give them."""
    generator = torch.Generator().manual_seed(7)
    text = torch.nn.functional.normalize(torch.randn(4, DIM, generator=generator), dim=-1)  # (4, E)
    z = torch.nn.functional.normalize(torch.randn(4, DIM, generator=generator), dim=-1) * math.sqrt(DIM)  # (4, D)
    return text, z


@pytest.fixture(scope="module")
def trained() -> tuple[TextPrior, torch.Tensor, torch.Tensor, list[float]]:
    """The toy text prior after 600 steps on the 4 pairs (a few seconds on one core)."""
    cfg = small_config(*TOY)
    text, z = toy_pairs()
    stage = build_stage(TEXT_PRIOR, cfg, None, latents=z)
    batches = text_latent_batches(text.repeat(8, 1), z.repeat(8, 1), 32, seed=0)
    losses = [stage.train_step(next(batches), step)["loss"] for step in range(600)]
    return TextPrior(cfg, stage.modules["ema"].module, stage.latent_norm), text, z, losses


def test_samples_for_text_i_land_nearest_z_i(trained) -> None:
    prior, text, z, losses = trained
    assert sum(losses[-50:]) < 0.5 * sum(losses[:50])
    for i in range(4):
        samples = torch.cat([prior.sample(text[i:i + 1], seed=seed, guidance_scale=2.0) for seed in range(4)])
        distances = torch.cdist(samples, z)  # (4 seeds, 4 latents)
        assert (distances.argmin(dim=1) == i).all(), (i, distances)
        others = distances[:, [j for j in range(4) if j != i]]
        assert distances[:, i].mean() < 0.5 * others.min(dim=1).values.mean(), (i, distances)


def test_without_guidance_the_text_is_ignored(trained) -> None:
    prior, text, _, _ = trained
    unconditional = [prior.sample(text[i:i + 1], seed=3, guidance_scale=0.0) for i in range(4)]
    assert all(torch.equal(unconditional[0], other) for other in unconditional[1:])
    assert not torch.equal(prior.sample(text[:1], seed=3, guidance_scale=2.0),
                           prior.sample(text[1:2], seed=3, guidance_scale=2.0))


def test_batches_keep_the_pairs_together_and_split_ranks() -> None:
    text = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 3)  # row k holds k
    z = -torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 2)
    for rank in (0, 1):
        stream = text_latent_batches(text, z, 2, seed=1, rank=rank, world_size=2)
        for _ in range(5):
            batch = next(stream)
            assert batch.text.shape == (2, 3) and batch.z.shape == (2, 2)
            assert torch.equal(batch.text[:, 0], -batch.z[:, 0])
            assert all(int(k) % 2 == rank for k in batch.text[:, 0])
    with pytest.raises(ValueError, match="one row per pair"):
        next(text_latent_batches(text, z[:9], 2))


def test_the_stage_refuses_other_data_and_drops_texts_with_its_probability() -> None:
    text, z = toy_pairs()
    stage = build_stage(TEXT_PRIOR, small_config(*TOY), None, latents=z)
    with pytest.raises(TypeError, match="TextLatentBatch"):
        stage.train_step(z, 0)
    with pytest.raises(TypeError, match="TextLatentBatch"):
        stage.train_step(TriplaneBatch(torch.zeros(1), torch.zeros(1), torch.zeros(1)), 0)
    with pytest.raises(ValueError, match=r"text \(32,\) and z \(32,\) rows"):
        stage.train_step(TextLatentBatch(text[:, :5], z), 0)
    seen: list[torch.Tensor] = []
    handle = stage.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["text"]),
                                                   with_kwargs=True)
    rows = TextLatentBatch(text.repeat(100, 1), z.repeat(100, 1))  # 400 rows
    stage.train_step(rows, 0)
    handle.remove()
    dropped = (seen[0].abs().sum(dim=1) == 0).float().mean().item()
    assert 0.08 < dropped < 0.22  # text_drop = 0.15
    kept = seen[0].abs().sum(dim=1) > 0
    torch.testing.assert_close(seen[0][kept], rows.text[kept])


def test_build_stage_needs_the_latents() -> None:
    with pytest.raises(ValueError, match="text prior stage standardises the latents"):
        build_stage(TEXT_PRIOR, small_config(*TOY), None)
