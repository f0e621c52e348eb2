"""Table 4 metrics of a dataset root (rodin_core.evaluation.reconstruction_job; paper §4.5, appendix C.5).

The root is :func:`tests.evaluation_data.make_reconstruction_root`: renders of 4 subjects, their fitted
tri-planes (subject 3's fit failed) and tiny random checkpoints trained with ``corpus.subjects=4`` and
``corpus.holdout_subjects=2``: subjects 2 and 3 are the held-out ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rodin_core.evaluation.reconstruction_job import (
    ReconstructionInputError,
    fitted_planes,
    measure_reconstruction,
)
from rodin_core.fitting.shard_job import torch_threads
from rodin_core.metrics import psnr

from ...evaluation_data import HOLDOUT, SIZE, make_reconstruction_root
from ...generation_data import generation_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    with torch_threads(1):
        return make_reconstruction_root(tmp_path_factory.mktemp("reconstruction") / "data", generation_config(*HOLDOUT))


def test_the_held_out_subjects_are_measured_against_their_views(root: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        report = measure_reconstruction(root, seed=1, lpips="stlpips-vgg", other_views=2)
    assert report.held_out == [2, 3] and [r.subject_id for r in report.results] == [2, 3]
    assert "subject 3 has no fitted tri-plane" in caplog.text
    with_fit, without = report.results
    assert set(with_fit.scores) == {"inverted", "fitted"} and set(without.scores) == {"inverted"}
    views = {"held_out": (2, 6), "other": (3, 5), "input": (0,)}  # split_views(8, 2) and 2 of the rest
    assert {g: s.views for g, s in with_fit.scores["fitted"].items()} == views
    assert with_fit.renders["inverted"]["held_out"].shape == (2, SIZE, SIZE, 3)
    seen = {source: with_fit.renders[source]["held_out"].astype(np.float32) / 255.0 for source in ("inverted", "fitted")}
    assert with_fit.vs_fitted["held_out"] == tuple(psnr(a, b) for a, b in zip(*seen.values(), strict=True))
    assert with_fit.psnr_vs_fitted("held_out") == pytest.approx(np.mean(with_fit.vs_fitted["held_out"]))
    assert set(with_fit.vs_fitted) == set(views) and without.vs_fitted == {}  # no fitted planes: nothing to compare
    assert report.summary["inverted"]["held_out"].subjects == 2 and report.summary["fitted"]["held_out"].subjects == 1
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert [(s["subject_id"], s["held_out"]) for s in data["subjects"]] == [(2, True), (3, True)]
    assert data["subjects"][0]["psnr_vs_fitted"]["input"]["per_view"] == [with_fit.vs_fitted["input"][0]]
    assert data["lpips"]["network"] == "stlpips-vgg" and data["checkpoint_steps"] == {"base": 0, "upsampler": 0}
    assert data["options"] == {"guidance_scale": 1.0, "sampler": None, "steps": None} and data["seed"] == 1
    inverted = data["mean"]["inverted"]["held_out"]
    assert inverted["subjects"] == 2 and all(math.isfinite(inverted[m]) for m in ("psnr", "ssim", "lpips"))
    expected = np.mean([r.scores["inverted"]["held_out"].mean.psnr for r in report.results])
    assert inverted["psnr"] == pytest.approx(expected)
    table = report.table().splitlines()
    assert [line.split()[:2] for line in table[2:]] == [["2", "inverted"], ["2", "fitted"], ["3", "inverted"],
                                                        ["mean", "inverted"], ["mean", "fitted"]]


def test_chosen_subjects_are_flagged_when_training_saw_them(root: str, caplog: pytest.LogCaptureFixture) -> None:
    assert sorted(fitted_planes(root, [0, 1, 3])) == [0, 1]  # subject 3's fit failed
    with caplog.at_level("WARNING"):
        report = measure_reconstruction(root, subjects=[2, 0], lpips="stlpips-vgg", other_views=0)
    assert "subjects [0] were seen in training" in caplog.text
    assert [(s["subject_id"], s["held_out"]) for s in report.to_dict()["subjects"]] == [(0, False), (2, True)]
    assert set(report.results[0].scores["inverted"]) == {"held_out", "input"}  # other_views=0: no "other" group
    with pytest.raises(ReconstructionInputError, match=r"subjects \[9\] are not rendered under .*ids: 0..3"):
        measure_reconstruction(root, subjects=[9, 1])


def test_roots_without_unseen_subjects_say_what_to_do(tmp_path: Path) -> None:
    everyone = make_reconstruction_root(tmp_path / "none", generation_config(*HOLDOUT[2:], "corpus.subjects=4",
                                                                            "corpus.holdout_subjects=0"))
    with pytest.raises(ReconstructionInputError, match=r"held no subject out .*corpus.holdout_subjects > 0.*--subjects"):
        measure_reconstruction(everyone)
    elsewhere = make_reconstruction_root(tmp_path / "other", generation_config(*HOLDOUT[2:]))  # holds out 14, 15
    with pytest.raises(ReconstructionInputError, match=r"held-out subjects 14..15 is rendered .*rodin render --out"):
        measure_reconstruction(elsewhere)
    with pytest.raises(ReconstructionInputError, match=r"no committed base and upsampler checkpoint .*rodin train all"):
        measure_reconstruction(str(tmp_path / "empty"))
