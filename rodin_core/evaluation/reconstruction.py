"""Conditional avatar reconstruction metrics (paper §4.5, appendix C.5, Table 4).

Table 4 measures how well the model hallucinates a subject's 3D avatar from a single image: the
frontal view of a test subject is inverted (z = E(view 0), then the base model and the upsampler,
§4.5), the avatar is rendered from the subject's own cameras, and PSNR / SSIM / LPIPS are computed
between those renders and the subject's ground-truth views, averaged over test subjects that
diffusion training never saw (paper: 1K subjects; here ``corpus.holdout_subjects``).

:func:`measure_subject` inverts view 0 of one subject and renders, through the frozen decoder and
with the renderer settings of fitting (the pipeline's :meth:`GenerationPipeline.render`), two
tri-planes per view:

- ``inverted``: the avatar generated from view 0;
- ``fitted``: the subject's fitted tri-plane (appendix B.2), the upper bound of the inverted one,
  since diffusion learns to generate fitted tri-planes and the same decoder renders both;

at three groups of the subject's views (:func:`evaluation_views`):

- ``held_out``: the views fitting kept out (``fit.holdout_views``, :func:`split_views`), novel for
  both tri-planes;
- ``other``: a fixed set of other views spread over the rest of the rig (never view 0), fitted on,
  novel for the inverted avatar;
- ``input``: view 0, the image that was inverted.

Besides the scores against the ground truth, each view's inverted render is compared with the
fitted tri-plane's render of the same view (PSNR "vs fitted render"): the fitted tri-plane is what
diffusion learned to generate, so this measures the generation alone, without the fitting error.

Ground truth is the RGBA renders composited on ``fit.background``, as fitting and the renderer see
them. A group's metrics are the means over its views; :func:`aggregate` averages the subjects'
group means, each subject counting once. PSNR is infinite for identical images; the JSON form
writes non-finite numbers as null.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from rodin_core.config import saved_held_out_from
from rodin_core.generation import Avatar, GenerationPipeline, SampleOptions
from rodin_core.metrics import LPIPS, psnr, ssim
from rodin_core.triplane.subject import SubjectViews, split_views

SOURCES = ("inverted", "fitted")
"""What is rendered: the avatar inverted from view 0, the subject's fitted tri-plane (upper bound)."""
VIEW_GROUPS = ("held_out", "other", "input")
"""Views measured: fitting's held-out views, a fixed set of other views, view 0 (the inverted image)."""
METRICS = ("psnr", "ssim", "lpips")
DEFAULT_OTHER_VIEWS = 8
"""Views of the ``other`` group when the caller does not choose."""


@dataclass(frozen=True)
class ImageScores:
    """PSNR (dB, higher is better), SSIM (higher) and LPIPS (lower) of one image, or a mean of several."""

    psnr: float
    ssim: float
    lpips: float

    def to_dict(self) -> dict[str, float | None]:
        """JSON form; non-finite values (PSNR of identical images) become None."""
        return {name: _finite_or_none(getattr(self, name)) for name in METRICS}


def mean_scores(scores: Sequence[ImageScores]) -> ImageScores:
    """The metric-wise mean of ``scores`` (a mean with an infinite PSNR is infinite)."""
    if not scores:
        raise ValueError("mean_scores needs at least one ImageScores, got none")
    return ImageScores(*(float(np.mean([getattr(s, name) for s in scores])) for name in METRICS))


@dataclass(frozen=True)
class GroupScores:
    """The scores of one tri-plane at one group of views."""

    views: tuple[int, ...]
    """View indices, as measured."""
    per_view: tuple[ImageScores, ...]
    """Scores of each view, aligned with ``views``."""

    @property
    def mean(self) -> ImageScores:
        """Mean over the group's views."""
        return mean_scores(self.per_view)

    def to_dict(self) -> dict[str, Any]:
        return {"views": list(self.views), "mean": self.mean.to_dict(),
                "per_view": [s.to_dict() for s in self.per_view]}


