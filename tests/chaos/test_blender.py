"""Blender crashing (SIGSEGV) or hanging inside a render shard: the shard is retried, Blender is never left
running, and a shard that fails every try is one line naming it and the command that finishes the job."""

from __future__ import annotations

from pathlib import Path

import pytest

from rodin_core.datasets.layout import RENDERS_STAGE

from .harness import (
    ProcessTree,
    assert_one_line_error,
    attempts,
    failure_records,
    outcome_figures,
    record,
    rerun_command,
    run,
    run_env,
    start,
    store_counts,
)

pytestmark = [pytest.mark.chaos, pytest.mark.chaos_long]

ONE_SHARD = ["--subjects", "1", "--shard-size", "1", "--views", "2", "--resolution", "16", "--set", "render.samples=2",
             "--runner", "threads"]
"""One subject in one shard: each Blender try costs one Blender start."""


def run_watched(args: list[str], env: dict[str, str]) -> tuple[int, str, ProcessTree]:
    process = start(args, env)
    with ProcessTree(process.pid) as tree:
        try:
            _, err = process.communicate(timeout=1800)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return process.returncode, err, tree


def test_blender_crashing_once_costs_one_retry(shared_env: dict[str, str], tmp_path: Path) -> None:
    out, markers = tmp_path / "data", tmp_path / "markers"
    code, err, tree = run_watched(["render", "--out", str(out), *ONE_SHARD],
                                  run_env(shared_env, "blender=crash:1", markers))
    assert code == 0 and "Traceback" not in err, err[-4000:]
    assert len(list(markers.glob("blender-*"))) == 2 and failure_records(out, RENDERS_STAGE) == 1
    assert tree.survivors(wait_s=10) == {}
    counts = store_counts(out, RENDERS_STAGE)
    assert counts.shards == ["shard-000000"] and counts.damaged == []
    record("blender_crash_once", outcome_figures("Blender crash (once)", "render", {}, attempts(out, RENDERS_STAGE),
                                                 counts, 1, 0.0, "retried in the run"))


def test_blender_crashing_every_time_is_one_line_and_the_rerun_finishes(shared_env: dict[str, str],
                                                                        tmp_path: Path) -> None:
    out, markers = tmp_path / "data", tmp_path / "markers"
    args = ["render", "--out", str(out), *ONE_SHARD]
    done = run(args, run_env(shared_env, "blender=crash:0", markers))
    line = assert_one_line_error(done, "render shards failed", "shard-000000", "exited with code -11")
    assert failure_records(out, RENDERS_STAGE) == 3 and attempts(out, RENDERS_STAGE) == {}  # 1 try + 2 retries
    again = run(rerun_command(line), run_env(shared_env))
    assert again.code == 0, again.err[-4000:]
    counts = store_counts(out, RENDERS_STAGE)
    assert counts.shards == ["shard-000000"] and counts.damaged == []
    record("blender_crash_always", outcome_figures("Blender crash (every try)", "render", {},
                                                   attempts(out, RENDERS_STAGE), counts, 2, again.seconds,
                                                   "one line; re-run finishes"))


def test_a_hanging_blender_is_killed_at_its_timeout_and_retried(shared_env: dict[str, str], tmp_path: Path) -> None:
    out, markers = tmp_path / "data", tmp_path / "markers"
    timeout = ["--set", "render.timeout_s=240"]  # a sound try takes far less, even on a busy shared core
    code, err, tree = run_watched(["render", "--out", str(out), *ONE_SHARD, *timeout],
                                  run_env(shared_env, "blender=hang:1", markers))
    assert code == 0 and "Traceback" not in err, err[-4000:]
    (failure,) = [r for r in _records(out)]
    assert failure["error_type"] == "BlenderTimeoutError"
    hung = tree.matching("render.blender_worker")
    assert len(hung) == 2 and tree.survivors(wait_s=10) == {}  # the hung Blender was killed, not left behind
    counts = store_counts(out, RENDERS_STAGE)
    assert counts.shards == ["shard-000000"] and counts.damaged == []
    record("blender_hang", outcome_figures("Blender hang", "render", {}, attempts(out, RENDERS_STAGE), counts, 1,
                                           240.0, "killed at render.timeout_s, retried in the run"))


def _records(out: Path) -> list[dict]:
    from rodin_core.storage import open_store

    return open_store(str(out)).stage(RENDERS_STAGE).failures()
