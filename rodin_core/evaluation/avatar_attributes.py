"""The attributes of a generated avatar: its tri-plane rendered from near-frontal cameras, then judged.

Text-to-avatar generation and text editing (paper §4.5) are scored by comparing what
:func:`judge_avatar` reads back from the avatar with the attributes the text asked for. The
cameras are those of the corpus rig (``render`` settings) within the classifier's
``max_view_angle_deg`` of the face, the views it was trained on, rendered over ``fit.background``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rodin_core.cameras import make_rig
from rodin_core.config import RodinConfig
from rodin_core.datasets.attribute_views import near_frontal
from rodin_core.evaluation.attributes import AttributeClassifier, judge
from rodin_core.rendering.renderer import RenderSettings
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.turntable import render_views


def judge_cameras(cfg: RodinConfig, max_angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """c2w (V, 4, 4) and intrinsics (V, 3, 3) of the rig's views within ``max_angle_deg`` of the face."""
    r = cfg.render
    rig = make_rig(r.views, r.resolution, r.fov_deg, r.camera_radius, r.elevation_min_deg, r.elevation_max_deg)
    keep = near_frontal(rig.c2w, max_angle_deg)
    return rig.c2w[keep], np.broadcast_to(rig.intrinsics, (len(keep), 3, 3)).copy()


def render_for_judge(planes: Tensor, decoder: TriplaneDecoder, cfg: RodinConfig, max_angle_deg: float) -> Tensor:
    """One avatar's tri-plane (3, C, H, W) rendered from :func:`judge_cameras`: (V, 3, R, R) in [0, 1]."""
    c2w, intrinsics = judge_cameras(cfg, max_angle_deg)
    settings = RenderSettings(coarse_samples=cfg.fit.coarse_samples, fine_samples=cfg.fit.fine_samples, perturb=False)
    frames = render_views(planes, decoder, c2w, intrinsics, cfg.render.resolution, settings, cfg.fit.background)
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # (V, 3, R, R)


def judge_avatar(model: AttributeClassifier, planes: Tensor, decoder: TriplaneDecoder,
                 cfg: RodinConfig, mirror: bool = False) -> dict[str, str]:
    """Attribute -> class that ``model`` reads from the avatar ``planes`` (3, C, H, W) under ``decoder``
    (with the views' mirror images when ``mirror``, see :func:`judge`)."""
    return judge(model, render_for_judge(planes, decoder, cfg, model.cfg.max_view_angle_deg), mirror)
