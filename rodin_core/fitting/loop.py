"""The tri-plane fitting loop (paper §3.1, Eq. 1, Fig. 3; appendix B.2).

Each subject's tri-plane is optimised so that volume renderings of the field decoded by the shared
MLP (Eq. 1) match its multi-view images under a mean squared error, with sparse (density L1),
smooth (plane total variation) and compact (distortion) regularisers against floaters. Planes are
randomly rescaled during fitting (downsample to a size in [rescale_min, H], upsample back) so the
decoder renders them at every scale the hierarchical diffusion produces (§3.1, Fig. 3).

Fitting runs in two phases (appendix B.2):

* phase A, :func:`fit_shared_decoder`: the decoder and the planes of the first K subjects are
  optimised jointly, one subject's ray batch per step (round-robin); the decoder is then frozen;
* phase B, :func:`fit_subject`: every other subject's planes alone, decoder frozen (warm-started
  from :func:`mean_planes` of phase A), stopping early once the PSNR of held-out views reaches
  ``fit.target_psnr``. A numerical failure of one subject is reported in its :class:`FitResult`,
  never raised, so a shard of subjects carries on.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from rodin_core.config.fit import FitConfig
from rodin_core.datasets.triplane_records import FitResult
from rodin_core.metrics import psnr
from rodin_core.rendering.occupancy import OccupancyGrid
from rodin_core.rendering.rays import camera_rays
from rodin_core.rendering.regularisers import density_l1, distortion_loss, plane_tv
from rodin_core.rendering.renderer import RenderSettings, render_image, render_rays
from rodin_core.triplane.config import TriplaneConfig
from rodin_core.triplane.field import TriplaneDecoder, freeze_decoder, query_field
from rodin_core.triplane.rescale import random_rescale, rescale_planes
from rodin_core.triplane.subject import SubjectViews, split_views

Progress = Callable[[int, float, float | None], None]
"""progress(step, loss, held-out PSNR or None) — called after every optimisation step."""

PLANE_INIT_STD = 0.1
"""Standard deviation of the random normal initialisation of plane features (appendix B.2)."""
FOREGROUND_WEIGHT = 4.0
"""Relative sampling weight of pixels on or next to the subject (alpha > 0, dilated 2 px) vs background."""
PHASE_A_OCCUPANCY_WARMUP = 0.25
"""Fraction of phase A's steps rendered without empty-space skipping, while the decoder and planes take shape."""
FINAL_LR_FRACTION = 0.1
"""The plane learning rate decays exponentially to this fraction of ``fit.lr_planes`` at ``fit.steps``."""
TRAIN_EVAL_VIEWS = 4
"""Training views (evenly spread) rendered for ``FitResult.psnr_train``."""


def init_planes(tri_cfg: TriplaneConfig, generator: torch.Generator) -> torch.Tensor:
    """Random normal planes (3, C, H, W) of the configured size."""
    shape = (3, tri_cfg.channels, tri_cfg.resolution, tri_cfg.resolution)
    return torch.randn(shape, generator=generator) * PLANE_INIT_STD


def mean_planes(results: list[FitResult]) -> torch.Tensor:
    """(3, C, H, W) mean of the successful results' planes: the phase-B warm start from phase A.

    A decoder fitted jointly with K subjects has only seen features like theirs; starting a new
    subject from their mean (rather than from noise it never decoded) avoids an opaque, untrained
    starting field.
    """
    planes = [r.planes for r in results if r.error is None]
    if not planes:
        raise ValueError(f"no successful fit among {len(results)} results to average; re-run phase A")
    return torch.stack(planes).mean(dim=0)  # (K, 3, C, H, W) -> (3, C, H, W)


def subject_generator(seed: int, subject_id: int) -> torch.Generator:
    """The generator of one subject's fit, determined by (fit.seed, subject id)."""
    return torch.Generator().manual_seed(zlib.crc32(f"fit:{seed}:{subject_id}".encode()))


