"""The ``evaluate`` flow behind ``rodin evaluate`` (workflows.evaluate) on the tiny dataset root of
:mod:`tests.evaluation_data`: renders, fitted tri-planes, statistics and the three stages' untrained but real
checkpoints. The flow run goes through the session's temporary Prefect server."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import yaml
from prefect.artifacts import Artifact
from prefect.flows import load_flow_from_entrypoint

from rodin_core.datasets.layout import EVALUATION_FOLDER
from rodin_core.evaluation import quality_job
from rodin_core.evaluation.features import VGGFeatures
from rodin_core.fitting.shard_job import torch_threads
from rodin_core.imaging import decode_png
from rodin_core.stage_specs import STAGE_NAMES
from workflows.cli import main
from workflows.evaluate import ARTIFACT_KEY, SHEET_ARTIFACT_KEY

from ..evaluation_data import HOLDOUT, SIZE, make_reconstruction_root
from ..generation_data import generation_config, make_generation_root

VGG_SIZE = 64
"""Side the VGG features read in this test: a few seconds for the 20 renders on one thread."""

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    with torch_threads(1):
        return make_reconstruction_root(tmp_path_factory.mktemp("evaluate") / "data", generation_config(*HOLDOUT),
                                        stages=STAGE_NAMES, stats=True)


def test_rodin_evaluate_writes_the_report_and_publishes_its_tables(prefect_server: float, root: str,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(quality_job, "VGGFeatures", partial(VGGFeatures, image_size=VGG_SIZE))  # 224 px in use
    assert main(["evaluate", "--out", root, "--n", "2", "--seed", "1", "--subjects", "1", "2"]) == 0
    printed = capsys.readouterr().out
    folder = Path(root) / EVALUATION_FOLDER
    names = ["report.json", "report.md", "samples.png", "neighbours.png"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
    assert printed.startswith((folder / "report.md").read_text())
    assert printed.rstrip().endswith("\n".join(f"  {folder / name}" for name in names))
    report = json.loads((folder / "report.json").read_text())
    assert report["samples"]["seeds"] == [1, 2] and report["samples"]["training_subjects"] == [0, 1]
    assert report["reconstruction"]["training"]["subjects"] == [1]
    assert report["reconstruction"]["held_out"]["subjects"] == [2]
    assert report["samples"]["frechet"]["samples_vs_training"]["label"] == "Fréchet distance on vgg16-stlpips"
    assert decode_png((folder / "samples.png").read_bytes()).shape[1] == 5 * SIZE  # view 0 and 4 others per row
    assert "| held-out | 1 | held-out views (2) |" in Artifact.get(ARTIFACT_KEY).data
    assert "data:image/png;base64," in Artifact.get(SHEET_ARTIFACT_KEY).data


def test_rodin_evaluate_refuses_bad_input_before_starting_prefect(tmp_path: Path, root: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def one_line(argv: list[str]) -> str:
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1 and "Traceback" not in captured.err
        return captured.err

    assert "argument --n: must be a positive integer, got 0" in one_line(["evaluate", "--out", root, "--n", "0"])
    assert "`rodin train all --out" in one_line(["evaluate", "--out", str(tmp_path / "empty")])
    no_prior = make_generation_root(tmp_path / "no-prior", generation_config(), stages=("base", "upsampler"))
    assert "`rodin train prior --out" in one_line(["evaluate", "--out", no_prior])
    assert "pass --preset tiny" in one_line(["evaluate", "--out", root, "--preset", "small"])
    err = one_line(["evaluate", "--out", root, "--clip-pretrained", str(tmp_path / "clip.safetensors")])
    assert "does not exist" in err and "--clip-pretrained" in err and "open_clip.create_model" in err
    assert "pass --features clip" in one_line(["evaluate", "--out", root, "--features", "vgg", "--clip-model", "RN50"])


def test_evaluate_deployment_points_at_the_flow() -> None:
    deployments = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    entry = next(d for d in deployments if d["entrypoint"] == "workflows.evaluate:evaluate")
    assert entry["name"] == "tiny" and entry["work_pool"]["name"] == "rodin-process"
    loaded = load_flow_from_entrypoint(str(REPO_ROOT / "workflows" / "evaluate.py") + ":evaluate")
    assert loaded.name == "evaluate"
    assert set(entry["parameters"]) <= set(loaded.parameters.properties)
