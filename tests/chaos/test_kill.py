"""SIGKILL of a ``rodin`` driver or of one of its Ray workers, mid-render, mid-fit, mid-training and mid-commit.

Each run owns its Prefect server and its Ray instance. The test records every process the run
starts while it runs, kills one, and checks that: nothing the run started outlives a killed
driver; the shards committed before the kill are still committed, by the same attempt; the one
being committed is not; and running the same command again finishes the job, every subject in
exactly one sound shard.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from .conftest import private_home
from .harness import (
    ProcessTree,
    attempts,
    outcome_figures,
    record,
    run,
    run_env,
    start,
    store_counts,
    wait_for,
)
from .scenarios import FIT_ARGS, RENDER_ARGS, SHARDS, SUBJECTS

pytestmark = pytest.mark.chaos


def paused(markers: Path) -> list[Path]:
    return sorted(markers.glob("paused-*"))


def paused_pid(marker: Path) -> int:
    """The PID of the process that left the ``paused-PID-N`` marker."""
    return int(marker.name.split("-")[1])


def kill_driver_when_paused(args: list[str], env: dict[str, str], markers: Path,
                            wait_s: float = 900) -> tuple[ProcessTree, str]:
    """Start ``rodin ARGS``, SIGKILL it once a process of the run paused at the injected point; the tree and stderr."""
    process = start(args, env)
    with ProcessTree(process.pid) as tree:
        try:
            wait_for(lambda: paused(markers), wait_s, "pause at the injected point", process)
            tree.snapshot()
            process.send_signal(signal.SIGKILL)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return tree, err


def assert_nothing_left(tree: ProcessTree, *expected: str) -> None:
    """Each of ``expected`` (command-line text) was seen in the tree, and no process of the tree is alive."""
    for text in expected:
        assert tree.matching(text), f"no {text!r} process seen in the run's tree: {sorted(tree.seen.values())}"
    # Ray's agents notice a dead raylet at once but first try to report it to the dead GCS, which they give up
    # on after Ray's GCS reconnect timeout (60 s): they are gone within that, plus slack for a busy machine.
    assert tree.survivors(wait_s=120) == {}, "processes of the killed run are still alive"


def test_driver_sigkilled_mid_render_commit_leaves_nothing_running_and_the_rerun_finishes(
        prefect_template: Path, tmp_path: Path) -> None:
    out, markers = tmp_path / "data", tmp_path / "markers"
    env = run_env(private_home(prefect_template, tmp_path / "prefect"), f"pause=renders/manifests/{SHARDS[-1]}",
                  markers)
    args = ["render", "--out", str(out), *RENDER_ARGS]
    tree, err = kill_driver_when_paused(args, env, markers)
    assert "Traceback" not in err, err[-4000:]
    assert_nothing_left(tree, "prefect.server.api.server", "gcs_server", "raylet", "render.blender_worker")

    before = attempts(out, "renders")
    assert SHARDS[-1] not in before  # its manifest was being written: not committed
    assert list((out / "renders" / "manifests").glob(f"{SHARDS[-1]}.json.*.tmp")), "the commit was not under way"

    done = run(args, run_env(private_home(prefect_template, tmp_path / "prefect-rerun")))
    assert done.code == 0, done.err[-4000:]
    after, counts = attempts(out, "renders"), store_counts(out, "renders")
    assert counts.shards == SHARDS and counts.subjects == list(range(SUBJECTS))
    assert counts.duplicated == {} and counts.damaged == []
    assert {s: after[s] for s in before} == before  # what was committed is kept, not committed again
    record("driver_sigkill_render_commit", outcome_figures(
        "SIGKILL driver mid-commit", "render", before, after, counts, 0, done.seconds, "re-run finishes"))


@pytest.mark.chaos_long
def test_driver_sigkilled_mid_fit_commit(prefect_template: Path, corpus: Path, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    env = run_env(private_home(prefect_template, tmp_path / "prefect"), f"pause=triplanes/manifests/{SHARDS[-1]}",
                  markers)
    args = ["fit", "--renders", str(corpus), *FIT_ARGS]
    tree, err = kill_driver_when_paused(args, env, markers)
    assert "Traceback" not in err, err[-4000:]
    assert_nothing_left(tree, "prefect.server.api.server", "gcs_server", "raylet")
    before = attempts(corpus, "triplanes")
    assert SHARDS[-1] not in before

    done = run(args, run_env(private_home(prefect_template, tmp_path / "prefect-rerun")))
    assert done.code == 0, done.err[-4000:]
    after, counts = attempts(corpus, "triplanes"), store_counts(corpus, "triplanes")
    assert counts.shards == SHARDS and counts.subjects == list(range(SUBJECTS)) and counts.damaged == []
    assert {s: after[s] for s in before} == before
    record("driver_sigkill_fit_commit", outcome_figures(
        "SIGKILL driver mid-commit", "fit", before, after, counts, 0, done.seconds, "re-run finishes"))


@pytest.mark.chaos_long
@pytest.mark.parametrize("stage", ["render", "fit"])
def test_ray_worker_sigkilled_mid_commit_is_retried(stage: str, prefect_template: Path, corpus: Path,
                                                    tmp_path: Path) -> None:
    """The Ray worker committing the last shard dies; the task is retried in a new worker, the run finishes."""
    markers = tmp_path / "markers"
    if stage == "render":
        store, folder = tmp_path / "fresh", "renders"
        args = ["render", "--out", str(store), *RENDER_ARGS]
    else:
        store, folder = corpus, "triplanes"
        args = ["fit", "--renders", str(corpus), *FIT_ARGS]
    env = run_env(private_home(prefect_template, tmp_path / "prefect"),
                  f"pause=once:{folder}/manifests/{SHARDS[-1]}", markers)
    begin = time.monotonic()
    process = start(args, env)
    with ProcessTree(process.pid) as tree:
        try:
            wait_for(lambda: paused(markers), 900, "pause at the injected point", process)
            worker = paused_pid(paused(markers)[0])
            assert worker != process.pid and worker in tree.seen, "the commit did not run in a Ray worker"
            killed_at = time.monotonic()
            os.kill(worker, signal.SIGKILL)
            _out, err = process.communicate(timeout=900)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, err[-4000:]
    assert "Traceback" not in err, err[-4000:]
    assert tree.survivors() == {}
    counts = store_counts(store, folder)
    assert counts.shards == SHARDS and counts.subjects == list(range(SUBJECTS))
    assert counts.duplicated == {} and counts.damaged == []
    tried = len([p for p in (store / folder / "data" / SHARDS[-1]).iterdir() if re.match(r"\d{8}T", p.name)])
    assert tried >= 2  # the killed attempt and the retry that committed
    record(f"ray_worker_sigkill_{stage}_commit", outcome_figures(
        "SIGKILL Ray worker mid-commit", stage, {}, attempts(store, folder), counts, tried - 1,
        time.monotonic() - killed_at, f"retried in the run ({time.monotonic() - begin:.0f} s in all)"))


@pytest.mark.chaos_long
def test_driver_sigkilled_mid_training_step_resumes(prefect_template: Path, fitted: Path, tmp_path: Path) -> None:
    from .scenarios import TRAIN_ARGS

    args = ["train", "base", "--out", str(fitted), *FIT_ARGS, *TRAIN_ARGS]
    process = start(args, run_env(private_home(prefect_template, tmp_path / "prefect")))
    with ProcessTree(process.pid) as tree:
        try:
            wait_for(lambda: tree.matching("RayTrainWorker") and list(fitted.glob("checkpoints/runs/*/step-*")),
                     900, "a training step", process)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert_nothing_left(tree, "prefect.server.api.server", "gcs_server", "raylet")
    before = attempts(fitted, "checkpoints")
    done = run(args, run_env(private_home(prefect_template, tmp_path / "prefect-rerun")))
    assert done.code == 0, done.err[-4000:]
    counts = store_counts(fitted, "checkpoints")
    assert "base" in counts.shards and counts.damaged == []
    record("driver_sigkill_training_step", outcome_figures(
        "SIGKILL driver mid-step", "train", before, attempts(fitted, "checkpoints"), counts, 0, done.seconds,
        "re-run resumes"))


@pytest.mark.chaos_long
def test_driver_sigkilled_mid_checkpoint_commit(prefect_template: Path, fitted: Path, tmp_path: Path) -> None:
    from .scenarios import TRAIN_ARGS

    markers = tmp_path / "markers"
    args = ["train", "base", "--out", str(fitted), *FIT_ARGS, *TRAIN_ARGS]
    env = run_env(private_home(prefect_template, tmp_path / "prefect"), "pause=checkpoints/manifests/base", markers)
    tree, err = kill_driver_when_paused(args, env, markers)
    assert "Traceback" not in err, err[-4000:]
    assert_nothing_left(tree, "prefect.server.api.server", "gcs_server", "raylet")
    assert "base" not in attempts(fitted, "checkpoints")
    done = run(args, run_env(private_home(prefect_template, tmp_path / "prefect-rerun")))
    assert done.code == 0, done.err[-4000:]
    counts = store_counts(fitted, "checkpoints")
    assert counts.shards == ["base"] and counts.damaged == []
    record("driver_sigkill_checkpoint_commit", outcome_figures(
        "SIGKILL driver mid-commit", "train", {}, attempts(fitted, "checkpoints"), counts, 0, done.seconds,
        "re-run finishes"))