class _RayPool:
    """Every training pixel of a subject as a ray with its target colour and a sampling weight."""

    def __init__(self, subject: SubjectViews, train_idx: list[int], background: float) -> None:
        idx = torch.tensor(train_idx)
        origins, dirs = camera_rays(subject.c2w[idx], subject.intrinsics[idx], subject.height, subject.width)
        self.origins = origins.reshape(-1, 3)  # (Vt * H * W, 3)
        self.dirs = dirs.reshape(-1, 3)  # (Vt * H * W, 3)
        self.targets = subject.target_rgb(background)[idx].reshape(-1, 3)  # (Vt * H * W, 3)
        alpha = subject.alpha()[idx].unsqueeze(1)  # (Vt, 1, H, W)
        near = F.max_pool2d((alpha > 0).float(), kernel_size=5, stride=1, padding=2)  # (Vt, 1, H, W)
        self.weights = (1.0 + (FOREGROUND_WEIGHT - 1.0) * near).reshape(-1)  # (Vt * H * W,)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(origins (n, 3), dirs (n, 3), target rgb (n, 3)) of ``n`` weighted random pixels."""
        pick = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.origins[pick], self.dirs[pick], self.targets[pick]


def _settings(fit_cfg: FitConfig, perturb: bool, occupancy: OccupancyGrid | None = None) -> RenderSettings:
    return RenderSettings(coarse_samples=fit_cfg.coarse_samples, fine_samples=fit_cfg.fine_samples,
                          bound=1.0, perturb=perturb, occupancy=occupancy)


