"""A plain reference tri-plane NeRF fitter, the yardstick of ``fit_speed.py`` (paper §3.1, Eq. 1; appendix B.2).

Phase B of appendix B.2 (one subject's planes, shared decoder frozen) written the textbook way, so
that the project's fitter (:func:`rodin_core.fitting.loop.fit_subject`) is compared with an
honest baseline:

* every training pixel whose ray meets the cube [-1, 1]^3 is a candidate ray, drawn uniformly
  (rays that miss the cube render the background whatever the planes hold);
* N stratified samples per ray between the ray's entry into and exit from the cube, one per equal
  bin, jittered within it (NeRF, Mildenhall et al. 2020, Eq. 2); no importance sampling, no
  empty-space skipping;
* NeRF's Eq. 3 compositing over the fitting background, written out here;
* mean squared error only, plain Adam on the planes at ``fit.lr_planes``: no learning-rate
  schedule, no regulariser, no random rescaling;
* held-out PSNR every ``fit.eval_every`` steps with the same dense renderer (bin centres, no
  jitter); it stops at ``fit.target_psnr``, after ``max_steps`` steps or past ``time_limit`` seconds.

It shares only the field (:func:`~rodin_core.triplane.field.query_field`, tri-plane sampling and
the decoder of Eq. 1) and the ray helpers with the project, never its renderer or fitting loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from rodin_core.config import FitConfig, TriplaneConfig
from rodin_core.metrics import psnr
from rodin_core.rendering.rays import camera_rays, ray_box_intersect
from rodin_core.triplane.field import TriplaneDecoder, query_field
from rodin_core.triplane.subject import SubjectViews, split_views

INIT_STD = 0.1
"""Standard deviation of the random normal plane initialisation (the project's, appendix B.2)."""
EVAL_CHUNK = 8192
"""Rays per forward pass when rendering a whole view."""


@dataclass
class ReferenceResult:
    """The outcome of one reference fit."""

    planes: Tensor
    """(3, C, H, W) planes at the best held-out evaluation."""
    psnr_holdout: float
    """Best mean held-out PSNR (dB) seen, rendered by :func:`render_dense`."""
    reached: bool
    """Whether ``psnr_holdout`` reached ``fit.target_psnr``."""
    steps: int
    """Optimisation steps taken."""
    seconds: float
    """Wall-clock seconds of the whole fit, evaluations included."""
    psnr_curve: list[tuple[int, float]] = field(default_factory=list)
    """(step, held-out PSNR) at each evaluation."""


def render_dense(planes: Tensor, decoder: TriplaneDecoder, origins: Tensor, directions: Tensor, samples: int,
                 background: float, generator: torch.Generator | None = None) -> Tensor:
    """Colours (R, 3) of rays (R, 3) through planes (1, 3, C, H, W), ``samples`` stratified points each.

    With ``generator`` each point is jittered uniformly within its bin, otherwise it sits at the
    bin centre. Rays that miss the cube have zero-length bins and render ``background``.
    """
    rays = origins.shape[0]
    near, far, _ = ray_box_intersect(origins, directions)  # (R,) each
    offsets = (torch.rand((rays, samples), generator=generator) if generator is not None
               else torch.full((rays, samples), 0.5))  # (R, N) position within each bin
    bin_length = ((far - near) / samples)[:, None]  # (R, 1)
    t = near[:, None] + (torch.arange(samples, dtype=near.dtype) + offsets) * bin_length  # (R, N)
    points = origins[:, None, :] + directions[:, None, :] * t[..., None]  # (R, N, 3)
    dirs = directions[:, None, :].expand(rays, samples, 3)  # (R, N, 3)
    sigma, rgb = query_field(planes, decoder, points.reshape(1, rays * samples, 3),
                             dirs.reshape(1, rays * samples, 3))  # (1, R*N), (1, R*N, 3)
    tau = sigma.reshape(rays, samples) * bin_length  # (R, N) optical depth of each bin
    transmittance = torch.exp(-torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1].cumsum(-1)], dim=-1))  # (R, N)
    weights = transmittance * (1.0 - torch.exp(-tau))  # (R, N)
    colour = (weights[..., None] * rgb.reshape(rays, samples, 3)).sum(dim=1)  # (R, 3)
    return colour + (1.0 - weights.sum(dim=-1, keepdim=True)) * background


