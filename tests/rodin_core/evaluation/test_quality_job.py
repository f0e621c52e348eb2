"""Sample quality of a dataset root (rodin_core.evaluation.quality_job; paper §4.2-4.3, §4.5, appendix C.4).

The root (the ``quality_root`` fixture) holds renders of 4 subjects, their fitted tri-planes, the
plane statistics and tiny random checkpoints of the three stages trained with subjects 2 and 3
held out: subjects 0 and 1 are the training subjects, and subject 3 has no fitted tri-plane.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rodin_core.datasets.layout import RENDERS_STAGE
from rodin_core.datasets.renders import iter_subjects, renders_index
from rodin_core.encoders import EncoderUnavailableError
from rodin_core.evaluation.features import VGGFeatures
from rodin_core.evaluation.quality_job import (
    QualityInputError,
    check_quality_inputs,
    feature_extractor,
    measure_quality,
    reconstruction_subjects,
    spread_pick,
)
from rodin_core.evaluation.quality_report import QualityReport
from rodin_core.evaluation.sample_quality import as_strips, plane_spread
from rodin_core.fitting.shard_job import torch_threads
from rodin_core.generation.job import GenerateInputError, load_pipeline
from rodin_core.imaging import LABEL_HEIGHT
from rodin_core.metrics import psnr
from rodin_core.storage import open_store
from rodin_core.triplane.stats import PlaneStatsError

from ...evaluation_data import SIZE, fitted_of
from ...generation_data import generation_config, make_generation_root, plane_stats

N = 2


@pytest.fixture(scope="module")
def report(quality_root: str, vgg: VGGFeatures) -> QualityReport:
    with torch_threads(1):  # as the tests: CPU results depend on the thread count in the last bits
        return measure_quality(quality_root, n=N, seed=0, features=vgg, lpips="stlpips-vgg", views=2,
                               reconstruction_views=1)


def test_training_and_held_out_subjects_are_reconstructed_apart(report: QualityReport) -> None:
    groups = {group: [r.subject_id for r in results] for group, results in report.reconstruction.items()}
    assert groups == {"training": [0, 1], "held_out": [2, 3]} and report.held_out == [2, 3]
    medians = report.medians()
    training, held = medians["training"]["held_out"], medians["held_out"]["held_out"]
    expected = np.median([r.psnr_vs_fitted("held_out") for r in report.reconstruction["training"]])
    assert training.subjects == 2 and training.views == 2 and training.psnr_vs_fitted == pytest.approx(expected)
    assert training.inverted.psnr == pytest.approx(
        np.median([r.scores["inverted"]["held_out"].mean.psnr for r in report.reconstruction["training"]]))
    subject_2 = report.reconstruction["held_out"][0]  # subject 3 has no fitted tri-plane: left out of those medians
    assert held.subjects == 2 and held.psnr_vs_fitted == pytest.approx(subject_2.psnr_vs_fitted("held_out"))
    assert held.fitted is not None and held.fitted.psnr == pytest.approx(subject_2.scores["fitted"]["held_out"].mean.psnr)
    assert set(medians["training"]) == {"held_out", "other", "input"}


def test_samples_are_those_of_rodin_sample_and_are_scored_against_the_training_set(
        report: QualityReport, quality_root: str) -> None:
    expected = load_pipeline(quality_root).sample(N, seed=0)  # what `rodin sample --n 2 --seed 0` commits
    assert [a.meta["seed"] for a in report.samples] == [0, 1]
    assert all(torch.equal(a.planes, b.planes) for a, b in zip(report.samples, expected, strict=True))
    assert report.views == (0, 2, 6) and report.reference_ids == [0, 1]  # view 0 and 2 spread over views 1..7
    quality, cfg = report.quality, generation_config()
    assert quality.renders.shape == (N, 3, SIZE, SIZE, 3)
    stats = plane_stats(cfg)
    samples = torch.stack([a.planes for a in report.samples])
    assert quality.spread.samples == pytest.approx(plane_spread(samples, stats))
    data = torch.stack([fitted_of(0, cfg), fitted_of(1, cfg)]).half().float()  # stored as float16
    assert quality.spread.data == pytest.approx(plane_spread(data, stats))
    assert quality.spread.ratio == pytest.approx(quality.spread.samples / quality.spread.data)
    pipeline = load_pipeline(quality_root)
    stage = open_store(quality_root).stage(RENDERS_STAGE)
    subject = next(iter_subjects(stage, [0], renders_index(stage)))  # the rig is the same for every subject
    fitted = np.stack([[pipeline.render(planes, subject.c2w[v], subject.intrinsics[v], SIZE, SIZE)
                        for v in (0, 2, 6)] for planes in data])  # (2, 3, H, W, 3)
    brute = [[psnr(s.numpy(), f.numpy()) for f in as_strips(fitted)] for s in as_strips(quality.renders)]  # (N, 2)
    assert quality.nearest.best_index.tolist() == np.argmax(brute, axis=1).tolist()
    assert quality.nearest.best_score == pytest.approx(np.max(brute, axis=1))
    assert quality.baseline is not None and quality.baseline.best_index.tolist() == [1, 0]
    assert quality.nearest_encoder is not None and (0 <= quality.nearest_encoder.best_score).all()
    assert quality.frechet is not None and quality.frechet.label == "Fréchet distance on vgg16-stlpips"
    assert (quality.frechet.n_a, quality.frechet.n_b) == (N * 3, 2 * 3)
    assert quality.frechet_floor is not None and (quality.frechet_floor.n_a, quality.frechet_floor.n_b) == (3, 3)


def test_the_report_round_trips_as_json_and_reads_as_tables(report: QualityReport) -> None:
    text = report.to_json()
    data = json.loads(text)
    assert json.dumps(data, indent=2, allow_nan=False) == text
    assert data["samples"]["seeds"] == [0, 1] and data["samples"]["views"] == [0, 2, 6]
    assert data["reconstruction"]["training"]["subjects"] == [0, 1]
    assert data["reconstruction"]["held_out"]["subjects"] == [2, 3]
    median = data["reconstruction"]["held_out"]["median"]["held_out"]
    assert median["psnr_vs_fitted"] == pytest.approx(report.medians()["held_out"]["held_out"].psnr_vs_fitted)
    per_subject = data["reconstruction"]["held_out"]["per_subject"]
    assert per_subject[1]["psnr_vs_fitted"] == {}  # subject 3: no fitted tri-plane
    plane_std = data["samples"]["plane_std"]
    assert plane_std["ratio"] == pytest.approx(plane_std["samples"] / plane_std["data"])
    assert data["samples"]["frechet"]["samples_vs_training"]["label"] == "Fréchet distance on vgg16-stlpips"
    assert {s["nearest_render"]["subject_id"] for s in data["samples"]["per_sample"]} <= {0, 1}
    assert data["options"] == {"guidance_scale": 1.0, "sampler": None, "steps": None}
    assert data["checkpoint_steps"] == {"base": 0, "upsampler": 0, "prior": 0}
    table = report.table()
    for row in ("| training | 2 | held-out views (2) |", "| training | 2 | input view (1) |",
                "| held-out | 2 | held-out views (2) |", "| std ratio, samples / data |",
                "| nearest training subject, PSNR over the views (median) |",
                "| Fréchet distance on vgg16-stlpips (6 vs 6 renders) |", "| 0 | 0 |", "| 1 | 1 |"):
        assert row in table
    assert "FID" not in table
    assert report.samples_sheet.shape == (N * (SIZE + LABEL_HEIGHT), 3 * SIZE, 3)
    assert report.neighbour_sheet.shape == (N * (SIZE + LABEL_HEIGHT), 2 * 3 * SIZE, 3)
    assert np.array_equal(report.samples_sheet[:SIZE, :SIZE], report.quality.renders[0, 0])


def test_chosen_subjects_go_to_their_group(quality_root: str, vgg: VGGFeatures) -> None:
    pipeline = load_pipeline(quality_root)
    chosen = measure_quality(quality_root, n=1, seed=2, features=vgg, lpips="stlpips-vgg", subjects=[3, 1], views=1,
                             reconstruction_views=0, pipeline=pipeline)
    assert {g: [r.subject_id for r in rs] for g, rs in chosen.reconstruction.items()} == {"training": [1],
                                                                                           "held_out": [3]}
    assert chosen.views == (0, 4) and chosen.quality.renders.shape == (1, 2, SIZE, SIZE, 3)
    assert chosen.quality.frechet is not None and chosen.quality.frechet.n_a == 2
    assert math.isnan(chosen.medians()["held_out"]["held_out"].psnr_vs_fitted)
    assert json.loads(chosen.to_json())["reconstruction"]["held_out"]["median"]["held_out"]["psnr_vs_fitted"] is None
    with pytest.raises(QualityInputError, match=r"subjects \[7\] are not rendered; rendered ids: 0..3"):
        measure_quality(quality_root, n=1, features=vgg, subjects=[7], pipeline=pipeline)


def test_subject_choice_spreads_the_training_subjects() -> None:
    assert spread_pick(list(range(14)), 4) == [1, 5, 8, 12] and spread_pick([3, 4], 8) == [3, 4]
    assert reconstruction_subjects(list(range(14)), [14, 15], list(range(16)), training_count=2) == {
        "training": [3, 10], "held_out": [14, 15]}
    assert reconstruction_subjects(list(range(14)), [], list(range(14)), subjects=[5, 2]) == {
        "training": [2, 5], "held_out": []}


def test_bad_inputs_name_what_to_run_first(tmp_path: Path, quality_root: str) -> None:
    with pytest.raises(QualityInputError, match="n must be a positive integer .*got 0"):
        check_quality_inputs(quality_root, n=0)
    with pytest.raises(GenerateInputError, match=r"no committed base, upsampler, prior checkpoints .*`rodin train all"):
        check_quality_inputs(str(tmp_path / "empty"))
    no_prior = make_generation_root(tmp_path / "no-prior", generation_config(), stages=("base", "upsampler"))
    with pytest.raises(GenerateInputError, match=r"no committed prior checkpoint .*`rodin train prior --out"):
        measure_quality(no_prior, n=1)
    no_stats = make_generation_root(tmp_path / "no-stats", generation_config())
    with pytest.raises(PlaneStatsError, match="no committed plane statistics .*rodin train base"):
        check_quality_inputs(no_stats)
    with pytest.raises(QualityInputError, match="unknown features 'inception'; choose one of vgg, clip"):
        feature_extractor("inception")
    missing = tmp_path / "clip.safetensors"
    with pytest.raises(EncoderUnavailableError, match=f"{missing}' does not exist.*--clip-pretrained"):
        feature_extractor("clip", "ViT-B-32", str(missing))
