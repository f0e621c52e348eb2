"""Image features for distribution metrics of generated samples (paper §4.3).

The Fréchet distance (:mod:`.frechet`) and nearest neighbours in feature space (:mod:`.neighbours`)
compare images through a frozen network's features. Two extractors, both offline:

- :class:`VGGFeatures` (``"vgg16-stlpips"``): the shift-tolerant VGG16 whose weights ship inside the
  ``stlpips-pytorch`` wheel (:class:`rodin_core.networks.perceptual.STLPIPS`, Ghildyal & Liu 2022).
  Images are resized to ``image_size`` (224, the VGG's training size; bilinear, antialiased) and
  ImageNet-normalised as the wheel's scaling layer does (mean (0.485, 0.456, 0.406), std (0.229,
  0.224, 0.225)); the feature is relu5_3, the deepest tap, averaged over space: 512 numbers per
  image. It is the most semantic of the five taps, invariant to where things are in the image, and
  as long as a CLIP ViT-B/32 embedding, so a few hundred images estimate its covariance.
- :class:`CLIPFeatures` (``"clip:<model>:<tag>"``): the projected, unnormalised image embedding of an
  open_clip image tower (:class:`rodin_core.encoders.CLIPImageEncoder`). Kynkäänniemi et al. 2023
  ("The Role of ImageNet Classes in Fréchet Inception Distance") show that Inception features
  reward matching ImageNet class statistics rather than image quality, and that CLIP features do
  not: the Fréchet distance on them (CLIP-FID) is the one reported in §4.3.

Both take RGB images (N, 3, H, W) in [0, 1], run in eval mode without gradients in batches of
``batch_size``, and return float32 features (N, F) on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from rodin_core.encoders import (
    CLIP_SAFE_WEIGHTS,
    CLIPImageEncoder,
    resolve_clip_weights,
)
from rodin_core.networks.perceptual import STLPIPS, minimum_patch_size

VGG_FEATURES = "vgg16-stlpips"
"""Name of :class:`VGGFeatures`."""
VGG_TAP = 4
"""Index of relu5_3 among the taps of :meth:`STLPIPS.taps`."""


@runtime_checkable
class ImageFeatures(Protocol):
    """Images (N, 3, H, W) in [0, 1] -> features (N, dim), with a name saying which network made them."""

    name: str
    dim: int

    def __call__(self, images: Tensor) -> Tensor: ...


def check_images(images: Tensor, what: str = "images") -> Tensor:
    """``images`` as float32 (N, 3, H, W), or a ValueError naming the shape or range that is wrong."""
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty RGB batch (N, 3, H, W), got {tuple(images.shape)}")
    images = images.float()
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{what} must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]; divide uint8 by 255")
    return images


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


class VGGFeatures:
    """Spatially averaged relu5_3 of the shift-tolerant VGG16 of ``stlpips-pytorch``: images -> (N, 512)."""

    name = VGG_FEATURES
    dim = 512

    def __init__(self, image_size: int = 224, batch_size: int = 32, device: str | torch.device = "cpu") -> None:
        smallest = minimum_patch_size()
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < smallest:
            raise ValueError(f"image_size must be an integer of at least {smallest} (the VGG's smallest input), "
                             f"got {image_size!r}")
        self.image_size, self.batch_size = image_size, _check_batch_size(batch_size)
        self.device = torch.device(device)
        self.net = STLPIPS().to(self.device).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """Images (N, 3, H, W) in [0, 1] -> features (N, 512) float32 on the CPU."""
        images = check_images(images)
        out = []
        for batch in images.split(self.batch_size):
            batch = batch.to(self.device)  # (B, 3, H, W)
            if batch.shape[-2:] != (self.image_size, self.image_size):
                batch = F.interpolate(batch, size=(self.image_size, self.image_size), mode="bilinear",
                                      align_corners=False, antialias=True).clamp(0.0, 1.0)  # (B, 3, S, S)
            relu5_3 = self.net.taps(batch)[VGG_TAP]  # (B, 512, h, w)
            out.append(relu5_3.mean(dim=(2, 3)).float().cpu())  # (B, 512)
        return torch.cat(out)


class CLIPFeatures:
    """Projected image embeddings of an open_clip image tower, unnormalised (as CLIP-FID uses): images -> (N, D).

    ``pretrained``: an open_clip tag whose weights are in the local Hugging Face cache, a local
    ``.safetensors`` path, or None for random weights (tests only). Missing weights raise
    :class:`rodin_core.encoders.EncoderUnavailableError` naming both options; nothing is downloaded.
    ``model_overrides`` go to ``open_clip.create_model`` (e.g. a smaller ``vision_cfg`` in tests).
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "openai",
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        cache_dir: str | os.PathLike | None = None,
        model_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        if pretrained is not None:  # fails early, with the path option of this class
            resolve_clip_weights(model_name, pretrained, cache_dir, remedy=f"pass pretrained= the path of a local "
                                 f"{CLIP_SAFE_WEIGHTS} file (weights saved with safetensors)")
        self.encoder = CLIPImageEncoder(model_name, pretrained, latent_dim=None, device=device, cache_dir=cache_dir,
                                        model_overrides=model_overrides)
        self.name = f"clip:{model_name}:{pretrained if pretrained is not None else 'random'}"
        self.dim = self.encoder.latent_dim
        self.batch_size = _check_batch_size(batch_size)

    def __call__(self, images: Tensor) -> Tensor:
        """Images (N, 3, H, W) in [0, 1] -> embeddings (N, D) float32 on the CPU."""
        images = check_images(images)
        return torch.cat([self.encoder.embed(batch).cpu() for batch in images.split(self.batch_size)])
