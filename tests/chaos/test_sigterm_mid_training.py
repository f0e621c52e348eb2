"""SIGTERM while ``rodin train`` runs its Ray Train job: the moment a supervisor or a user stops a long training.

The command must end as it does anywhere else: exit code 143 and its one line, without a traceback
and without Ray's crash handler (which would print a signal trace and abort the process 3 s after
the SIGTERM), its flow run marked Crashed, no process of the run left alive, and the checkpoints
it committed kept for the next run to resume from. The corpus is the synthetic fitted one of the
Ray Train tests (no render or fit needed); the run reports to a Prefect server of its own.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from rodin_core.datasets.checkpoints import committed_step

from ..training_corpus import TINY, make_corpus, tiny_config
from .conftest import private_home
from .harness import ProcessTree, run_env, start, wait_for

pytestmark = pytest.mark.chaos

TRAIN_SETTINGS = [*TINY, "base.train.steps=100000", "base.train.log_every=1", "base.train.checkpoint_every=2"]
"""A base model of a few thousand parameters that would train far longer than the test waits."""
STOPPED = "rodin train: stopped by SIGTERM; what was committed is kept, run the same command again to go on"
STOP_S = 30
"""Most seconds from SIGTERM to exit: the flow run marked Crashed, the local Ray instance shut down."""


@pytest.mark.parametrize("target", ["process", pytest.param("group", marks=pytest.mark.chaos_long)])
def test_sigterm_mid_training_is_one_line_and_keeps_the_committed_checkpoint(prefect_template: Path, tmp_path: Path,
                                                                            target: str) -> None:
    """``process``: the signal a supervisor sends to the command; ``group`` (``make chaos``): ``kill -TERM -- -PGID``,
    which also reaches the Ray processes the command started in its group before the command can stop them."""
    out = make_corpus(tmp_path / "store", tiny_config())
    args = ["train", "base", "--out", out, "--preset", "tiny", "--cpus-per-worker", "1",
            *(arg for item in TRAIN_SETTINGS for arg in ("--set", item))]
    env = run_env(private_home(prefect_template, tmp_path / "prefect"))
    process = start(args, env)
    with ProcessTree(process.pid) as tree:
        try:
            wait_for(lambda: committed_step(out, "base") is not None, 900, "a committed checkpoint", process)
            if target == "group":
                os.killpg(process.pid, signal.SIGTERM)
            else:
                process.send_signal(signal.SIGTERM)
            begin = time.monotonic()
            err = process.communicate(timeout=120)[1]
            seconds = time.monotonic() - begin
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert tree.matching("RayTrainWorker"), "the run never reached Ray Train"
        survivors = tree.survivors(wait_s=60)
    assert process.returncode == 143, err[-4000:]
    assert "Traceback" not in err and "SIGTERM received" not in err, err[-4000:]
    assert [line for line in err.splitlines() if line.startswith("rodin")] == [STOPPED], err[-4000:]
    assert "Finished in state Crashed" in err  # the flow run says how it ended
    assert seconds < STOP_S, f"{seconds:.1f} s from SIGTERM to exit"
    assert survivors == {}, "processes of the stopped run are still alive"
    assert committed_step(out, "base") >= 2  # what was committed is kept
