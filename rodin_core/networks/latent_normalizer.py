"""Standardisation of the conditioning latents z for the latent prior (paper §3.2, appendix B.4).

The prior diffuses standardised latents; the normaliser's buffers are saved in the prior's checkpoint
so that generation maps its samples back to the encoder's z.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_MIN_SCALE = 1e-6


class LatentNormalizer(nn.Module):
    """z <-> (z − mean) / scale, with ``mean`` (D,) and a scalar ``scale`` kept as buffers."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(()))

    @torch.no_grad()
    def fit(self, latents: Tensor) -> LatentNormalizer:
        """Set mean and scale from latents (N, D), N >= 2; returns self."""
        if latents.dim() != 2 or latents.shape[1] != self.mean.shape[0]:
            raise ValueError(f"latents must be (N, {self.mean.shape[0]}), got {tuple(latents.shape)}")
        if latents.shape[0] < 2 or not torch.isfinite(latents).all():
            raise ValueError(f"the prior needs at least 2 finite latents to standardise, got {latents.shape[0]} "
                             f"(finite: {bool(torch.isfinite(latents).all())}); train on more subjects")
        data = latents.to(self.mean.device, torch.float64)
        mean = data.mean(dim=0)  # (D,)
        scale = (data - mean).pow(2).mean().sqrt()
        if scale < _MIN_SCALE:
            raise ValueError(f"all {latents.shape[0]} latents are identical (spread {float(scale):.2e}); the prior "
                             "has nothing to learn: check the encoder that produced them")
        self.mean.copy_(mean.float())
        self.scale.copy_(scale.float())
        return self

    def normalize(self, z: Tensor) -> Tensor:
        """Raw z (B, D) -> standardised (B, D)."""
        return (z - self.mean) / self.scale

    def denormalize(self, z: Tensor) -> Tensor:
        """Standardised (B, D) -> raw z (B, D)."""
        return z * self.scale + self.mean

