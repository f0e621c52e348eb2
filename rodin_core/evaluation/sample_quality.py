"""Quality of unconditional samples measured against the training subjects (paper §4.2-4.3, appendix C.4).

The samples (z from the latent prior, base model, upsampler) are compared with the training
subjects through what both look like, at a fixed set of the render rig's views
(:func:`quality_views`: view 0, the frontal one, and a spread of others), rendered through the
frozen decoder with the renderer settings of fitting on ``fit.background``:

- spread of the planes: the standard deviation of all elements of the samples' tri-planes in
  normalised plane space (the per-channel corpus statistics of appendix B.1, the space the
  diffusion stages generate in), next to that of the fitted training tri-planes (about 1 by
  construction) and the ratio of the two. A ratio well below 1 means washed-out, too smooth
  samples; above 1, noisy ones.
- nearest training subjects (appendix C.4): for each sample, the training subject whose fitted
  tri-plane renders closest (PSNR over every evaluation view at once), the one whose ground-truth
  frontal view is closest to the sample's frontal render (PSNR), and the one closest in the
  pipeline encoder's feature space (cosine distance between the encodings of the sample's frontal
  render and of the subject's ground-truth frontal, both composited on ``fit.background``). The
  baseline is the training set against itself, each subject left out of its own search: samples
  that sit as close to a training subject as training subjects sit to each other are not copies.
- the Fréchet distance (:mod:`.frechet`) between the features of the samples' renders and of the
  ground-truth renders of the training subjects at the same views, with its floor, the distance
  between two halves of the training subjects (each subject's renders on one side), averaged over
  :data:`FLOOR_SPLITS` random splits.

:class:`ReferenceSet` holds the training side; :func:`score_samples` measures a set of tri-planes
against it and returns a :class:`SampleQuality`. Nothing here reads or writes a store.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rodin_core.evaluation.features import ImageFeatures
from rodin_core.evaluation.frechet import FrechetResult, frechet_distance, frechet_floor
from rodin_core.evaluation.neighbours import (
    Neighbours,
    leave_one_out_neighbours,
    nearest_neighbours,
)
from rodin_core.generation import GenerationPipeline
from rodin_core.triplane.stats import PlaneStats
from rodin_core.triplane.subject import SubjectViews

log = logging.getLogger(__name__)

DEFAULT_OTHER_VIEWS = 4
"""Views besides the frontal one at which samples and training subjects are compared."""
FLOOR_SPLITS = 5
"""Random halves of the training subjects averaged into the Fréchet floor (one split of the 240 subjects of the
small run gave 1.2 to 2.7, by rows 0.3 to 5.3)."""


def quality_views(n_views: int, others: int = DEFAULT_OTHER_VIEWS) -> list[int]:
    """View 0 and ``others`` views at evenly spaced positions over views 1..``n_views`` - 1 (fewer on a small rig)."""
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views must be a positive integer, got {n_views!r}")
    if isinstance(others, bool) or not isinstance(others, int) or others < 0:
        raise ValueError(f"others must be a non-negative integer, got {others!r}")
    count = min(others, n_views - 1)
    return [0, *sorted({1 + int((k + 0.5) * (n_views - 1) / count) for k in range(count)})]


def render_planes(pipeline: GenerationPipeline, planes: Tensor, c2w: Tensor, intrinsics: Tensor, height: int,
                  width: int) -> np.ndarray:
    """Raw planes (3, C, H, W) seen from cameras c2w (V, 4, 4), intrinsics (V, 3, 3) -> (V, height, width, 3) uint8."""
    return np.stack([pipeline.render(planes, pose, k, height, width) for pose, k in zip(c2w, intrinsics, strict=True)])


@dataclass
class ReferenceSet:
    """The training subjects the samples are compared with, seen at the evaluation views."""

    subject_ids: list[int]
    views: tuple[int, ...]
    """Rig view indices, view 0 first."""
    planes: Tensor
    """(K, 3, C, H, W) float32 fitted raw planes."""
    fitted: np.ndarray
    """(K, V, Hi, Wi, 3) uint8 renders of the fitted planes at ``views``."""
    truth: np.ndarray
    """(K, V, Hi, Wi, 3) uint8 ground truth at ``views``, composited on ``fit.background``."""
    c2w: Tensor
    """(V, 4, 4) the rig's cameras of ``views`` (the rig is the same for every subject)."""
    intrinsics: Tensor
    """(V, 3, 3)."""

    @property
    def size(self) -> tuple[int, int]:
        """(Hi, Wi) of the renders."""
        return int(self.truth.shape[2]), int(self.truth.shape[3])


