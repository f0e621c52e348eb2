"""Tiny trained-looking stages for the generation tests: real checkpoints of randomly initialised networks.

Each stage is built by :func:`build_stage` from a shrunk tiny preset (C=4, 16^2 planes, base 8^2,
U-Nets of width 8 without attention, 3 sampling steps), its zero-initialised output layers given
small random weights so that the outputs depend on z, the noise and the condition, then saved with
:func:`save_checkpoint` and read back with :func:`load_checkpoint`, as a training run leaves them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from rodin_core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from rodin_core.config import RodinConfig, load_config
from rodin_core.generation import GenerationPipeline
from rodin_core.training.registry import build_stage
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.stats import PlaneStats

GENERATION_OVERRIDES = (
    "triplane.channels=4", "triplane.resolution=16", "triplane.rescale_min=8", "triplane.decoder.hidden=16",
    "triplane.decoder.feature_frequencies=0", "render.resolution=16", "render.views=4", "fit.coarse_samples=6",
    "fit.fine_samples=0", "encoder.kind=learned", "encoder.latent_dim=8", "encoder.image_size=16",
    "encoder.learned_channels=4",
    "base.unet.model_channels=8", "base.unet.channel_mult=[1]", "base.unet.attention_resolutions=[]",
    "base.unet.aware_resolutions=[8]",
    "base.unet.num_head_channels=8", "base.diffusion.steps=40", "base.diffusion.sampling_steps=3",
    "upsampler.unet.model_channels=8", "upsampler.unet.channel_mult=[1]", "upsampler.unet.attention_resolutions=[]",
    "upsampler.unet.aware_resolutions=[16]", "upsampler.unet.num_head_channels=8", "upsampler.diffusion.steps=40",
    "upsampler.diffusion.sampling_steps=3", "upsampler.perceptual_weight=0", "upsampler.patch_size=8",
    "prior.mlp.depth=2", "prior.mlp.width=16", "prior.diffusion.steps=40", "prior.diffusion.sampling_steps=3",
)
"""Shrinks a preset to networks of a few thousand parameters: a generation takes tens of milliseconds."""


def generation_config(*overrides: str, preset: str = "tiny") -> RodinConfig:
    return load_config(preset, overrides=GENERATION_OVERRIDES + overrides)


def plane_stats(cfg: RodinConfig, shift: float = 0.0) -> PlaneStats:
    """Channel-dependent statistics, so that denormalising visibly changes the planes."""
    channels = cfg.triplane.channels
    return PlaneStats(torch.linspace(-0.5, 0.5, channels) + shift, torch.linspace(0.5, 1.5, channels), count=8)


def randomise_zero_parameters(module: nn.Module, seed: int) -> None:
    """Small random values in every all-zero parameter (the U-Nets' zero-initialised output layers)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.abs().sum() == 0:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))


def make_checkpoint(folder: Path, stage_name: str, cfg: RodinConfig, stats: PlaneStats | None = None) -> Checkpoint:
    """Build stage ``stage_name`` of ``cfg``, randomise its output layers, save it to ``folder`` and load it back."""
    stats = stats or plane_stats(cfg)
    latents = torch.randn(8, cfg.encoder.latent_dim, generator=torch.Generator().manual_seed(1))  # (N, D)
    stage = build_stage(stage_name, cfg, stats, latents=latents)
    for index, module in enumerate(stage.modules.values()):
        randomise_zero_parameters(module, seed=index)
    extra = stats.as_tensors("stats.") if stage_name != "prior" else {}
    save_checkpoint(folder, modules=stage.modules, optimizers=stage.optimizers, step=0, config=stage.config(),
                    extra_tensors=extra)
    return load_checkpoint(folder)


def make_decoder(cfg: RodinConfig, seed: int = 0) -> TriplaneDecoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TriplaneDecoder(cfg.triplane.decoder)


@dataclass(frozen=True)
class Stages:
    """The three checkpoints and the decoder of one tiny model."""

    cfg: RodinConfig
    base: Checkpoint
    upsampler: Checkpoint
    prior: Checkpoint
    decoder: TriplaneDecoder
    checkpoint: Callable[..., Checkpoint]
    """``checkpoint(stage_name, *overrides, preset="tiny", stats=None)``: another checkpoint, built on demand."""

    def pipeline(self, **kwargs) -> GenerationPipeline:
        return GenerationPipeline.from_checkpoints(self.base, self.upsampler, self.prior, self.decoder,
                                                   decoder_sha256="ab" * 32, **kwargs)


@pytest.fixture(scope="session")
def stages(tmp_path_factory: pytest.TempPathFactory) -> Stages:
    root = tmp_path_factory.mktemp("generation-checkpoints")
    cfg = generation_config()
    counter = iter(range(1_000_000))

    def checkpoint(stage_name: str, *overrides: str, preset: str = "tiny",
                   stats: PlaneStats | None = None) -> Checkpoint:
        other = generation_config(*overrides, preset=preset)
        return make_checkpoint(root / f"{stage_name}-{next(counter)}", stage_name, other, stats)

    return Stages(cfg, checkpoint("base"), checkpoint("upsampler"), checkpoint("prior"), make_decoder(cfg), checkpoint)


@pytest.fixture(scope="session")
def pipeline(stages: Stages) -> GenerationPipeline:
    return stages.pipeline()
