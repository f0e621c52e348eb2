"""Conditional reconstruction metrics (paper §4.5, appendix C.5 Table 4): view groups, scores, aggregation,
and :func:`measure_subject` end to end on the tiny random checkpoints of :mod:`tests.generation_data`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rodin_core.cameras import make_rig
from rodin_core.config import RodinConfig
from rodin_core.evaluation.reconstruction import (
    GroupScores,
    ImageScores,
    SubjectReconstruction,
    aggregate,
    evaluation_views,
    format_table,
    held_out_subjects,
    mean_scores,
    measure_subject,
    score_images,
)
from rodin_core.fitting.shard_job import torch_threads
from rodin_core.generation import Avatar, GenerationPipeline, SampleOptions
from rodin_core.generation.job import load_pipeline
from rodin_core.metrics import LPIPS
from rodin_core.triplane.subject import SubjectViews

from ...generation_data import generation_config, make_generation_root

SIZE = 24
"""Side of the synthetic subjects' views (LPIPS needs at least 18 px)."""
OVERRIDES = ("corpus.subjects=4", "corpus.holdout_subjects=2", "render.views=8", "fit.holdout_views=2")


@pytest.fixture(scope="module")
def cfg() -> RodinConfig:
    return generation_config(*OVERRIDES)


@pytest.fixture(scope="module")
def pipeline(cfg: RodinConfig, tmp_path_factory: pytest.TempPathFactory) -> GenerationPipeline:
    with torch_threads(1):
        root = make_generation_root(tmp_path_factory.mktemp("reconstruction") / "data", cfg)
        return load_pipeline(root, require_prior=False)


@pytest.fixture(scope="module")
def lpips() -> LPIPS:
    return LPIPS("stlpips-vgg")


def synthetic_subject(subject_id: int, cfg: RodinConfig) -> SubjectViews:
    """A coloured disc on transparent background seen by the render rig's cameras, at SIZE px."""
    render = cfg.render
    rig = make_rig(render.views, SIZE, render.fov_deg, render.camera_radius, render.elevation_min_deg,
                   render.elevation_max_deg)
    y, x = np.mgrid[0:SIZE, 0:SIZE] - (SIZE - 1) / 2
    inside = (x**2 + y**2 < (SIZE / 3) ** 2)[None]  # (1, H, W)
    shade = np.linspace(0.3, 0.9, render.views)[:, None, None]  # (V, 1, 1)
    images = np.zeros((render.views, SIZE, SIZE, 4), np.float32)  # (V, H, W, 4)
    images[..., 0] = np.where(inside, shade, 0.0)
    images[..., 1] = np.where(inside, 0.1 * subject_id, 0.0)
    images[..., 2] = np.where(inside, 1.0 - shade, 0.0)
    images[..., 3] = inside
    intrinsics = np.repeat(rig.intrinsics[None], render.views, axis=0)  # (V, 3, 3)
    return SubjectViews.from_arrays(subject_id, images, rig.c2w, intrinsics)


