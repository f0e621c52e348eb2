"""A renders manifest deleted between the render and the fit: the fit fits the other shards, then names the
waiting one and the commands that finish the job; following them re-renders one shard and fits one."""

from __future__ import annotations

from pathlib import Path

import pytest

from rodin_core.datasets.layout import RENDERS_STAGE, TRIPLANES_STAGE
from rodin_core.storage import open_store

from .harness import (
    assert_one_line_error,
    attempts,
    outcome_figures,
    record,
    rerun_command,
    run,
    run_env,
    store_counts,
)
from .scenarios import FIT_ARGS, RENDER_ARGS, SHARDS, SUBJECTS

pytestmark = pytest.mark.chaos

GONE = SHARDS[1]


def test_a_deleted_renders_manifest_makes_its_fitting_shard_wait(corpus: Path, shared_env: dict[str, str]) -> None:
    renders_before = attempts(corpus, RENDERS_STAGE)
    open_store(str(corpus)).stage(RENDERS_STAGE).delete_manifest(GONE)
    fit = ["fit", "--renders", str(corpus), *FIT_ARGS, "--runner", "threads"]
    done = run(fit, run_env(shared_env))
    line = assert_one_line_error(done, "tri-plane shards failed", GONE, f"`rodin render --out {corpus}`")
    fitted = attempts(corpus, TRIPLANES_STAGE)
    assert sorted(fitted) == [s for s in SHARDS if s != GONE]  # the others are fitted and committed

    render = [*rerun_command(line[: line.index("then fit again")]), *RENDER_ARGS, "--runner", "threads"]  # as named
    assert render[:3] == ["render", "--out", str(corpus)]
    rendered = run(render, run_env(shared_env))
    assert rendered.code == 0, rendered.err[-4000:]
    refit = run(rerun_command(line), run_env(shared_env))
    assert refit.code == 0, refit.err[-4000:]

    renders_after = attempts(corpus, RENDERS_STAGE)
    assert {s: a for s, a in renders_after.items() if s != GONE} == {s: a for s, a in renders_before.items()
                                                                     if s != GONE}
    after, counts = attempts(corpus, TRIPLANES_STAGE), store_counts(corpus, TRIPLANES_STAGE)
    assert counts.shards == SHARDS and counts.subjects == list(range(SUBJECTS))
    assert counts.duplicated == {} and counts.damaged == [] and store_counts(corpus, RENDERS_STAGE).damaged == []
    assert {s: after[s] for s in fitted} == fitted  # the fitted shards are not fitted again
    record("deleted_renders_manifest", outcome_figures(
        "manifest deleted between stages", "fit", fitted, after, counts, 0, rendered.seconds + refit.seconds,
        "fit waits, names render + fit; both finish"))
