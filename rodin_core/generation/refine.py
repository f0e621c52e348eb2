"""Turntables through the convolutional refiner (paper §3.3, Fig. 8): render at the refiner's input side, refine.

Each orbit camera (:func:`rodin_core.turntable.orbit_cameras`) is volume-rendered with colour,
opacity and depth (:func:`rodin_core.rendering.renderer.render_layers`) and turned into a frame
``scale`` times larger, once by the refiner and once by bilinear up-sampling, for comparison.
"""

from __future__ import annotations

import numpy as np
import torch

from rodin_core.config import RodinConfig
from rodin_core.generation.job import TURNTABLE_ELEVATION_DEG, render_settings
from rodin_core.imaging import contact_sheet, to_uint8
from rodin_core.networks.refiner import bilinear_upsample
from rodin_core.networks.refiner_io import TrainedRefiner
from rodin_core.rendering.renderer import render_layers
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.turntable import orbit_cameras

COMPARISON_FRAMES = 4
"""Turntable frames in the side-by-side comparison."""


@torch.no_grad()
def refined_turntable(cfg: RodinConfig, decoder: TriplaneDecoder, planes: torch.Tensor, views: int, resolution: int,
                      refiner: TrainedRefiner) -> tuple[np.ndarray, np.ndarray]:
    """``views`` orbit frames of raw planes (3, C, H, W) rendered at ``resolution`` and up-sampled by the refiner's
    scale: (refined, bilinear), each uint8 (views, s R, s R, 3)."""
    device = next(decoder.parameters()).device
    model = refiner.model.to(device)
    batch = planes.to(device, torch.float32)[None]  # (1, 3, C, H, W)
    c2w, intrinsics = orbit_cameras(views, TURNTABLE_ELEVATION_DEG, cfg.render.camera_radius, cfg.render.fov_deg,
                                    resolution)
    settings = render_settings(cfg)
    refined, bilinear = [], []
    for pose, matrix in zip(c2w, intrinsics, strict=True):
        rgb, opacity, depth = render_layers(batch, decoder, torch.as_tensor(pose), torch.as_tensor(matrix),
                                            resolution, resolution, settings, cfg.fit.background)
        refined.append(to_uint8(model.refine(rgb, opacity, depth, float(refiner.meta["camera_radius"])).cpu()))
        up = bilinear_upsample(rgb.permute(2, 0, 1)[None], refiner.scale)[0].clamp(0.0, 1.0)  # (3, sR, sR)
        bilinear.append(to_uint8(up.permute(1, 2, 0).contiguous().cpu()))
    return np.stack(refined), np.stack(bilinear)


def comparison_sheet(refined: np.ndarray, bilinear: np.ndarray, count: int = COMPARISON_FRAMES) -> np.ndarray:
    """``count`` evenly spaced frames, bilinear above refined, labelled -> RGB uint8."""
    picks = np.linspace(0, len(refined), num=min(count, len(refined)), endpoint=False).astype(int)
    images = [bilinear[k] for k in picks] + [refined[k] for k in picks]
    labels = [f"frame {k}: bilinear" for k in picks] + [f"frame {k}: refined" for k in picks]
    return contact_sheet(images, len(picks), labels)
