"""Two ``rodin render`` runs at once on one machine and one dataset root: each has its own Prefect server and
Ray instance, both finish, and every subject is committed in exactly one sound shard."""

from __future__ import annotations

from pathlib import Path

import pytest

from rodin_core.datasets.layout import RENDERS_STAGE

from .conftest import private_home
from .harness import (
    ProcessTree,
    attempts,
    outcome_figures,
    record,
    run_env,
    start,
    store_counts,
)
from .scenarios import RENDER_ARGS, SHARDS, SUBJECTS

pytestmark = pytest.mark.chaos


def test_two_runs_at_once_share_nothing_and_commit_each_shard_once(prefect_template: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    args = ["render", "--out", str(out), *RENDER_ARGS]
    processes = [start(args, run_env(private_home(prefect_template, tmp_path / f"prefect-{i}"))) for i in range(2)]
    trees = [ProcessTree(p.pid).__enter__() for p in processes]
    try:
        results = [p.communicate(timeout=1200) for p in processes]
    finally:
        for tree in trees:
            tree.__exit__(None, None, None)
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 0 and "Traceback" not in err, err[-4000:]
    for tree in trees:
        assert tree.matching("prefect.server.api.server") and tree.matching("raylet"), sorted(tree.seen.values())
    assert set(trees[0].seen).isdisjoint(trees[1].seen)  # a server and a Ray instance each
    assert [tree.survivors(wait_s=10) for tree in trees] == [{}, {}]
    counts = store_counts(out, RENDERS_STAGE)
    assert counts.shards == SHARDS and counts.subjects == list(range(SUBJECTS))
    assert counts.duplicated == {} and counts.damaged == []
    record("two_runs_at_once", outcome_figures("two runs at once", "render", {}, attempts(out, RENDERS_STAGE),
                                               counts, 0, 0.0, "both finish, each shard once"))
