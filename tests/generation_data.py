"""A tiny dataset root holding what generation reads: three stage checkpoints and the frozen decoder.

The networks are randomly initialised (each stage from its ``train.seed``) but real: built by
:func:`rodin_core.training.registry.build_stage`, saved with :func:`save_checkpoint` and committed
with :func:`rodin_core.datasets.checkpoints.commit_stage_checkpoint`, the way a training run commits them;
the decoder is committed the way the fitting stage commits it (``decoder/decoder``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from rodin_core.checkpoint import save_checkpoint
from rodin_core.config import RodinConfig, load_config
from rodin_core.datasets.checkpoints import commit_stage_checkpoint
from rodin_core.datasets.layout import DECODER_CONFIG, DECODER_SHARD, DECODER_STAGE, DECODER_WEIGHTS, STATS_PREFIX
from rodin_core.stage_specs import STAGE_NAMES, TRAINED_STAGES
from rodin_core.storage import open_store
from rodin_core.training.registry import build_stage
from rodin_core.training.stage import Stage
from rodin_core.triplane.decoder_io import decoder_to_bytes
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.stats import PlaneStats

MICRO_NETWORKS = [
    "encoder.latent_dim=8", "encoder.image_size=16", "encoder.learned_channels=4",
    "base.unet.model_channels=8", "base.unet.channel_mult=[1]", "base.unet.attention_resolutions=[]",
    "base.unet.aware_resolutions=[4]",
    "base.unet.num_head_channels=8", "base.diffusion.steps=40", "base.diffusion.sampling_steps=3",
    "upsampler.unet.model_channels=8", "upsampler.unet.channel_mult=[1]", "upsampler.unet.attention_resolutions=[]",
    "upsampler.unet.aware_resolutions=[8]", "upsampler.unet.num_head_channels=8", "upsampler.diffusion.steps=40",
    "upsampler.diffusion.sampling_steps=3", "upsampler.perceptual_weight=0",
    "prior.mlp.depth=2", "prior.mlp.width=16", "prior.diffusion.steps=40", "prior.diffusion.sampling_steps=3",
]
"""Encoder and diffusion networks of a few thousand parameters, 3 sampling steps per stage (for 8x8 planes)."""
GENERATION_TINY = [
    "triplane.channels=4", "triplane.resolution=8", "triplane.rescale_min=4", "triplane.decoder.hidden=16",
    "render.resolution=16", "fit.coarse_samples=6", "fit.fine_samples=0", "encoder.kind=learned", *MICRO_NETWORKS,
]
"""The tiny preset shrunk to networks of a few thousand parameters and 3 sampling steps per stage."""
DENSITY_BIAS = 2.0
"""Density pre-activation bias of the test decoder: an untrained decoder's -5 renders an empty, white field."""


def generation_config(*overrides: str, preset: str = "tiny") -> RodinConfig:
    return load_config(preset, None, [*GENERATION_TINY, *overrides])


def plane_stats(cfg: RodinConfig) -> PlaneStats:
    """Channel-dependent statistics, so that denormalising visibly changes the planes."""
    channels = cfg.triplane.channels
    return PlaneStats(torch.linspace(-0.5, 0.5, channels), torch.linspace(0.5, 1.5, channels), count=8)


def commit_decoder(out: str, cfg: RodinConfig, seed: int = 0, density_bias: float = DENSITY_BIAS) -> str:
    """Commit a freshly initialised decoder of ``cfg.triplane`` as ``decoder/decoder``; returns its sha256."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = TriplaneDecoder(cfg.triplane.decoder)
    with torch.no_grad():
        decoder.density_and_features.bias[0] = density_bias
    weights, config_json = decoder_to_bytes(decoder)
    writer = open_store(out).stage(DECODER_STAGE).begin(DECODER_SHARD)
    writer.write_bytes(DECODER_WEIGHTS, weights)
    writer.write_bytes(DECODER_CONFIG, config_json.encode("utf-8"))
    return writer.commit([0, 1], f"decoder-{seed}").file(DECODER_WEIGHTS).sha256


def fill_zero_layers(stage: Stage, seed: int) -> None:
    """Give the zero-initialised layers of the stage's network (its output convolutions) small random weights,
    and copy them into its EMA, so that the untrained network's output depends on its input and the noise."""
    generator = torch.Generator().manual_seed(seed)
    model = stage.modules["model"]
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
        stage.modules["ema"].module.load_state_dict(model.state_dict())


def commit_checkpoint(out: str, stage_name: str, cfg: RodinConfig) -> None:
    """Build stage ``stage_name`` of ``cfg`` (untrained) and commit it as ``checkpoints/<stage_name>``."""
    stats = plane_stats(cfg)
    latents = torch.randn(8, cfg.encoder.latent_dim, generator=torch.Generator().manual_seed(1))  # (N, D)
    stage = build_stage(stage_name, cfg, stats, latents=latents)
    if stage_name != "prior":  # the prior's zero output already gives distinct z per seed (its noise)
        fill_zero_layers(stage, seed=TRAINED_STAGES.index(stage_name))
    extra = stats.as_tensors(STATS_PREFIX) if stage_name in ("base", "upsampler") else {}
    with tempfile.TemporaryDirectory(prefix=f"rodin-test-{stage_name}-") as folder:
        save_checkpoint(folder, modules=stage.modules, optimizers=stage.optimizers, step=0, config=stage.config(),
                        extra_tensors=extra)
        commit_stage_checkpoint(out, stage_name, folder, stage.config(), {"step": 0, "final": True})


def make_generation_root(root: Path, cfg: RodinConfig | None = None, stages: tuple[str, ...] = STAGE_NAMES,
                         decoder: bool = True) -> str:
    """A dataset root under ``root`` with ``stages``' checkpoints and (with ``decoder``) the decoder."""
    cfg = cfg or generation_config()
    out = str(root)
    for stage_name in stages:
        commit_checkpoint(out, stage_name, cfg)
    if decoder:
        commit_decoder(out, cfg)
    return out
