"""Synthetic images for the evaluation tests: smooth random colour fields."""

import torch
import torch.nn.functional as F

VGG_SIZE = 64
"""Side the VGG reads in these tests (224 in use): a forward pass of 24 images takes a few seconds on one thread."""


def smooth_images(n: int, size: int = 64, seed: int = 0, cells: int = 5) -> torch.Tensor:
    """(n, 3, size, size) in [0, 1]: random ``cells x cells`` colour grids upsampled bicubically."""
    coarse = torch.rand(n, 3, cells, cells, generator=torch.Generator().manual_seed(seed))  # (n, 3, c, c)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True).clamp(0.0, 1.0)


def add_noise(images: torch.Tensor, std: float, seed: int = 1) -> torch.Tensor:
    """``images`` plus Gaussian noise of ``std``, clipped to [0, 1]."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images + std * noise).clamp(0.0, 1.0)
