"""Table 4 metrics of a dataset root (rodin_core.evaluation.reconstruction_job; paper §4.5, appendix C.5).

The root holds what the stages commit: renders of 4 subjects (8 views of a coloured disc, 24 px, the
render rig's cameras), their fitted tri-planes (subject 3's fit failed) and the tiny random
checkpoints and decoder of :mod:`tests.generation_data`, trained with ``corpus.subjects=4`` and
``corpus.holdout_subjects=2``: subjects 2 and 3 are the held-out ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from rodin_core.cameras import make_rig
from rodin_core.config import RodinConfig
from rodin_core.datasets.layout import PLANES_FILE, RECORDS_FILE, VIEWS_TABLE
from rodin_core.datasets.renders import VIEWS_SCHEMA
from rodin_core.datasets.triplane_records import FitResult, planes_to_safetensors, records_table
from rodin_core.evaluation.reconstruction_job import (
    ReconstructionInputError,
    fitted_planes,
    measure_reconstruction,
)
from rodin_core.fitting.shard_job import torch_threads
from rodin_core.imaging import encode_png
from rodin_core.storage import open_store, shard_id_for

from ...generation_data import generation_config, make_generation_root

SIZE = 24
SHARDS = [[0, 1], [2, 3]]
FAILED = 3
HOLDOUT = ("corpus.subjects=4", "corpus.holdout_subjects=2", "render.views=8", "fit.holdout_views=2")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def subject_rows(subject_id: int, cfg: RodinConfig) -> list[dict]:
    """``views.parquet`` rows of one subject: a disc whose colour depends on the subject and the view."""
    render = cfg.render
    rig = make_rig(render.views, SIZE, render.fov_deg, render.camera_radius, render.elevation_min_deg,
                   render.elevation_max_deg)
    y, x = np.mgrid[0:SIZE, 0:SIZE] - (SIZE - 1) / 2
    inside = x**2 + y**2 < (SIZE / 3) ** 2  # (H, W)
    rows = []
    for view in range(render.views):
        rgba = np.zeros((SIZE, SIZE, 4), np.uint8)  # (H, W, 4)
        rgba[inside] = (40 + 25 * view, 60 * subject_id, 200 - 20 * view, 255)
        rows.append({"subject_id": subject_id, "view_index": view, "png": encode_png(rgba),
                     "c2w": rig.c2w[view].ravel().tolist(), "intrinsics": rig.intrinsics.ravel().tolist(),
                     "width": SIZE, "height": SIZE})
    return rows


def fitted_of(subject_id: int, cfg: RodinConfig) -> torch.Tensor:
    size, channels = cfg.triplane.resolution, cfg.triplane.channels
    return 0.5 * torch.randn(3, channels, size, size, generator=torch.Generator().manual_seed(subject_id))


def make_reconstruction_root(root: Path, cfg: RodinConfig) -> str:
    """Checkpoints and decoder of ``cfg``, plus committed renders and tri-planes of subjects 0..3."""
    out = make_generation_root(root, cfg, stages=("base", "upsampler"))
    store = open_store(out)
    for index, ids in enumerate(SHARDS):
        writer = store.stage("renders").begin(shard_id_for(index))
        rows = [row for s in ids for row in subject_rows(s, cfg)]
        writer.write_table(VIEWS_TABLE, pa.Table.from_pylist(rows, schema=VIEWS_SCHEMA))
        writer.commit(ids, "renders-config", extra={"views": cfg.render.views})
        results = [FitResult(s, fitted_of(s, cfg), 25.0, 26.0, 10, 1.0, error="diverged" if s == FAILED else None)
                   for s in ids]
        writer = store.stage("triplanes").begin(shard_id_for(index))
        writer.write_bytes(PLANES_FILE, planes_to_safetensors(results))
        writer.write_table(RECORDS_FILE, records_table(results))
        writer.commit(ids, f"planes-{index}")
    return out


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
    assert report.summary["inverted"]["held_out"].subjects == 2 and report.summary["fitted"]["held_out"].subjects == 1
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert [(s["subject_id"], s["held_out"]) for s in data["subjects"]] == [(2, True), (3, True)]
    assert data["lpips"]["network"] == "stlpips-vgg" and data["checkpoint_steps"] == {"base": 0, "upsampler": 0}
    assert data["options"] == {"guidance_scale": 3.0, "sampler": "ancestral", "steps": None} and data["seed"] == 1
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