@dataclass
class SubjectReconstruction:
    """Everything measured on one subject by :func:`measure_subject`."""

    subject_id: int
    scores: dict[str, dict[str, GroupScores]]
    """source (:data:`SOURCES`) -> view group (:data:`VIEW_GROUPS`) -> scores; ``fitted`` absent without planes."""
    renders: dict[str, dict[str, np.ndarray]]
    """source, or ``"truth"`` for the ground truth -> view group -> images (n, H, W, 3) uint8, aligned with the
    group's views."""
    avatar: Avatar
    """The inverted avatar (tri-plane, z and how it was made)."""
    seconds: float
    """Wall time of the inversion, the renders and the metrics."""
    vs_fitted: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """view group -> PSNR (dB) of each inverted render against the fitted tri-plane's render of the same view,
    aligned with the group's views; empty without fitted planes."""

    def psnr_vs_fitted(self, group: str) -> float:
        """Mean over ``group``'s views of the inverted renders' PSNR against the fitted renders (NaN without them)."""
        values = self.vs_fitted.get(group)
        return float(np.mean(values)) if values else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the scores (renders and avatar left out)."""
        return {"subject_id": self.subject_id, "seconds": round(self.seconds, 3),
                "scores": {source: {group: scores.to_dict() for group, scores in groups.items()}
                           for source, groups in self.scores.items()},
                "psnr_vs_fitted": {group: {"mean": _finite_or_none(self.psnr_vs_fitted(group)),
                                           "per_view": [_finite_or_none(v) for v in values]}
                                   for group, values in self.vs_fitted.items()}}


@dataclass(frozen=True)
class GroupSummary:
    """One (source, view group) cell of :func:`aggregate`."""

    subjects: int
    """Subjects averaged."""
    mean: ImageScores
    """Mean over subjects of each subject's mean over the group's views."""

    def to_dict(self) -> dict[str, Any]:
        return {"subjects": self.subjects, **self.mean.to_dict()}


def evaluation_views(n_views: int, holdout_views: int, other_views: int = DEFAULT_OTHER_VIEWS) -> dict[str, list[int]]:
    """The view indices of each group of :data:`VIEW_GROUPS` for a subject of ``n_views`` views.

    ``held_out``: :func:`split_views` with ``holdout_views`` (``fit.holdout_views``); ``other``:
    ``other_views`` views (fewer when the rig has fewer) at evenly spaced positions over the views
    that are neither view 0 nor held out; ``input``: ``[0]``.
    """
    if isinstance(other_views, bool) or not isinstance(other_views, int) or other_views < 0:
        raise ValueError(f"other_views must be a non-negative integer, got {other_views!r}")
    _, held = split_views(n_views, holdout_views)
    rest = [v for v in range(1, n_views) if v not in set(held)]
    count = min(other_views, len(rest))
    other = [rest[int((k + 0.5) * len(rest) / count)] for k in range(count)]
    return {"held_out": held, "other": other, "input": [0]}


def score_images(rendered: np.ndarray, truth: np.ndarray, lpips: LPIPS) -> list[ImageScores]:
    """Scores of each image pair: ``rendered`` and ``truth`` (N, H, W, 3) float in [0, 1]."""
    if rendered.shape != truth.shape or rendered.ndim != 4 or rendered.shape[-1] != 3:
        raise ValueError(f"score_images takes two image stacks (N, H, W, 3) of one shape, got {rendered.shape} "
                         f"and {truth.shape}")
    distances = lpips(rendered, truth)  # (N,)
    return [ImageScores(psnr(r, t), ssim(r, t), float(d)) for r, t, d in zip(rendered, truth, distances, strict=True)]


def render_views(pipeline: GenerationPipeline, planes: Tensor, subject: SubjectViews,
                 views: Sequence[int]) -> np.ndarray:
    """Raw planes (3, C, H, W) rendered from ``subject``'s cameras of ``views`` -> (n, Hi, Wi, 3) uint8."""
    frames = [pipeline.render(planes, subject.c2w[v], subject.intrinsics[v], subject.height, subject.width)
              for v in views]  # n x (Hi, Wi, 3)
    return np.stack(frames)


