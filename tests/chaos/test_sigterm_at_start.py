"""SIGTERM while a ``rodin`` command starts: loading torch, importing Prefect, starting its Prefect server.

Wherever it lands, the command ends with exit code 143 and one line of its own saying that it was
stopped and that the same command goes on, without a traceback, without importing again what the
stop cut short, and without leaving a process it started alive. The SIGTERM lands right after a
given module is imported (fault ``sigterm=MODULE``) or once the Prefect server is seen starting.
Each run owns a fresh ``PREFECT_HOME``, so that it starts a Prefect server of its own.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import BASE_ENV
from .harness import ProcessTree, run_env, start, wait_for

pytestmark = pytest.mark.chaos

RENDER_ARGS = ["--subjects", "1", "--shard-size", "1", "--views", "2", "--resolution", "16", "--set",
               "render.samples=2", "--runner", "threads"]
STOPPED = "rodin render: stopped by SIGTERM; what was committed is kept, run the same command again to go on"
STOP_S = 5
"""Most seconds from SIGTERM to exit: unwinding only (importing Prefect again took 6 s to 10 s on a busy core)."""


def start_render(tmp_path: Path, faults: str | None = None) -> subprocess.Popen:
    env = run_env({**BASE_ENV, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": ""}, faults,
                  tmp_path / "markers")
    return start(["render", "--out", str(tmp_path / "data"), *RENDER_ARGS], env)


def finish(process: subprocess.Popen) -> str:
    """Wait for the stopped run; its stderr. It is killed if it outlives the wait."""
    try:
        return process.communicate(timeout=120)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def assert_stopped(process: subprocess.Popen, err: str, tree: ProcessTree, tmp_path: Path) -> None:
    assert "Traceback" not in err, err[-6000:]
    assert process.returncode == 143, err[-4000:]
    assert [line for line in err.splitlines() if line.startswith("rodin")] == [STOPPED], err[-4000:]
    assert tree.survivors(wait_s=15) == {}, "processes of the stopped run are still alive"
    assert not (tmp_path / "data" / "renders" / "manifests").exists()  # stopped before any shard was rendered


@pytest.mark.parametrize("module", ["torch.nn", "pydantic_settings", "prefect.flows"])
def test_sigterm_while_importing_is_one_line_at_once(module: str, tmp_path: Path) -> None:
    """``torch.nn``: loading the config; ``pydantic_settings``: early in Prefect's import; ``prefect.flows``: late."""
    process = start_render(tmp_path, f"sigterm={module}")
    with ProcessTree(process.pid) as tree:
        wait_for(lambda: list((tmp_path / "markers").glob("sigterm-*")), 600, f"SIGTERM after {module}", process)
        begin = time.monotonic()
        err = finish(process)
        seconds = time.monotonic() - begin
    assert_stopped(process, err, tree, tmp_path)
    assert seconds < STOP_S, f"{seconds:.1f} s from SIGTERM to exit"


def test_sigterm_while_the_prefect_server_starts_stops_it(tmp_path: Path) -> None:
    process = start_render(tmp_path)
    with ProcessTree(process.pid) as tree:
        wait_for(lambda: tree.matching("prefect.server.api.server"), 600, "a Prefect server", process)
        process.send_signal(signal.SIGTERM)
        err = finish(process)
    assert_stopped(process, err, tree, tmp_path)


def test_a_second_sigterm_while_stopping_changes_nothing(tmp_path: Path) -> None:
    """A supervisor or a user repeating the SIGTERM while the command stops still gets the one line."""
    process = start_render(tmp_path, "sigterm=prefect.flows")
    with ProcessTree(process.pid) as tree:
        wait_for(lambda: list((tmp_path / "markers").glob("sigterm-*")), 600, "SIGTERM after prefect.flows", process)
        time.sleep(0.5)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        err = finish(process)
    assert "Traceback" not in err, err[-6000:]
    assert [line for line in err.splitlines() if line.startswith("rodin")] == [STOPPED], err[-4000:]
    assert tree.survivors(wait_s=15) == {}
