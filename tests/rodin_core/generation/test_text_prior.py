"""The text prior at generation (appendix B.5): strict checkpoint loading, classifier-free guidance, determinism."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from rodin_core.checkpoint import load_checkpoint, save_checkpoint
from rodin_core.config import RodinConfig
from rodin_core.diffusion import classifier_free_guidance
from rodin_core.generation import GenerationError
from rodin_core.generation.text_prior import TextPrior
from rodin_core.networks import LatentMLP, LatentMLPConfig
from rodin_core.stage_specs import TEXT_PRIOR
from rodin_core.training.registry import build_stage

from ...stage_data import small_config
from .conftest import randomise_zero_parameters

DIM = 32
MICRO = ("text_prior.mlp.width=16", "text_prior.mlp.depth=2", "text_prior.diffusion.steps=40",
         "text_prior.diffusion.sampling_steps=5")


def texts(count: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(count, DIM, generator=torch.Generator().manual_seed(seed)), dim=-1)


def saved_stage(folder: Path, cfg: RodinConfig, modules: dict[str, nn.Module] | None = None) -> TextPrior:
    """An untrained text prior stage (random output layers) saved to ``folder``; the prior it holds in memory."""
    latents = torch.randn(8, DIM, generator=torch.Generator().manual_seed(1))
    stage = build_stage(TEXT_PRIOR, cfg, None, latents=latents)
    for index, module in enumerate(stage.modules.values()):
        randomise_zero_parameters(module, seed=index)
    save_checkpoint(folder, modules=modules or stage.modules, optimizers=stage.optimizers, step=3,
                    config=stage.config())
    return TextPrior(cfg, stage.modules["ema"].module, stage.latent_norm)


def test_a_saved_text_prior_reloads_strictly_and_samples_the_same(tmp_path):
    cfg = small_config(*MICRO)
    in_memory = saved_stage(tmp_path, cfg)
    loaded = TextPrior.from_checkpoint(load_checkpoint(tmp_path))
    assert loaded.cfg.text_prior == cfg.text_prior and loaded.text_dim == DIM
    text = texts(2)
    assert torch.equal(loaded.sample(text, seed=5), in_memory.sample(text, seed=5))
    assert torch.equal(loaded.latent_norm.mean, in_memory.latent_norm.mean)


def test_a_checkpoint_without_the_text_input_is_refused(tmp_path):
    cfg = small_config(*MICRO)
    unconditional = LatentMLP(LatentMLPConfig(latent_dim=DIM, width=16, depth=2, time_embed_dim=512))
    saved_stage(tmp_path, cfg, modules={"ema": unconditional, "latent_norm": build_stage(
        TEXT_PRIOR, cfg, None, latents=torch.randn(4, DIM)).latent_norm})
    with pytest.raises(GenerationError) as info:
        TextPrior.from_checkpoint(load_checkpoint(tmp_path))
    assert "missing ['text_proj.bias', 'text_proj.weight']" in str(info.value) and "\n" not in str(info.value)


def test_a_latent_prior_checkpoint_is_not_a_text_prior(tmp_path):
    cfg = small_config(*MICRO)
    stage = build_stage("prior", cfg, None, latents=torch.randn(8, DIM))
    save_checkpoint(tmp_path, modules=stage.modules, optimizers=stage.optimizers, step=0, config=stage.config())
    with pytest.raises(GenerationError, match="is a 'prior' checkpoint"):
        TextPrior.from_checkpoint(load_checkpoint(tmp_path))


def test_guidance_zero_is_the_unconditional_prediction(tmp_path):
    prior = saved_stage(tmp_path, small_config(*MICRO))
    network = prior.network
    z_t, t, text = torch.randn(3, DIM), torch.tensor([0, 17, 39]), texts(3)
    with torch.no_grad():
        guided = classifier_free_guidance(network, 0.0, latent_key="text")(z_t, t, text=text)
        torch.testing.assert_close(guided, network(z_t, t), rtol=0, atol=1e-6)
        assert not torch.allclose(network(z_t, t, text), network(z_t, t), atol=1e-4)
        conditional = classifier_free_guidance(network, 1.0, latent_key="text")(z_t, t, text=text)
        assert torch.equal(conditional, network(z_t, t, text))


def test_same_text_and_seed_give_the_same_z_and_other_texts_other_z(tmp_path):
    prior = saved_stage(tmp_path, small_config(*MICRO))
    a, b = texts(1, seed=1), texts(1, seed=2)
    assert torch.equal(prior.sample(a, seed=9), prior.sample(a, seed=9))
    assert not torch.allclose(prior.sample(a, seed=9), prior.sample(b, seed=9), atol=1e-3)
    assert not torch.allclose(prior.sample(a, seed=9), prior.sample(a, seed=10), atol=1e-3)
    assert prior.sample(a, seed=9).shape == (1, DIM)
    assert prior.guidance(None) == 2.0
    z = prior.sample(texts(4, seed=3), seed=9)  # (4, DIM)
    torch.testing.assert_close(z.norm(dim=1), torch.full((4,), math.sqrt(DIM)))  # on the image latents' sphere


def test_bad_inputs_are_one_line(tmp_path):
    prior = saved_stage(tmp_path, small_config(*MICRO))
    with pytest.raises(GenerationError, match=r"text embeddings must be finite \(n, 32\), got \(1, 5\)"):
        prior.sample(torch.zeros(1, 5), seed=0)
    with pytest.raises(GenerationError, match="guidance scale must be a finite number >= 0"):
        prior.sample(texts(1), seed=0, guidance_scale=-1.0)
    with pytest.raises(GenerationError, match="seed must be an integer"):
        prior.sample(texts(1), seed=-1)
    other = small_config(*MICRO, "encoder.kind=clip")
    with pytest.raises(GenerationError, match="train the text prior again for this base: `rodin train text-prior"):
        prior.check_base(other, "data/x")
