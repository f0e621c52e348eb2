"""Blender crashing (SIGSEGV) or hanging inside a render shard: the shard is retried, Blender is never left
running, and a shard that fails every try is one line naming it and the command that finishes the job. The
process running a shard attempt killed with SIGKILL takes its Blender with it."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rodin_core.config.corpus import RenderConfig
from rodin_core.datasets.layout import RENDERS_STAGE

from .harness import (
    REPO_ROOT,
    ProcessTree,
    alive,
    assert_one_line_error,
    attempts,
    children,
    command_line,
    failure_records,
    outcome_figures,
    record,
    rerun_command,
    run,
    run_env,
    start,
    store_counts,
    wait_for,
)

pytestmark = [pytest.mark.chaos, pytest.mark.skipif(importlib.util.find_spec("bpy") is None,
                                                    reason="needs the bpy module (pip install 'rodin[render]')")]

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


@pytest.mark.chaos_long
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


@pytest.mark.chaos_long
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


@pytest.mark.chaos_long
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


SHARD_ATTEMPT = ("import json, sys\nfrom pathlib import Path\nfrom render.launcher import run_blender_shard\n"
                 "run_blender_shard(json.loads(sys.argv[1]), Path(sys.argv[2]), timeout_s=3600)")
"""What a Ray worker or a thread of the run does for one render shard attempt: one Blender run, waited on."""


def test_blender_dies_with_the_process_running_its_shard_attempt(tmp_path: Path) -> None:
    """SIGKILL of a Ray worker runs none of its clean-up: its Blender must still not go on rendering into the
    dead attempt's folder. Blender hangs at its first view here, so only its tie to the killed process ends it."""
    markers = tmp_path / "markers"
    render = dataclasses.asdict(RenderConfig(views=2, resolution=16, samples=2))
    spec = {"subject_ids": [0], "seed": 0, "render": render, "asset_dir": None, "asset_catalog": {}}
    attempt = subprocess.Popen([sys.executable, "-c", SHARD_ATTEMPT, json.dumps(spec), str(tmp_path / "attempt")],
                               cwd=REPO_ROOT, env=run_env({}, "blender=hang:0", markers), start_new_session=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    blenders: list[int] = []
    try:
        wait_for(lambda: list(markers.glob("blender-*")), 300, "Blender start", attempt)
        blenders = [pid for pid in children(attempt.pid) if "render.blender_worker" in command_line(pid)]
        assert len(blenders) == 1, {pid: command_line(pid) for pid in children(attempt.pid)}
        attempt.send_signal(signal.SIGKILL)
        attempt.wait(timeout=30)
        deadline = time.monotonic() + 10
        while alive(blenders[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(blenders[0]), f"Blender {blenders[0]} outlived the killed shard attempt"
    finally:
        for pid in [attempt.pid, *blenders]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        attempt.wait()
        attempt.stderr.close()


def _records(out: Path) -> list[dict]:
    from rodin_core.storage import open_store

    return open_store(str(out)).stage(RENDERS_STAGE).failures()