@torch.no_grad()
def heldout_psnr(planes: Tensor, decoder: TriplaneDecoder, subject: SubjectViews, views: list[int], samples: int,
                 background: float) -> float:
    """Mean PSNR (dB) of dense, unjittered renders of ``views`` against the composited images."""
    targets = subject.target_rgb(background)  # (V, H, W, 3)
    origins, directions = camera_rays(subject.c2w[views], subject.intrinsics[views], subject.height,
                                      subject.width)  # (v, H, W, 3) each
    scores = []
    for k, view in enumerate(views):
        o, d = origins[k].reshape(-1, 3), directions[k].reshape(-1, 3)  # (H*W, 3)
        rgb = torch.cat([render_dense(planes, decoder, o[i:i + EVAL_CHUNK], d[i:i + EVAL_CHUNK], samples, background)
                         for i in range(0, o.shape[0], EVAL_CHUNK)])  # (H*W, 3)
        scores.append(psnr(rgb.reshape(targets[view].shape).clamp(0.0, 1.0).numpy(), targets[view].numpy()))
    return float(sum(scores) / len(scores))


def reference_fit(subject: SubjectViews, decoder: TriplaneDecoder, tri_cfg: TriplaneConfig, fit_cfg: FitConfig,
                  samples: int, max_steps: int, time_limit: float,
                  progress: Callable[[int, float, float | None], None] | None = None) -> ReferenceResult:
    """Fit ``subject``'s planes with ``decoder`` frozen, the plain way (module docstring).

    Uses ``fit.rays_per_step``, ``fit.lr_planes``, ``fit.background``, ``fit.holdout_views``,
    ``fit.eval_every``, ``fit.target_psnr`` and ``fit.seed``; ``progress(step, loss, held-out
    PSNR or None)`` is called after every step, as the project's fitter does.
    """
    if any(p.requires_grad for p in decoder.parameters()):
        raise ValueError("reference_fit needs a frozen decoder (no parameter requiring gradients)")
    train, held = split_views(subject.n_views, fit_cfg.holdout_views)
    if not held:
        raise ValueError(f"reference_fit stops on held-out PSNR; fit.holdout_views={fit_cfg.holdout_views} holds "
                         f"out no view of subject {subject.subject_id}, set it to 1 or more")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(fit_cfg.seed * 1_000_003 + subject.subject_id)
    origins, directions = camera_rays(subject.c2w[train], subject.intrinsics[train], subject.height,
                                      subject.width)  # (Vt, H, W, 3) each
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)  # (Vt*H*W, 3)
    targets = subject.target_rgb(fit_cfg.background)[train].reshape(-1, 3)  # (Vt*H*W, 3)
    _, _, hit = ray_box_intersect(origins, directions)
    origins, directions, targets = origins[hit], directions[hit], targets[hit]  # (P, 3) each
    shape = (1, 3, tri_cfg.channels, tri_cfg.resolution, tri_cfg.resolution)
    planes = (torch.randn(shape, generator=generator) * INIT_STD).requires_grad_(True)  # (1, 3, C, H, W)
    optimiser = torch.optim.Adam([planes], lr=fit_cfg.lr_planes)

    def evaluate() -> float:
        return heldout_psnr(planes.detach(), decoder, subject, held, samples, fit_cfg.background)

    best = evaluate()
    best_planes, curve, step = planes.detach().clone(), [(0, best)], 0
    while best < fit_cfg.target_psnr and step < max_steps and time.perf_counter() - start < time_limit:
        pick = torch.randint(origins.shape[0], (fit_cfg.rays_per_step,), generator=generator)  # (R,)
        rgb = render_dense(planes, decoder, origins[pick], directions[pick], samples, fit_cfg.background, generator)
        loss = F.mse_loss(rgb, targets[pick])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        score = None
        if step % fit_cfg.eval_every == 0:
            score = evaluate()
            curve.append((step, score))
            if score > best:
                best, best_planes = score, planes.detach().clone()
        if progress is not None:
            progress(step, loss.item(), score)
    return ReferenceResult(best_planes[0], best, math.isfinite(best) and best >= fit_cfg.target_psnr, step,
                           time.perf_counter() - start, curve)