def measure_subject(
    pipeline: GenerationPipeline,
    subject: SubjectViews,
    fitted: Tensor | None,
    lpips: LPIPS,
    *,
    seed: int,
    options: SampleOptions | None = None,
    views: Mapping[str, Sequence[int]] | None = None,
) -> SubjectReconstruction:
    """Invert view 0 of ``subject`` and score the inverted avatar and the ``fitted`` planes (Table 4), and the
    inverted renders against the fitted ones (``vs_fitted``).

    ``fitted``: the subject's fitted raw planes (3, C, H, W) (None: only the inverted avatar is
    scored). ``seed`` and ``options`` (default: the trained settings) drive the generation
    (:meth:`GenerationPipeline.invert`).
    ``views``: view group -> view indices (default :func:`evaluation_views` with the pipeline's
    ``fit.holdout_views``); empty groups are skipped.
    """
    start = time.perf_counter()
    views = dict(views) if views is not None else evaluation_views(subject.n_views, pipeline.cfg.fit.holdout_views)
    unknown = sorted(set(views) - set(VIEW_GROUPS))
    outside = sorted({v for ids in views.values() for v in ids if not 0 <= v < subject.n_views})
    if unknown or outside:
        raise ValueError(f"views of subject {subject.subject_id}: groups must be among {VIEW_GROUPS} and indices in "
                         f"[0, {subject.n_views}); got unknown groups {unknown}, indices {outside}")
    channels = pipeline.cfg.triplane.channels
    if fitted is not None and (fitted.dim() != 4 or fitted.shape[0] != 3 or fitted.shape[1] != channels):
        raise ValueError(f"the fitted planes of subject {subject.subject_id} have shape {tuple(fitted.shape)}, the "
                         f"decoder reads (3, {channels}, H, W); pass the tri-planes fitted with this model's decoder")
    frontal = subject.images[0].numpy()  # (Hi, Wi, 4) straight alpha: the encoder's input (§4.5)
    avatar = pipeline.invert(frontal, seed=seed, options=options or SampleOptions(), name=f"subject {subject.subject_id} view 0")
    truth = subject.target_rgb(pipeline.cfg.fit.background).numpy()  # (V, Hi, Wi, 3)
    groups = {group: list(views[group]) for group in VIEW_GROUPS if views.get(group)}
    planes = {"inverted": avatar.planes, **({"fitted": fitted.float()} if fitted is not None else {})}
    scores: dict[str, dict[str, GroupScores]] = {}
    renders: dict[str, dict[str, np.ndarray]] = {
        "truth": {group: np.clip(np.rint(truth[ids] * 255.0), 0, 255).astype(np.uint8) for group, ids in groups.items()}}
    for source, tensor in planes.items():
        scores[source], renders[source] = {}, {}
        for group, ids in groups.items():
            images = render_views(pipeline, tensor, subject, ids)  # (n, Hi, Wi, 3) uint8
            per_view = score_images(images.astype(np.float32) / 255.0, truth[ids], lpips)
            scores[source][group] = GroupScores(tuple(ids), tuple(per_view))
            renders[source][group] = images
    vs_fitted = {group: tuple(psnr(a, b) for a, b in zip(renders["inverted"][group].astype(np.float32) / 255.0,
                                                         renders["fitted"][group].astype(np.float32) / 255.0,
                                                         strict=True))
                 for group in groups if "fitted" in renders}
    return SubjectReconstruction(subject.subject_id, scores, renders, avatar, time.perf_counter() - start, vs_fitted)


def aggregate(results: Sequence[SubjectReconstruction]) -> dict[str, dict[str, GroupSummary]]:
    """source -> view group -> the mean over subjects of their group means (subjects without it left out)."""
    summary: dict[str, dict[str, GroupSummary]] = {}
    for source in SOURCES:
        for group in VIEW_GROUPS:
            means = [r.scores[source][group].mean for r in results if group in r.scores.get(source, {})]
            if means:
                summary.setdefault(source, {})[group] = GroupSummary(len(means), mean_scores(means))
    return summary


def held_out_subjects(stage_configs: Mapping[str, Mapping[str, Any]]) -> list[int]:
    """Subject ids no stage trained on, from the configs saved in the stage checkpoints (``config["rodin"]``).

    Each checkpoint held out ``corpus.holdout_subjects`` ids as it was saved (none for checkpoints
    saved before that key existed); a subject counts as held out when every stage held it out.
    """
    if not stage_configs:
        raise ValueError("held_out_subjects needs the config of at least one stage checkpoint")
    common: set[int] | None = None
    for config in stage_configs.values():
        rodin = config.get("rodin") or {}
        first = saved_held_out_from(rodin)
        ids = set() if first is None else set(range(first, int(rodin["corpus"]["subjects"])))
        common = ids if common is None else common & ids
    return sorted(common or ())


def format_table(results: Sequence[SubjectReconstruction], summary: Mapping[str, Mapping[str, GroupSummary]]) -> str:
    """A fixed-width table: one row per (subject, source) and per source's mean, PSNR/SSIM/LPIPS per view group."""
    groups = [g for g in VIEW_GROUPS if any(g in cells for cells in summary.values())]
    counts = {g: max((len(r.scores[s][g].views) for r in results for s in r.scores if g in r.scores[s]), default=0)
              for g in groups}
    titles = {"held_out": "held-out views", "other": "other views", "input": "input view"}
    head = f"{'':<9}{'':<10}" + "".join(f"{f'{titles[g]} ({counts[g]})':<24}" for g in groups)
    names = f"{'subject':<9}{'source':<10}" + "".join(f"{'PSNR':>7}{'SSIM':>7}{'LPIPS':>8}  " for _ in groups)
    lines = [head.rstrip(), names.rstrip()]

    def row(label: str, source: str, cells: Mapping[str, ImageScores]) -> str:
        text = f"{label:<9}{source:<10}"
        for group in groups:
            cell = cells.get(group)
            text += (f"{cell.psnr:>7.2f}{cell.ssim:>7.3f}{cell.lpips:>8.4f}  " if cell is not None
                     else f"{'-':>7}{'-':>7}{'-':>8}  ")
        return text.rstrip()

    for result in results:
        for source in SOURCES:
            if source in result.scores:
                lines.append(row(str(result.subject_id), source,
                                 {g: s.mean for g, s in result.scores[source].items()}))
    for source in SOURCES:
        if source in summary:
            lines.append(row("mean", source, {g: s.mean for g, s in summary[source].items()}))
    return "\n".join(lines)


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