def fitted_planes(cfg: RodinConfig, seed: int) -> torch.Tensor:
    size = cfg.triplane.resolution
    return 0.5 * torch.randn(3, cfg.triplane.channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_evaluation_views_are_fittings_held_out_views_a_spread_of_others_and_the_input() -> None:
    views = evaluation_views(16, 4, 4)
    assert views == {"held_out": [2, 6, 10, 14], "other": [3, 7, 9, 13], "input": [0]}
    everything = evaluation_views(16, 4, 50)["other"]
    assert everything == [1, 3, 4, 5, 7, 8, 9, 11, 12, 13, 15]  # neither view 0 nor a held-out view
    assert evaluation_views(16, 0, 0) == {"held_out": [], "other": [], "input": [0]}
    with pytest.raises(ValueError, match="other_views must be a non-negative integer, got -1"):
        evaluation_views(16, 4, -1)


def test_scores_of_identical_images_and_of_a_known_perturbation(lpips: LPIPS) -> None:
    truth = np.full((2, SIZE, SIZE, 3), 0.5, np.float32)  # (N, H, W, 3)
    same = score_images(truth.copy(), truth, lpips)
    assert [(s.psnr, s.ssim, s.lpips) for s in same] == [(math.inf, pytest.approx(1.0), 0.0)] * 2
    checker = ((np.indices((SIZE, SIZE)).sum(axis=0) % 2) * 2 - 1)[None, :, :, None]  # (1, H, W, 1) of +-1
    perturbed = truth + np.stack([np.full_like(truth[0], 0.1), 0.05 * checker[0] * np.ones_like(truth[0])])
    first, second = score_images(perturbed, truth, lpips)
    assert first.psnr == pytest.approx(20.0)  # MSE 0.1^2 -> 10 log10(1 / 0.01)
    assert second.psnr == pytest.approx(10 * math.log10(1 / 0.05**2))  # MSE 0.0025 -> 26.02 dB
    assert first.lpips > 0.0 and second.lpips > 0.0 and second.ssim < 1.0
    with pytest.raises(ValueError, match=r"two image stacks \(N, H, W, 3\) of one shape"):
        score_images(truth[0], truth[0], lpips)


def result(subject_id: int, cells: dict[str, dict[str, list[tuple[float, float, float]]]]) -> SubjectReconstruction:
    """A hand-made result: source -> group -> per-view (psnr, ssim, lpips); views numbered 1, 2, ..."""
    scores = {source: {group: GroupScores(tuple(range(1, len(rows) + 1)), tuple(ImageScores(*r) for r in rows))
                       for group, rows in groups.items()} for source, groups in cells.items()}
    return SubjectReconstruction(subject_id, scores, {}, Avatar(torch.zeros(3, 1, 2, 2), None), 0.5)


def test_aggregate_averages_each_subjects_group_mean_once() -> None:
    a = result(14, {"inverted": {"held_out": [(20.0, 0.8, 0.2), (22.0, 0.9, 0.1)], "input": [(30.0, 0.95, 0.05)]},
                    "fitted": {"held_out": [(28.0, 0.9, 0.08), (30.0, 0.92, 0.06)]}})
    b = result(15, {"inverted": {"held_out": [(25.0, 0.7, 0.3)]}})
    assert a.scores["inverted"]["held_out"].mean == ImageScores(21.0, pytest.approx(0.85), pytest.approx(0.15))
    summary = aggregate([a, b])
    held = summary["inverted"]["held_out"]
    assert held.subjects == 2  # (21 + 25) / 2, not the mean over the three views (22.33)
    assert (held.mean.psnr, held.mean.ssim, held.mean.lpips) == pytest.approx((23.0, 0.775, 0.225))
    assert summary["inverted"]["input"].subjects == 1 and summary["inverted"]["input"].mean.psnr == 30.0
    assert summary["fitted"]["held_out"].subjects == 1 and summary["fitted"]["held_out"].mean.psnr == 29.0
    assert set(summary["fitted"]) == {"held_out"} and "other" not in summary["inverted"]
    perfect = result(16, {"inverted": {"held_out": [(math.inf, 1.0, 0.0)]}})
    assert math.isinf(aggregate([a, perfect])["inverted"]["held_out"].mean.psnr)
    assert perfect.to_dict()["scores"]["inverted"]["held_out"]["mean"] == {"psnr": None, "ssim": 1.0, "lpips": 0.0}
    assert a.to_dict()["scores"]["fitted"]["held_out"]["per_view"][1] == {"psnr": 30.0, "ssim": 0.92, "lpips": 0.06}
    with pytest.raises(ValueError, match="at least one"):
        mean_scores([])


def test_table_has_a_row_per_subject_and_source_and_the_means() -> None:
    a = result(14, {"inverted": {"held_out": [(20.0, 0.8, 0.2), (22.0, 0.9, 0.1)]},
                    "fitted": {"held_out": [(28.0, 0.9, 0.08), (30.0, 0.92, 0.06)]}})
    b = result(15, {"inverted": {"held_out": [(25.0, 0.7, 0.3), (27.0, 0.7, 0.3)]}})
    lines = format_table([a, b], aggregate([a, b])).splitlines()
    assert "held-out views (2)" in lines[0] and lines[1].split() == ["subject", "source", "PSNR", "SSIM", "LPIPS"]
    assert [line.split() for line in lines[2:]] == [
        ["14", "inverted", "21.00", "0.850", "0.1500"], ["14", "fitted", "29.00", "0.910", "0.0700"],
        ["15", "inverted", "26.00", "0.700", "0.3000"],
        ["mean", "inverted", "23.50", "0.775", "0.2250"], ["mean", "fitted", "29.00", "0.910", "0.0700"]]


def test_held_out_subjects_are_those_every_stage_held_out() -> None:
    def saved(subjects: int, holdout: int | None) -> dict:
        corpus = {"subjects": subjects, **({"holdout_subjects": holdout} if holdout is not None else {})}
        return {"stage": "base", "rodin": {"preset": "tiny", "corpus": corpus}}

    assert held_out_subjects({"base": saved(16, 2), "upsampler": saved(16, 2)}) == [14, 15]
    assert held_out_subjects({"base": saved(16, 3), "upsampler": saved(16, 2)}) == [14, 15]
    assert held_out_subjects({"base": saved(16, 2), "prior": saved(16, 0)}) == []
    assert held_out_subjects({"base": saved(16, None)}) == []  # saved before holdout_subjects: trained on all
    with pytest.raises(ValueError, match="at least one stage"):
        held_out_subjects({})


def test_measure_subject_end_to_end(pipeline: GenerationPipeline, lpips: LPIPS, cfg: RodinConfig) -> None:
    subject, fitted = synthetic_subject(2, cfg), fitted_planes(cfg, seed=5)
    measured = measure_subject(pipeline, subject, fitted, lpips, seed=3)
    views = evaluation_views(8, 2)  # the pipeline's fit.holdout_views
    assert views == {"held_out": [2, 6], "other": [1, 3, 4, 5, 7], "input": [0]}
    assert measured.subject_id == 2 and set(measured.scores) == {"inverted", "fitted"}
    for source in ("inverted", "fitted"):
        for group, ids in views.items():
            scores = measured.scores[source][group]
            assert scores.views == tuple(ids) and len(scores.per_view) == len(ids)
            assert measured.renders[source][group].shape == (len(ids), SIZE, SIZE, 3)
            assert measured.renders[source][group].dtype == np.uint8
            for s in scores.per_view:
                assert math.isfinite(s.psnr) and -1.0 <= s.ssim <= 1.0 and 0.0 < s.lpips < 2.0
    truth = subject.target_rgb(cfg.fit.background).numpy()  # (V, H, W, 3)
    assert set(measured.renders["truth"]) == set(views)
    assert np.array_equal(measured.renders["truth"]["other"], np.rint(truth[[1, 3, 4, 5, 7]] * 255).astype(np.uint8))
    fitted_view = pipeline.render(fitted, subject.c2w[2], subject.intrinsics[2], SIZE, SIZE)  # (H, W, 3)
    assert np.array_equal(measured.renders["fitted"]["held_out"][0], fitted_view)
    assert not np.array_equal(measured.renders["inverted"]["held_out"], measured.renders["fitted"]["held_out"])
    assert measured.avatar.planes.shape == (3, 4, 8, 8) and torch.isfinite(measured.avatar.planes).all()
    assert measured.avatar.meta["kind"] == "invert" and measured.avatar.meta["seed"] == 3

    again = measure_subject(pipeline, subject, None, lpips, seed=3, views={"held_out": [2, 6], "other": []})
    assert set(again.scores) == {"inverted"} and set(again.scores["inverted"]) == {"held_out"}
    assert again.scores["inverted"]["held_out"] == measured.scores["inverted"]["held_out"]  # same image and seed
    other_seed = measure_subject(pipeline, subject, None, lpips, seed=4, options=SampleOptions(sampler="ddim"),
                                 views={"input": [0]})
    assert other_seed.avatar.meta["sampler"] == "ddim" and not torch.equal(other_seed.avatar.planes,
                                                                            measured.avatar.planes)


def test_measure_subject_refuses_bad_views_and_planes(pipeline: GenerationPipeline, lpips: LPIPS,
                                                       cfg: RodinConfig) -> None:
    subject = synthetic_subject(3, cfg)
    with pytest.raises(ValueError, match=r"unknown groups \['front'\], indices \[8\]"):
        measure_subject(pipeline, subject, None, lpips, seed=0, views={"front": [0], "held_out": [8]})
    with pytest.raises(ValueError, match=r"fitted planes of subject 3 have shape \(3, 2, 8, 8\).*\(3, 4, H, W\)"):
        measure_subject(pipeline, subject, torch.zeros(3, 2, 8, 8), lpips, seed=0)


def test_evaluation_imports_no_orchestration() -> None:
    source = Path(__file__).resolve().parents[3] / "rodin_core" / "evaluation" / "reconstruction.py"
    imports = [line for line in source.read_text().splitlines() if line.startswith(("import ", "from "))]
    assert imports and not [line for line in imports if any(m in line for m in ("prefect", "ray", "workflows", "bpy"))]