def build_reference(pipeline: GenerationPipeline, subjects: Iterable[tuple[SubjectViews, Tensor]],
                    views: Sequence[int]) -> ReferenceSet:
    """The :class:`ReferenceSet` of ``(views of a subject, its fitted raw planes (3, C, H, W))`` pairs at ``views``."""
    views = tuple(int(v) for v in views)
    ids, planes, fitted, truth, cameras = [], [], [], [], None
    for subject, subject_planes in subjects:
        if max(views) >= subject.n_views:
            raise ValueError(f"subject {subject.subject_id} has {subject.n_views} views, the evaluation views reach "
                             f"{max(views)}; render every subject with the same rig")
        ids.append(subject.subject_id)
        planes.append(subject_planes.float())
        fitted.append(render_planes(pipeline, subject_planes, subject.c2w[list(views)],
                                    subject.intrinsics[list(views)], subject.height, subject.width))
        rgb = subject.target_rgb(pipeline.cfg.fit.background)[list(views)].numpy()  # (V, Hi, Wi, 3)
        truth.append(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8))
        if cameras is None:
            cameras = (subject.c2w[list(views)], subject.intrinsics[list(views)])  # (V, 4, 4), (V, 3, 3)
        log.info("training subject %d rendered at %d views (%d so far)", subject.subject_id, len(views), len(ids))
    if cameras is None:
        raise ValueError("build_reference needs at least one training subject, got none")
    return ReferenceSet(ids, views, torch.stack(planes), np.stack(fitted), np.stack(truth), *cameras)


def plane_spread(planes: Tensor, stats: PlaneStats) -> float:
    """Standard deviation of every element of raw planes (N, 3, C, H, W) normalised with ``stats`` (appendix B.1)."""
    normalised = stats.normalize(planes.double())  # (N, 3, C, H, W)
    return float(normalised.std(unbiased=False))


@dataclass(frozen=True)
class PlaneSpread:
    """Spread of the samples' normalised planes next to the training data's."""

    samples: float
    data: float
    """Over the fitted training tri-planes (about 1: the statistics are computed over them)."""

    @property
    def ratio(self) -> float:
        """``samples / data``: 1 when the samples spread as the data does."""
        return self.samples / self.data if self.data > 0 else math.nan


def as_strips(renders: np.ndarray) -> Tensor:
    """uint8 renders (N, V, H, W, 3) -> each subject's views side by side, float (N, 3, H, V * W) in [0, 1]."""
    n, v, h, w, _ = renders.shape
    strips = renders.transpose(0, 4, 2, 1, 3).reshape(n, 3, h, v * w)  # (N, 3, H, V * W)
    return torch.from_numpy(np.ascontiguousarray(strips)).float() / 255.0


def as_images(renders: np.ndarray) -> Tensor:
    """uint8 images (..., H, W, 3) -> float (M, 3, H, W) in [0, 1], M the product of the leading dimensions."""
    flat = renders.reshape(-1, *renders.shape[-3:])  # (M, H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(flat)).permute(0, 3, 1, 2).float() / 255.0  # (M, 3, H, W)


def encode_frontals(pipeline: GenerationPipeline, images: np.ndarray) -> Tensor | None:
    """z of each frontal image (N, H, W, 3) uint8 through the pipeline's encoder -> (N, D); None without an encoder."""
    if pipeline.encoder is None:
        log.warning("the pipeline has no image encoder (%s): no nearest neighbours in its feature space",
                    pipeline.encoder_error or "none was loaded")
        return None
    return torch.stack([pipeline.encode_image(image) for image in images])  # (N, D)


