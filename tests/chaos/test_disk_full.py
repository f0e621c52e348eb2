"""A full disk (ENOSPC) while a stage commits its shards: one line naming the stage, the shards and the
command to run again; nothing half-committed; once there is room, that command finishes the job."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import (
    assert_one_line_error,
    attempts,
    failure_records,
    outcome_figures,
    record,
    rerun_command,
    run,
    run_env,
    store_counts,
)
from .scenarios import FIT_ARGS, RENDER_ARGS, SHARDS, SUBJECTS

pytestmark = pytest.mark.chaos


def full_disk_then_rerun(args: list[str], root: Path, folder: str, kind: str, env: dict[str, str],
                         markers: Path) -> tuple[str, float]:
    """Run ``rodin ARGS`` with every ``folder`` commit on a full disk, check the damage, run the named command."""
    done = run(args, run_env(env, f"enospc={folder}", markers))
    line = assert_one_line_error(done, f"{kind} shards failed", "No space left on device", SHARDS[0], SHARDS[-1])
    assert list(markers.glob("enospc-*")), "the full disk was never hit"
    assert attempts(root, folder) == {}  # no shard half-committed
    assert not list((root / folder / "manifests").glob("*.tmp"))  # no half-written manifest left beside them
    assert failure_records(root, folder) == SUBJECTS  # one failed attempt per shard: a full disk is not retried
    again = rerun_command(line)
    assert again == args
    recovered = run(again, run_env(env))
    assert recovered.code == 0, recovered.err[-4000:]
    return line, recovered.seconds


def test_a_full_disk_during_the_render_commits(shared_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "data"
    args = ["render", "--out", str(out), *RENDER_ARGS, "--runner", "threads"]
    _, seconds = full_disk_then_rerun(args, out, "renders", "render", shared_env, tmp_path / "markers")
    counts = store_counts(out, "renders")
    assert counts.shards == SHARDS and counts.subjects == list(range(SUBJECTS))
    assert counts.duplicated == {} and counts.damaged == []
    record("enospc_render_commit", outcome_figures("ENOSPC at commit", "render", {}, attempts(out, "renders"),
                                                   counts, 0, seconds, "one line; re-run finishes"))


@pytest.mark.chaos_long
def test_a_full_disk_during_the_fit_commits(shared_env: dict[str, str], corpus: Path, tmp_path: Path) -> None:
    args = ["fit", "--renders", str(corpus), *FIT_ARGS, "--runner", "threads"]
    _, seconds = full_disk_then_rerun(args, corpus, "triplanes", "tri-plane", shared_env, tmp_path / "markers")
    counts = store_counts(corpus, "triplanes")
    assert counts.shards == SHARDS and counts.subjects == list(range(SUBJECTS))
    assert counts.duplicated == {} and counts.damaged == []
    record("enospc_fit_commit", outcome_figures("ENOSPC at commit", "fit", {}, attempts(corpus, "triplanes"),
                                                counts, 0, seconds, "one line; re-run finishes"))


@pytest.mark.chaos_long
def test_a_full_disk_during_the_checkpoint_commit(shared_env: dict[str, str], fitted: Path, tmp_path: Path) -> None:
    from .scenarios import TRAIN_ARGS

    args = ["train", "base", "--out", str(fitted), *FIT_ARGS, *TRAIN_ARGS]
    done = run(args, run_env(shared_env, "enospc=checkpoints", tmp_path / "markers"))
    line = assert_one_line_error(done, "base", "No space left on device", "free space",
                                 f"Launch the same command again to resume from scratch (no checkpoint was committed): "
                                 f"`rodin train base --out {fitted}`")
    assert "retries" not in line  # a full disk is not retried (by Ray Train or Prefect)
    assert attempts(fitted, "checkpoints") == {}
    assert not list((fitted / "checkpoints" / "manifests").glob("*.tmp"))
    recovered = run(args, run_env(shared_env))  # the same command, as the line says
    assert recovered.code == 0, recovered.err[-4000:]
    counts = store_counts(fitted, "checkpoints")
    assert counts.shards == ["base"] and counts.damaged == []
    record("enospc_checkpoint_commit", outcome_figures("ENOSPC at commit", "train", {},
                                                       attempts(fitted, "checkpoints"), counts, 0,
                                                       recovered.seconds, "one line; re-run finishes"))
