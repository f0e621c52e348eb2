"""Ground truth vs fitted views of a subject's tri-plane (appendix B.2 fitting, Figs. 13-14 style).

Renders chosen views of the fitted planes through the shared decoder with the deterministic
renderer and pairs each with its ground-truth image composited on the fitting background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rodin_core.imaging import to_uint8
from rodin_core.metrics import psnr
from rodin_core.rendering.renderer import RenderSettings, render_image
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.subject import SubjectViews


@dataclass(frozen=True)
class ViewComparison:
    """One view of a subject: ground truth and fitted render, both (H, W, 3) uint8, and their PSNR."""

    view: int
    truth: np.ndarray
    fitted: np.ndarray
    psnr: float


def compare_views(subject: SubjectViews, planes: torch.Tensor, decoder: TriplaneDecoder, views: Sequence[int],
                  settings: RenderSettings, background: float) -> list[ViewComparison]:
    """Render ``views`` of ``planes`` (3, C, H, W) and compare each with the subject's image of it."""
    targets = subject.target_rgb(background)  # (V, H, W, 3)
    batch = planes.float().unsqueeze(0)  # (1, 3, C, H, W)
    comparisons = []
    for view in views:
        rgb, _ = render_image(batch, decoder, subject.c2w[view], subject.intrinsics[view], subject.height,
                              subject.width, settings, background)  # (H, W, 3)
        rgb = rgb.clamp(0.0, 1.0)
        comparisons.append(ViewComparison(view, to_uint8(targets[view]), to_uint8(rgb),
                                          psnr(rgb.numpy(), targets[view].numpy())))
    return comparisons
