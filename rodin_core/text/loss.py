"""The symmetric contrastive (InfoNCE) loss of CLIP (Radford et al. 2021).

For B matched (image, text) pairs with unit-norm embeddings, the logits are ``scale * I @ T^T``
(B, B); the loss is the mean of the cross-entropy of each image over all texts and of each text
over all images, the diagonal being the right answer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def contrastive_loss(image: Tensor, text: Tensor, scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE of matched rows of ``image`` (B, D) and ``text`` (B, D), unit norm; a scalar."""
    if image.shape != text.shape or image.dim() != 2 or image.shape[0] < 2:
        raise ValueError(f"image and text embeddings must both be (B, D) with B >= 2, got {tuple(image.shape)} "
                         f"and {tuple(text.shape)}")
    logits = scale * image @ text.T  # (B, B)
    labels = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
