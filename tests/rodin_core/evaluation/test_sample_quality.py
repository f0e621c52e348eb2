"""Samples measured against the training subjects (rodin_core.evaluation.sample_quality; paper appendix C.4):
the evaluation views, the spread of normalised planes, and the training set measured against itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rodin_core.datasets.layout import RENDERS_STAGE
from rodin_core.datasets.plane_stats import read_plane_stats
from rodin_core.datasets.renders import renders_index
from rodin_core.evaluation.features import VGGFeatures
from rodin_core.evaluation.frechet import frechet_distance
from rodin_core.evaluation.quality_job import reference_subjects
from rodin_core.evaluation.reconstruction_job import fitted_planes
from rodin_core.evaluation.sample_quality import (
    PlaneSpread,
    ReferenceSet,
    as_images,
    build_reference,
    plane_spread,
    quality_views,
    score_samples,
)
from rodin_core.fitting.shard_job import torch_threads
from rodin_core.generation import GenerationPipeline
from rodin_core.generation.job import load_pipeline
from rodin_core.storage import open_store
from rodin_core.triplane.stats import PlaneStats

from ...evaluation_data import SIZE


@pytest.fixture(scope="module")
def pipeline(quality_root: str) -> GenerationPipeline:
    return load_pipeline(quality_root)


@pytest.fixture(scope="module")
def reference(quality_root: str, pipeline: GenerationPipeline) -> ReferenceSet:
    """Training subjects 0 and 1 at views 0, 3 and 5."""
    sources = renders_index(open_store(quality_root).stage(RENDERS_STAGE))
    planes = fitted_planes(quality_root, [0, 1])
    with torch_threads(1):
        return build_reference(pipeline, reference_subjects(quality_root, [0, 1], sources, planes), [0, 3, 5])


def test_views_are_the_frontal_one_and_a_spread_of_the_others() -> None:
    assert quality_views(8, 4) == [0, 1, 3, 5, 7] and quality_views(8, 2) == [0, 2, 6]
    assert quality_views(3, 4) == [0, 1, 2] and quality_views(1) == [0] and quality_views(300, 0) == [0]
    with pytest.raises(ValueError, match="others must be a non-negative integer, got -1"):
        quality_views(8, -1)


def test_the_spread_of_the_data_against_itself_is_one() -> None:
    planes = torch.randn(5, 3, 4, 6, 6, generator=torch.Generator().manual_seed(0)) * 2.0 + 1.0  # (N, 3, C, H, W)
    stats = PlaneStats(torch.full((4,), 1.0), torch.full((4,), 2.0))
    spread = PlaneSpread(plane_spread(planes, stats), plane_spread(planes, stats))
    assert spread.ratio == 1.0 and spread.data == pytest.approx(float(((planes - 1.0) / 2.0).std(unbiased=False)))
    assert PlaneSpread(plane_spread(planes * 0.5 + 0.5, stats), spread.data).ratio == pytest.approx(0.5)


def test_training_planes_taken_as_samples_find_themselves(quality_root: str, pipeline: GenerationPipeline,
                                                          reference: ReferenceSet, vgg: VGGFeatures) -> None:
    assert reference.subject_ids == [0, 1] and reference.views == (0, 3, 5)
    assert reference.fitted.shape == reference.truth.shape == (2, 3, SIZE, SIZE, 3)
    stats = read_plane_stats(quality_root)
    quality = score_samples(pipeline, reference.planes.flip(0), reference, stats, vgg)  # subjects 1, 0 as samples
    assert np.array_equal(quality.renders, reference.fitted[::-1])
    assert quality.nearest.best_index.tolist() == [1, 0] and quality.nearest.best_score.tolist() == [math.inf] * 2
    assert quality.spread.ratio == 1.0
    assert quality.baseline is not None and quality.baseline.best_index.tolist() == [1, 0]
    assert np.isfinite(quality.baseline.best_score).all()  # nobody is its own neighbour in the baseline
    assert quality.nearest_truth.best_index.shape == (2,) and np.isfinite(quality.nearest_truth.best_score).all()
    assert quality.nearest_encoder is not None and quality.baseline_encoder is not None
    assert ((0.0 <= quality.nearest_encoder.best_score) & (quality.nearest_encoder.best_score <= 2.0)).all()
    assert quality.frechet is not None and quality.frechet.value > 0.0  # fitted renders, not the ground truth
    assert quality.frechet_floor is not None and quality.frechet_floor.n_a == quality.frechet_floor.n_b == 3
    one_subject_each = frechet_distance(vgg(as_images(reference.truth[0])), vgg(as_images(reference.truth[1])),
                                        features=vgg.name)  # the floor splits subjects, not their views
    assert quality.frechet_floor.value == pytest.approx(one_subject_each.value, rel=1e-6)
    with pytest.raises(ValueError, match=r"samples must be raw planes \(N, 3, 4, 8, 8\) like the fitted ones"):
        score_samples(pipeline, reference.planes[0], reference, stats, vgg)
