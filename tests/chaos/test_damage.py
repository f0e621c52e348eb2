"""A corrupted or truncated file in a stage's store: ``rodin verify`` and the stage that reads it name the
shard and the command that re-creates it; following that command repairs the store, nothing else is redone."""

from __future__ import annotations

from pathlib import Path

import pytest

from rodin_core.datasets.checkpoints import committed_step
from rodin_core.datasets.layout import (
    CHECKPOINTS_STAGE,
    PLANES_FILE,
    RENDERS_STAGE,
    TRIPLANES_STAGE,
    VIEWS_TABLE,
)

from .harness import (
    assert_one_line_error,
    attempts,
    outcome_figures,
    record,
    repair_command,
    rerun_command,
    run,
    run_env,
    store_counts,
)
from .scenarios import (
    DAMAGE,
    FIT_ARGS,
    RENDER_ARGS,
    SHARDS,
    SUBJECTS,
    TRAIN_ARGS,
    data_file,
)

pytestmark = pytest.mark.chaos

DAMAGED = SHARDS[1]


def verify_names(root: Path, stage: str, shard_id: str) -> str:
    """``rodin verify`` fails and names the damaged shard on one line with its repair; that line."""
    done = run(["verify", "--out", str(root)], run_env({}))
    assert done.code == 1 and "Traceback" not in done.err, done.out + done.err
    lines = [line for line in done.out.splitlines() if line.startswith(f"damaged {stage}/")]
    assert len(lines) == 1 and lines[0].startswith(f"damaged {stage}/{shard_id}: "), done.out
    return lines[0]


def follow_repair(line: str, root: Path, extra: list[str], env: dict[str, str]) -> float:
    """Delete the manifest the repair names, if it names one, and run its command with the stage's options; its
    seconds."""
    if "; delete " in line:
        manifest = line[line.index("; delete ") + len("; delete "):].split(" and ", 1)[0]
        assert manifest == f"{root}/{manifest.split(str(root) + '/', 1)[1]}"
        Path(manifest).unlink()
    args = [*repair_command(line), *extra]
    done = run(args, run_env(env))
    assert done.code == 0, done.err[-4000:]
    return done.seconds


@pytest.mark.parametrize("damage", ["corrupted", pytest.param("truncated", marks=pytest.mark.chaos_long)])
def test_damaged_renders_are_named_and_re_rendered(damage: str, corpus: Path, shared_env: dict[str, str]) -> None:
    before = attempts(corpus, RENDERS_STAGE)
    DAMAGE[damage](data_file(corpus, RENDERS_STAGE, DAMAGED, VIEWS_TABLE))
    line = verify_names(corpus, RENDERS_STAGE, DAMAGED)
    assert line.endswith(f"`rodin render --out {corpus}`")
    seconds = follow_repair(line, corpus, [*RENDER_ARGS, "--runner", "threads"], shared_env)
    after, counts = attempts(corpus, RENDERS_STAGE), store_counts(corpus, RENDERS_STAGE)
    assert counts.shards == SHARDS and counts.subjects == list(range(SUBJECTS))
    assert counts.duplicated == {} and counts.damaged == []
    assert after[DAMAGED] != before[DAMAGED]
    assert {s: a for s, a in after.items() if s != DAMAGED} == {s: a for s, a in before.items() if s != DAMAGED}
    sound = {s: a for s, a in before.items() if s != DAMAGED}  # the damaged shard is meant to be committed again
    record(f"{damage}_renders", outcome_figures(f"{damage} file", "render", sound, after, counts, 0, seconds,
                                                "verify names it; repair re-renders 1 shard"))


