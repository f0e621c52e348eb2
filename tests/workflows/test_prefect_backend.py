"""The run's temporary Prefect server: one per run, on 127.0.0.1, and never outliving a killed driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.s3_server import die_with_parent
from workflows.prefect_backend import configured_api_url, prefect_backend

DRIVER = (
    "import os, sys\n"
    "from workflows.prefect_backend import prefect_backend\n"
    "with prefect_backend() as url:\n"
    "    print(url, os.environ['PREFECT_API_URL'], flush=True)\n"
    "    sys.stdin.read()\n"
)


def _children(pid: int) -> list[int]:
    """PIDs of the direct children of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_configured_api_is_used_without_starting_a_server() -> None:
    with temporary_settings(updates={PREFECT_API_URL: "http://prefect.lan:4200/api"}), prefect_backend() as url:
        assert url == "http://prefect.lan:4200/api"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the server dies with its parent on Linux")
def test_server_runs_in_its_own_session_and_dies_with_a_sigkilled_driver(tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}  # a fresh database is migrated first
    env.pop("PREFECT_API_URL", None)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env, preexec_fn=die_with_parent)  # noqa: PLW1509 (no threads yet)
    try:
        line = driver.stdout.readline().split()
        assert len(line) == 2 and line[0] == line[1], f"no server URL from the driver (exit {driver.poll()})"
        assert line[0].startswith("http://127.0.0.1:")
        (server,) = _children(driver.pid)
        # a session of its own: a signal to the driver's process group (Ctrl-C, kill -- -PGID) does not reach it
        assert os.getsid(server) == server != os.getsid(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(server), f"the Prefect server (PID {server}) outlived its SIGKILLed driver"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


def test_no_api_url_is_left_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert configured_api_url() is None


FLOW_DRIVER = (
    "from prefect import flow, get_run_logger\n"
    "from workflows.prefect_backend import prefect_backend\n"
    "@flow\n"
    "def chatty() -> int:\n"
    "    for i in range(50):\n"
    "        get_run_logger().info('line %d', i)\n"
    "    return 7\n"
    "with prefect_backend():\n"
    "    print('result', chatty(), flush=True)\n"
)


def test_a_flow_run_on_the_temporary_server_ships_its_logs_before_the_server_stops(tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-c", FLOW_DRIVER], check=False, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "result 7" in done.stdout
    assert "Error logging to API" not in done.stderr, done.stderr[-2000:]
    assert "All connection attempts failed" not in done.stderr, done.stderr[-2000:]
