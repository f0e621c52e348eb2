"""Small stage configs and synthetic data shared by the stage, sampling and generation tests."""

from __future__ import annotations

import torch

from rodin_core.config import RodinConfig, load_config
from rodin_core.datasets.triplanes import TriplaneBatch
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.stats import PlaneStats

SMALL_OVERRIDES = (
    "triplane.channels=4", "triplane.resolution=16", "triplane.rescale_min=8",
    "render.resolution=32", "render.views=4", "fit.coarse_samples=8", "fit.fine_samples=8",
    "encoder.latent_dim=32", "encoder.image_size=16", "encoder.learned_channels=8",
    "base.unet.model_channels=16", "base.unet.attention_resolutions=[4]", "base.unet.aware_resolutions=[8]",
    "base.unet.num_head_channels=16", "base.diffusion.steps=100", "base.diffusion.sampling_steps=10",
    "upsampler.unet.model_channels=8", "upsampler.unet.aware_resolutions=[16]", "upsampler.unet.num_head_channels=8",
    "upsampler.diffusion.steps=100", "upsampler.diffusion.sampling_steps=10", "upsampler.patch_size=18",
    "prior.mlp.width=64", "prior.mlp.depth=2", "prior.diffusion.steps=100", "prior.diffusion.sampling_steps=10",
)


PAPER_OBJECTIVE = ("base.diffusion.mean_type=eps", "base.diffusion.var_type=learned_range", "base.diffusion.loss=hybrid")
"""The paper's base objective (§3.2: ε with the hybrid loss and a learned variance), which ``tiny`` replaces with x0."""


def small_config(*overrides: str) -> RodinConfig:
    """The tiny preset shrunk further (C=4, 16^2 planes, base 8^2) so that a step takes milliseconds."""
    return load_config("tiny", overrides=SMALL_OVERRIDES + overrides)


def plane_stats(cfg: RodinConfig) -> PlaneStats:
    channels = cfg.triplane.channels
    return PlaneStats(torch.linspace(-0.2, 0.2, channels), torch.full((channels,), 0.5))


def synthetic_batch(cfg: RodinConfig, size: int, seed: int = 0) -> TriplaneBatch:
    """Smooth random raw tri-planes and RGBA frontal views."""
    generator = torch.Generator().manual_seed(seed)
    channels, res = cfg.triplane.channels, cfg.triplane.resolution
    coarse = torch.randn(size * 3, channels, 4, 4, generator=generator)
    planes = torch.nn.functional.interpolate(coarse, size=(res, res), mode="bicubic", align_corners=True)
    image = cfg.render.resolution
    return TriplaneBatch(torch.arange(size, dtype=torch.int64) + 100,
                         0.5 * planes.reshape(size, 3, channels, res, res),  # (B, 3, C, H, W)
                         torch.rand(size, 4, image, image, generator=generator))  # (B, 4, Hi, Wi)


def decoder_for(cfg: RodinConfig, density_bias: float = 0.0) -> TriplaneDecoder:
    """A random decoder whose field is visible (density bias raised from the near-empty default)."""
    torch.manual_seed(0)
    decoder = TriplaneDecoder(cfg.triplane.decoder)
    with torch.no_grad():
        decoder.density_and_features.bias[0] = density_bias
    return decoder


def clustered_latents(count: int = 16, dim: int = 32) -> torch.Tensor:
    """Latents around two centres, in an arbitrary scale and offset (as an encoder would give)."""
    generator = torch.Generator().manual_seed(0)
    centres = 3.0 * torch.randn(2, dim, generator=generator) + 5.0
    return centres[torch.arange(count) % 2] + 0.1 * torch.randn(count, dim, generator=generator)