@pytest.mark.chaos_long
@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
def test_damaged_renders_stop_the_fit_with_one_line(damage: str, corpus: Path, shared_env: dict[str, str]) -> None:
    DAMAGE[damage](data_file(corpus, RENDERS_STAGE, DAMAGED, VIEWS_TABLE))
    done = run(["fit", "--renders", str(corpus), *FIT_ARGS, "--runner", "threads"], run_env(shared_env))
    line = assert_one_line_error(done, DAMAGED, "renders", f"rodin render --out {corpus}")
    assert sorted(attempts(corpus, TRIPLANES_STAGE)) == [s for s in SHARDS if s != DAMAGED]
    repair = line[line.index("delete "):]
    seconds = follow_repair("; " + repair, corpus, [*RENDER_ARGS, "--runner", "threads"], shared_env)
    again = run(rerun_command(line), run_env(shared_env))
    assert again.code == 0, again.err[-4000:]
    counts = store_counts(corpus, TRIPLANES_STAGE)
    assert counts.shards == SHARDS and counts.subjects == list(range(SUBJECTS)) and counts.damaged == []
    record(f"{damage}_renders_read_by_fit", outcome_figures(
        f"{damage} file", "fit", {}, attempts(corpus, TRIPLANES_STAGE), counts, 0, seconds + again.seconds,
        "fit names it; repair + re-run"))


@pytest.mark.chaos_long
@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
def test_damaged_triplanes_stop_training_with_one_line(damage: str, fitted_copy: Path, shared_env: dict[str, str]) -> None:
    root = fitted_copy
    before = attempts(root, TRIPLANES_STAGE)
    DAMAGE[damage](data_file(root, TRIPLANES_STAGE, DAMAGED, PLANES_FILE))
    line = verify_names(root, TRIPLANES_STAGE, DAMAGED)
    assert "--shards 1`" in line
    args = ["train", "base", "--out", str(root), *FIT_ARGS, *TRAIN_ARGS]
    done = run(args, run_env(shared_env))
    error = assert_one_line_error(done, DAMAGED, "triplanes", "--shards 1")
    seconds = follow_repair(error, root, [*FIT_ARGS, "--runner", "threads"], shared_env)
    again = run(args, run_env(shared_env))
    assert again.code == 0, again.err[-4000:]
    after, counts = attempts(root, TRIPLANES_STAGE), store_counts(root, TRIPLANES_STAGE)
    assert counts.shards == SHARDS and counts.damaged == [] and counts.duplicated == {}
    sound = {s: a for s, a in before.items() if s != DAMAGED}  # the damaged shard is meant to be committed again
    assert {s: a for s, a in after.items() if s != DAMAGED} == sound
    record(f"{damage}_triplanes", outcome_figures(f"{damage} file", "fit", sound, after, counts, 0,
                                                  seconds + again.seconds, "train names it; re-fit 1 shard"))


@pytest.mark.chaos_long
@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
def test_damaged_checkpoint_is_named_and_trained_again(damage: str, trained_copy: Path,
                                                     shared_env: dict[str, str]) -> None:
    """Resuming the training run reads the damaged checkpoint: one line naming it and its repair, which trains the
    stage again."""
    root = trained_copy
    DAMAGE[damage](data_file(root, CHECKPOINTS_STAGE, "base", "model.safetensors"))
    line = verify_names(root, CHECKPOINTS_STAGE, "base")
    assert line.endswith(f"`rodin train base --out {root}`")
    resume = ["train", "base", "--out", str(root), *FIT_ARGS, *TRAIN_ARGS, "--steps", "4"]  # past the checkpoint
    done = run(resume, run_env(shared_env))
    error = assert_one_line_error(done, "checkpoints", "base", "model.safetensors", f"rodin train base --out {root}")
    seconds = follow_repair(error, root, [*FIT_ARGS, *TRAIN_ARGS], shared_env)
    counts = store_counts(root, CHECKPOINTS_STAGE)
    assert counts.shards == ["base"] and counts.damaged == []
    assert committed_step(str(root), "base") == 2
    record(f"{damage}_checkpoint", outcome_figures(f"{damage} file", "train", {}, attempts(root, CHECKPOINTS_STAGE),
                                                   counts, 0, seconds, "resume names it; train again"))
