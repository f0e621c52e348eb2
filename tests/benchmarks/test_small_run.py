"""benchmarks/small_run.py: the stages it runs, with which arguments, and how it resumes after a failure."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rodin_core.datasets.layout import (
    TEXT_EMBEDDING_SHARD,
    TEXT_EMBEDDING_STAGE,
    TEXT_EMBEDDING_WEIGHTS,
)
from rodin_core.storage import open_store

from .scripts import loaded_script

ALL = ["render", "fit", "text-embedding", "train", "text-prior", "evaluate", "sample", "interpolate", "mesh"]


@pytest.fixture(scope="module")
def script():
    with loaded_script("small_run") as module:
        yield module


def commit_avatar_clip(root: Path) -> str:
    """Commit a (content-free) avatar-CLIP shard under ``root``; the URI its weights file got."""
    stage = open_store(str(root)).stage(TEXT_EMBEDDING_STAGE)
    writer = stage.begin(TEXT_EMBEDDING_SHARD)
    entry = writer.write_bytes(TEXT_EMBEDDING_WEIGHTS, b"weights")
    writer.commit([0], "0" * 16)
    return f"{stage.uri}/{entry.path}"


class Recorder:
    """Runs nothing: records each command and answers with the status of ``fail`` for the stage named there."""

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.commands: list[list[str]] = []
        self.fail = fail or {}

    def __call__(self, argv: list[str]) -> int:
        self.commands.append(argv)
        name = argv[1] if argv[0] == "train" else argv[0]
        name = {"all": "train"}.get(name, name)
        return self.fail.get(name, 0)


def test_the_text_run_conditions_training_on_the_committed_avatar_clip(script, tmp_path: Path) -> None:
    weights = commit_avatar_clip(tmp_path)
    args = script.parse_args(["--out", str(tmp_path), "--samples", "32"])
    chosen = script.stages(args)
    assert [s.name for s in chosen] == ALL
    argv = {s.name: s.argv() for s in chosen}
    assert argv["render"] == ["render", "--preset", "small", "--config", script.DEFAULT_CONFIG, "--out", str(tmp_path)]
    assert argv["fit"][-4:] == ["--renders", str(tmp_path), "--out", str(tmp_path)]
    for name in ("train", "text-prior"):
        assert f"encoder.avatar_clip_weights={weights}" in argv[name]
        assert "encoder.kind=avatar_clip" in argv[name]
    assert argv["evaluate"] == ["evaluate", "--out", str(tmp_path), "--n", "32"]
    assert argv["mesh"][-1] == str(tmp_path / "small-run" / "samples" / "avatar-000.safetensors")


def test_without_text_the_encoder_is_the_configs_and_no_text_stage_runs(script, tmp_path: Path) -> None:
    chosen = script.stages(script.parse_args(["--out", str(tmp_path), "--no-text"]))
    assert [s.name for s in chosen] == [n for n in ALL if n not in ("text-embedding", "text-prior")]
    assert not any(arg.startswith("encoder.") for s in chosen for arg in s.argv())


def test_training_before_avatar_clip_is_one_line(script, tmp_path: Path) -> None:
    train = next(s for s in script.stages(script.parse_args(["--out", str(tmp_path)])) if s.name == "train")
    with pytest.raises(script.SmallRunError, match="no avatar-CLIP committed under .*text-embedding stage first"):
        train.argv()


def test_a_failed_stage_keeps_the_finished_ones_and_the_rerun_starts_at_it(script, tmp_path: Path) -> None:
    args = script.parse_args(["--out", str(tmp_path), "--no-text"])
    first = Recorder(fail={"train": 3})
    with pytest.raises(script.SmallRunError, match=r"stage train exited 3 .*re-run it alone with `rodin train all"):
        script.run_stages(args, first)
    assert [c[0] for c in first.commands] == ["render", "fit", "train"]
    record = json.loads((tmp_path / script.RECORD).read_text())
    assert {name: s["status"] for name, s in record["stages"].items()} == {"render": 0, "fit": 0, "train": 3}
    assert all(s["seconds"] >= 0 and s["attempts"] == 1 for s in record["stages"].values())

    second = Recorder()
    record = script.run_stages(args, second)
    assert [c[0] if c[0] != "train" else "train" for c in second.commands] == [
        "train", "evaluate", "sample", "interpolate", "mesh"]
    assert list(record["stages"]) == ["render", "fit", "train", "evaluate", "sample", "interpolate", "mesh"]
    assert record["stages"]["train"]["status"] == 0 and record["stages"]["train"]["attempts"] == 2
    assert record["total_s"] == pytest.approx(sum(s["seconds"] for s in record["stages"].values()), abs=0.2)

    third = Recorder()
    script.run_stages(args, third)
    assert third.commands == []


def test_a_killed_run_leaves_the_running_stages_seconds_and_the_next_attempt_adds_to_them(script, tmp_path: Path
                                                                                          ) -> None:
    args = script.parse_args(["--out", str(tmp_path), "--no-text", "--only", "render", "fit"])
    path = tmp_path / script.RECORD
    seen = []

    def killed(argv: list[str]) -> int:
        if argv[0] == "fit":
            time.sleep(0.35)  # several heartbeats
            seen.append(json.loads(path.read_text())["stages"]["fit"])
            raise KeyboardInterrupt  # the run is killed here
        return 0

    with pytest.raises(KeyboardInterrupt):
        script.run_stages(args, killed, heartbeat_s=0.05)
    beating = seen[0]
    assert beating["status"] == script.RUNNING and beating["attempts"] == 1 and beating["finished_at"] is None
    assert 0.0 < beating["seconds"] < 2.0  # written by a heartbeat while the stage ran
    left = json.loads(path.read_text())["stages"]["fit"]
    assert left["status"] == script.RUNNING and left["seconds"] >= 0.3

    def slow(argv: list[str]) -> int:
        time.sleep(0.1)
        return 0

    record = script.run_stages(args, slow, heartbeat_s=0.05)
    fit = record["stages"]["fit"]
    assert fit["status"] == 0 and fit["attempts"] == 2 and fit["started_at"] == left["started_at"]
    assert left["seconds"] + 0.1 <= fit["seconds"] + 0.05 and fit["seconds"] < left["seconds"] + 2.0
    assert record["stages"]["render"]["attempts"] == 1


def test_only_runs_the_named_stages_and_refuses_unknown_ones(script, tmp_path: Path) -> None:
    args = script.parse_args(["--out", str(tmp_path), "--no-text", "--only", "fit", "mesh"])
    assert [s.name for s in script.stages(args)] == ["fit", "mesh"]
    bad = script.parse_args(["--out", str(tmp_path), "--no-text", "--only", "text-prior"])
    with pytest.raises(script.SmallRunError, match=r"unknown stage\(s\) \['text-prior'\]"):
        script.stages(bad)


def test_a_remote_root_needs_a_picture_folder_and_few_samples_are_refused(script) -> None:
    with pytest.raises(script.SmallRunError, match="not a local folder: pass --dest"):
        script.stages(script.parse_args(["--out", "s3://bucket/small"]))
    with pytest.raises(SystemExit):
        script.parse_args(["--out", "x", "--samples", "1"])