@dataclass
class SampleQuality:
    """Everything :func:`score_samples` measured on one set of samples."""

    renders: np.ndarray
    """(N, V, Hi, Wi, 3) uint8 the samples at the reference's views."""
    spread: PlaneSpread
    nearest: Neighbours
    """Closest training subject of each sample over the fitted renders of every view (PSNR, indices into the
    reference)."""
    nearest_truth: Neighbours
    """Closest training subject of each sample's frontal render among the ground-truth frontals (PSNR)."""
    nearest_encoder: Neighbours | None
    """Closest in the encoder's feature space (cosine distance); None without an encoder."""
    baseline: Neighbours | None
    """Each training subject's closest other one over the fitted renders (PSNR); None with one subject."""
    baseline_encoder: Neighbours | None
    """The same in the encoder's feature space, over the ground-truth frontals."""
    frechet: FrechetResult | None
    """Samples' renders vs the ground-truth renders; None with fewer than 2 images a side."""
    frechet_floor: FrechetResult | None
    """Two halves of the training subjects' ground-truth renders, each subject's views on one side, averaged over
    :data:`FLOOR_SPLITS` random splits; None with one subject or fewer than 4 renders."""


def subject_floor(truth_features: Tensor | np.ndarray, reference: ReferenceSet, features: str,
                  seed: int = 0) -> FrechetResult:
    """The Fréchet floor of ``reference``: its ground-truth features (K * V, F), subject-major as
    :func:`as_images` flattens them, split into two halves of the subjects, each subject's V views on one
    side, averaged over :data:`FLOOR_SPLITS` random splits drawn from ``seed``."""
    subjects = np.repeat(np.arange(len(reference.subject_ids)), len(reference.views))  # (K * V,)
    return frechet_floor(truth_features, features=features, seed=seed, groups=subjects, splits=FLOOR_SPLITS)


def score_samples(pipeline: GenerationPipeline, planes: Tensor, reference: ReferenceSet, stats: PlaneStats,
                  features: ImageFeatures, *, seed: int = 0) -> SampleQuality:
    """Measure raw sample planes (N, 3, C, H, W) against ``reference`` (see the module docstring).

    ``stats``: the corpus plane statistics; ``features``: the Fréchet distance's image features;
    ``seed`` draws the halves of the Fréchet floor.
    """
    if planes.dim() != 5 or planes.shape[1:] != reference.planes.shape[1:]:
        raise ValueError(f"samples must be raw planes (N, {', '.join(map(str, reference.planes.shape[1:]))}) like the "
                         f"fitted ones, got {tuple(planes.shape)}")
    height, width = reference.size
    renders = np.stack([render_planes(pipeline, p, reference.c2w, reference.intrinsics, height, width)
                        for p in planes])  # (N, V, Hi, Wi, 3)
    spread = PlaneSpread(plane_spread(planes, stats), plane_spread(reference.planes, stats))
    strips, reference_strips = as_strips(renders), as_strips(reference.fitted)  # (N, 3, Hi, V * Wi), (K, ...)
    nearest = nearest_neighbours(strips, reference_strips, "psnr")
    nearest_truth = nearest_neighbours(as_images(renders[:, 0]), as_images(reference.truth[:, 0]), "psnr")
    several = len(reference.subject_ids) > 1
    baseline = leave_one_out_neighbours(reference_strips, "psnr") if several else None
    sample_z, truth_z = encode_frontals(pipeline, renders[:, 0]), encode_frontals(pipeline, reference.truth[:, 0])
    nearest_encoder = baseline_encoder = None
    if sample_z is not None and truth_z is not None:
        nearest_encoder = nearest_neighbours(sample_z, truth_z, "cosine")
        baseline_encoder = leave_one_out_neighbours(truth_z, "cosine") if several else None
    sample_features = features(as_images(renders))  # (N * V, F)
    truth_features = features(as_images(reference.truth))  # (K * V, F)
    frechet = floor = None
    if min(len(sample_features), len(truth_features)) >= 2:
        frechet = frechet_distance(sample_features, truth_features, features=features.name)
    if len(truth_features) >= 4 and several:
        floor = subject_floor(truth_features, reference, features.name, seed)
    return SampleQuality(renders, spread, nearest, nearest_truth, nearest_encoder, baseline, baseline_encoder,
                         frechet, floor)