def field_density(planes: torch.Tensor, decoder: TriplaneDecoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """points (N, 3) -> density (N,) of planes (3, C, H, W) under ``decoder`` (for the occupancy grid)."""

    def density(points: torch.Tensor) -> torch.Tensor:
        up = torch.zeros_like(points)
        up[:, 2] = 1.0  # density does not depend on the viewing direction
        return query_field(planes.unsqueeze(0), decoder, points.unsqueeze(0), up.unsqueeze(0))[0][0]

    return density


def occupancy_grid(fit_cfg: FitConfig, bound: float = 1.0) -> OccupancyGrid:
    """The empty-space grid of ``fit.occupancy_resolution`` cells a side whose skipped cells hide at most
    ``fit.occupancy_opacity`` of a ray each: density threshold sigma_min = -ln(1 - opacity) / cell side."""
    cell = 2.0 * bound / fit_cfg.occupancy_resolution
    return OccupancyGrid(fit_cfg.occupancy_resolution, bound, sigma_min=-math.log1p(-fit_cfg.occupancy_opacity) / cell)


def _step_loss(planes: torch.Tensor, decoder: TriplaneDecoder, pool: _RayPool, tri_cfg: TriplaneConfig,
               fit_cfg: FitConfig, generator: torch.Generator, occupancy: OccupancyGrid | None = None,
               rays: int | None = None) -> torch.Tensor:
    """Eq. 1 rendering loss of one random batch of ``rays`` rays (default ``fit.rays_per_step``): MSE +
    sparse, smooth and compact regularisers."""
    batch = planes.unsqueeze(0)  # (1, 3, C, H, W)
    rendered = batch
    if fit_cfg.rescale_prob > 0 and torch.rand((), generator=generator).item() < fit_cfg.rescale_prob:
        rendered = random_rescale(batch, tri_cfg.rescale_min, generator)
    origins, dirs, target = pool.sample(rays or fit_cfg.rays_per_step, generator)
    out = render_rays(rendered, decoder, origins, dirs, _settings(fit_cfg, True, occupancy), fit_cfg.background,
                      generator=generator)
    loss = F.mse_loss(out.rgb, target)
    if fit_cfg.sparsity_weight > 0:
        loss = loss + fit_cfg.sparsity_weight * density_l1(out.sigma)
    if fit_cfg.tv_weight > 0:
        loss = loss + fit_cfg.tv_weight * plane_tv(batch)
    if fit_cfg.distortion_weight > 0:
        loss = loss + fit_cfg.distortion_weight * distortion_loss(out.weights, out.t_edges).mean()
    return loss


@torch.no_grad()
def evaluate_psnr(planes: torch.Tensor, decoder: TriplaneDecoder, subject: SubjectViews, view_indices: list[int],
                  tri_cfg: TriplaneConfig, fit_cfg: FitConfig, plane_size: int | None = None,
                  occupancy: OccupancyGrid | None = None) -> float:
    """Mean PSNR (dB) of full renders of ``view_indices`` against the subject's composited images.

    ``planes`` (3, C, H, W) are rendered as they are, or after ``rescale_planes(planes, plane_size)``
    (the Fig. 3 check of how a low-resolution tri-plane renders). Deterministic (no jitter).
    ``occupancy`` skips empty space as in training (early-stopping checks); None renders exactly.
    """
    if not view_indices:
        raise ValueError(f"subject {subject.subject_id}: no views to evaluate; pass at least one view index")
    if planes.dim() != 4 or planes.shape[0] != 3 or planes.shape[1] != tri_cfg.channels:
        raise ValueError(f"planes must be (3, {tri_cfg.channels}, H, W), got {tuple(planes.shape)}")
    batch = planes.unsqueeze(0)  # (1, 3, C, H, W)
    if plane_size is not None:
        batch = rescale_planes(batch, plane_size)
    targets = subject.target_rgb(fit_cfg.background)  # (V, H, W, 3)
    settings = _settings(fit_cfg, False, occupancy)
    scores = []
    for view in view_indices:
        rgb, _ = render_image(batch, decoder, subject.c2w[view], subject.intrinsics[view], subject.height,
                              subject.width, settings, fit_cfg.background)
        scores.append(psnr(rgb.clamp(0.0, 1.0).numpy(), targets[view].numpy()))
    return float(sum(scores) / len(scores))


def _data_error(subject: SubjectViews, fit_cfg: FitConfig) -> str | None:
    """Why this subject's data cannot be fitted, or None."""
    images = subject.images
    if images.dim() != 4 or images.shape[-1] != 4:
        return f"images must be (V, H, W, 4), got {tuple(images.shape)}"
    if not torch.isfinite(images).all():
        return f"images hold {int((~torch.isfinite(images)).sum())} NaN/inf values"
    if images.min() < 0 or images.max() > 1:
        return f"images lie in [{float(images.min())}, {float(images.max())}], expected [0, 1]"
    if not (torch.isfinite(subject.c2w).all() and torch.isfinite(subject.intrinsics).all()):
        return "cameras hold NaN/inf values"
    if subject.n_views < fit_cfg.holdout_views + 2:
        return (f"{subject.n_views} views cannot hold out fit.holdout_views={fit_cfg.holdout_views} "
                "and still train on view 0 and one more")
    return None


def _train_views(train_idx: list[int]) -> list[int]:
    count = min(TRAIN_EVAL_VIEWS, len(train_idx))
    return [train_idx[int(k * len(train_idx) / count)] for k in range(count)]


def fit_subject(subject: SubjectViews, decoder: TriplaneDecoder, tri_cfg: TriplaneConfig, fit_cfg: FitConfig,
                progress: Progress | None = None, init: torch.Tensor | None = None) -> FitResult:
    """Phase B: fit one subject's planes with the decoder frozen; stop at ``fit.target_psnr`` held out.

    With ``fit.patience`` > 0 it also stops on a plateau: after that many evaluations in a row that
    raised the best held-out PSNR by less than ``fit.min_improvement`` dB.

    ``decoder`` must be frozen (:func:`freeze_decoder`). ``init`` (3, C, H, W) warm-starts the
    planes (default: random, seeded by ``fit.seed`` and the subject id). With
    ``fit.occupancy_resolution`` > 0 the field is queried only in the cells of an occupancy grid
    refreshed from the planes every ``fit.occupancy_every`` steps (empty-space skipping); the
    returned held-out PSNR is then measured again without it. NaN/inf losses and bad
    data end in a :class:`FitResult` whose ``error`` says what happened.
    """
    if decoder.training or any(p.requires_grad for p in decoder.parameters()):
        raise ValueError("fit_subject needs a frozen decoder (eval mode, no gradients); "
                         "call freeze_decoder(decoder) first")
    start = time.perf_counter()
    generator = subject_generator(fit_cfg.seed, subject.subject_id)
    planes = (init.detach().clone().float() if init is not None else init_planes(tri_cfg, generator))
    expected = (3, tri_cfg.channels, tri_cfg.resolution, tri_cfg.resolution)
    if tuple(planes.shape) != expected:
        raise ValueError(f"init planes must be {expected} for this triplane config, got {tuple(planes.shape)}")
    problem = _data_error(subject, fit_cfg)
    if problem is not None:
        return FitResult(subject.subject_id, planes, math.nan, math.nan, 0, time.perf_counter() - start,
                         error=f"subject {subject.subject_id}: bad data: {problem}")
    train_idx, held_idx = split_views(subject.n_views, fit_cfg.holdout_views)
    eval_idx = held_idx or _train_views(train_idx)
    pool = _RayPool(subject, train_idx, fit_cfg.background)
    planes.requires_grad_(True)
    optimiser = torch.optim.Adam([planes], lr=fit_cfg.lr_planes)
    gamma = FINAL_LR_FRACTION ** (1.0 / max(fit_cfg.steps, 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma)

    occupancy = occupancy_grid(fit_cfg) if fit_cfg.occupancy_resolution > 0 else None

    def refresh_occupancy() -> None:
        if occupancy is not None:
            occupancy.update(field_density(planes.detach(), decoder))

    def evaluate(step: int) -> float:
        score = evaluate_psnr(planes.detach(), decoder, subject, eval_idx, tri_cfg, fit_cfg, occupancy=occupancy)
        curve.append((step, score))
        return score

    curve: list[tuple[int, float]] = []
    refresh_occupancy()
    best_planes, best = planes.detach().clone(), evaluate(0)
    step, error, last, stale = 0, None, None, 0
    if not math.isfinite(best):
        error = f"subject {subject.subject_id}: held-out PSNR of the initial planes is {best} (decoder output not finite)"
    while error is None and step < fit_cfg.steps and best < fit_cfg.target_psnr:
        loss = _step_loss(planes, decoder, pool, tri_cfg, fit_cfg, generator, occupancy)
        if not torch.isfinite(loss):
            error = f"subject {subject.subject_id}: non-finite loss {loss.item()} at step {step + 1}"
            break
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        step += 1
        last = None
        if step % fit_cfg.occupancy_every == 0:
            refresh_occupancy()
        if step % fit_cfg.eval_every == 0 or step == fit_cfg.steps:
            last = evaluate(step)
            if not math.isfinite(last):
                error = f"subject {subject.subject_id}: held-out PSNR is {last} at step {step}"
                break
            stale = stale + 1 if last < best + fit_cfg.min_improvement else 0
            if last > best:
                best, best_planes = last, planes.detach().clone()
        if progress is not None:
            progress(step, loss.item(), last)
        if fit_cfg.patience and stale >= fit_cfg.patience:
            break  # a plateau below the target: more steps would not pay for themselves
    if error is None and occupancy is not None and held_idx:  # report the exact render, not the skipping one
        best = evaluate_psnr(best_planes, decoder, subject, held_idx, tri_cfg, fit_cfg)
    psnr_train = math.nan if error else evaluate_psnr(best_planes, decoder, subject, _train_views(train_idx),
                                                      tri_cfg, fit_cfg)
    return FitResult(subject.subject_id, best_planes, best if held_idx else math.nan, psnr_train, step,
                     time.perf_counter() - start, curve, error)


def fit_shared_decoder(subjects: list[SubjectViews], tri_cfg: TriplaneConfig, fit_cfg: FitConfig,
                       progress: Progress | None = None) -> tuple[TriplaneDecoder, list[FitResult]]:
    """Phase A: fit the shared decoder jointly with the planes of ``subjects`` (the first K).

    Each step renders ``fit.shared_batch`` subjects (round-robin groups; ``fit.rays_per_step`` split
    among them) and moves the decoder and their planes on the mean of their losses, for
    ``fit.shared_steps`` steps; each subject's planes have their own Adam state so they move only on
    their own steps. After the first
    :data:`PHASE_A_OCCUPANCY_WARMUP` of the steps, each subject has an occupancy grid (refreshed from
    its planes and the current decoder every ``fit.occupancy_every`` of its steps) that skips empty
    space, as in phase B. Returns the frozen
    decoder and one :class:`FitResult` per subject (planes at the end of phase A). Unlike phase B,
    a non-finite loss raises: the decoder every later subject depends on would be broken.
    """
    if not subjects:
        raise ValueError("phase A needs at least one subject; set fit.shared_subjects >= 1")
    for subject in subjects:
        problem = _data_error(subject, fit_cfg)
        if problem is not None:
            raise ValueError(f"phase A subject {subject.subject_id}: bad data: {problem}; "
                             "drop it from the shared subjects")
    start = time.perf_counter()
    torch.manual_seed(zlib.crc32(f"decoder:{fit_cfg.seed}".encode()))
    decoder = TriplaneDecoder(tri_cfg.decoder).train()
    generators = [subject_generator(fit_cfg.seed, s.subject_id) for s in subjects]
    planes = [init_planes(tri_cfg, g).requires_grad_(True) for g in generators]
    splits = [split_views(s.n_views, fit_cfg.holdout_views) for s in subjects]
    pools = [_RayPool(s, train, fit_cfg.background) for s, (train, _) in zip(subjects, splits)]
    gamma = FINAL_LR_FRACTION ** (1.0 / fit_cfg.shared_steps)
    decoder_opt = torch.optim.Adam(decoder.parameters(), lr=fit_cfg.lr_decoder)
    decoder_sched = torch.optim.lr_scheduler.ExponentialLR(decoder_opt, gamma)
    plane_opts = [torch.optim.Adam([p], lr=fit_cfg.lr_planes) for p in planes]
    curves: list[list[tuple[int, float]]] = [[] for _ in subjects]
    steps = [0] * len(subjects)
    grids: list[OccupancyGrid | None] = [None] * len(subjects)
    warmup = int(PHASE_A_OCCUPANCY_WARMUP * fit_cfg.shared_steps)
    group = min(fit_cfg.shared_batch, len(subjects))
    groups = [list(range(i, min(i + group, len(subjects)))) for i in range(0, len(subjects), group)]
    for step in range(1, fit_cfg.shared_steps + 1):
        members = groups[(step - 1) % len(groups)]
        for k in members:
            if fit_cfg.occupancy_resolution > 0 and step > warmup and steps[k] % fit_cfg.occupancy_every == 0:
                grids[k] = grids[k] or occupancy_grid(fit_cfg)
                grids[k].update(field_density(planes[k].detach(), decoder))
        rays = max(1, fit_cfg.rays_per_step // len(members))
        loss = sum(_step_loss(planes[k], decoder, pools[k], tri_cfg, fit_cfg, generators[k], grids[k], rays)
                   for k in members) / len(members)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"phase A: non-finite loss {loss.item()} at step {step} (subjects "
                                     f"{[subjects[k].subject_id for k in members]}); lower fit.lr_decoder="
                                     f"{fit_cfg.lr_decoder} or fit.lr_planes={fit_cfg.lr_planes}")
        decoder_opt.zero_grad(set_to_none=True)
        for k in members:
            plane_opts[k].zero_grad(set_to_none=True)
        loss.backward()
        decoder_opt.step()
        decoder_sched.step()
        for k in members:
            plane_opts[k].step()
            for param_group in plane_opts[k].param_groups:
                param_group["lr"] = fit_cfg.lr_planes * gamma**step
            steps[k] += 1
        score = None
        if step % fit_cfg.eval_every == 0:
            k = members[0]
            decoder.eval()
            score = evaluate_psnr(planes[k].detach(), decoder, subjects[k], splits[k][1] or splits[k][0][:1],
                                  tri_cfg, fit_cfg)
            decoder.train()
            curves[k].append((steps[k], score))
        if progress is not None:
            progress(step, loss.item(), score)
    freeze_decoder(decoder)
    seconds = (time.perf_counter() - start) / len(subjects)
    results = []
    for k, subject in enumerate(subjects):
        final = planes[k].detach().clone()
        train, held = splits[k]
        held_psnr = evaluate_psnr(final, decoder, subject, held, tri_cfg, fit_cfg) if held else math.nan
        train_psnr = evaluate_psnr(final, decoder, subject, _train_views(train), tri_cfg, fit_cfg)
        results.append(FitResult(subject.subject_id, final, held_psnr, train_psnr, steps[k], seconds,
                                 curves[k]))
    return decoder, results
