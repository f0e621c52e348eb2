"""A real Prefect server and process worker for the deployment tests, as child process groups.

Everything runs under a private ``PREFECT_HOME`` (settings, SQLite database, logs) and talks to
a server on a free port of 127.0.0.1, so a test never touches the user's Prefect profile. Every
child starts in its own process group and is killed with it; it also dies with the test
process (Linux ``PR_SET_PDEATHSIG``). Waits are bounded and fail with the end of the child's log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .s3_server import die_with_parent, free_ports

PREFECT = str(Path(sys.executable).with_name("prefect"))
LOG_TAIL_LINES = 60


def _die_killed_with_parent() -> None:
    """SIGKILL this child when the test process dies (no orphaned servers)."""
    die_with_parent(signal.SIGKILL)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' when missing)."""
    if not path.exists():
        return ""
    with path.open("r", errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines))


@dataclass
class PrefectServer:
    """A running ``prefect server start`` and the processes started against it."""

    home: Path
    api_url: str
    env: dict[str, str]
    process: subprocess.Popen
    log_path: Path
    children: list[tuple[subprocess.Popen, Path]] = field(default_factory=list)

    def run(self, args: list[str], cwd: Path, timeout_s: float, log_name: str) -> subprocess.CompletedProcess:
        """Run ``prefect ARGS`` to completion against this server; AssertionError with its output on failure."""
        try:
            done = subprocess.run([PREFECT, *args], cwd=cwd, env=self.env, capture_output=True, text=True, check=False,
                                  timeout=timeout_s, start_new_session=True)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"`prefect {' '.join(args)}` did not finish in {timeout_s:g} s; output:\n"
                                 f"{exc.stdout}\n{exc.stderr}{self.logs()}") from None
        (self.home / f"{log_name}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise AssertionError(f"`prefect {' '.join(args)}` exited with {done.returncode}; output:\n"
                                 f"{done.stdout}\n{done.stderr}{self.logs()}")
        return done

    def start(self, args: list[str], cwd: Path, log_name: str) -> subprocess.Popen:
        """Start ``prefect ARGS`` in the background (e.g. a worker); stopped by :meth:`stop`."""
        log_path = self.home / f"{log_name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen([PREFECT, *args], cwd=cwd, env=self.env, stdout=log_file,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, preexec_fn=_die_killed_with_parent)
        self.children.append((process, log_path))
        return process

    def logs(self) -> str:
        """Tails of the server's and every child's log, for error messages."""
        parts = [f"\n--- {path.name} (last {LOG_TAIL_LINES} lines) ---\n{tail(path)}"
                 for _, path in [(self.process, self.log_path), *self.children]]
        return "".join(parts)

    def stop(self) -> None:
        """Kill every child's process group, then the server's; reap them."""
        for process, _ in [*reversed(self.children), (self.process, self.log_path)]:
            _kill_group(process)


def _kill_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace_s`` seconds, and reap the leader."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # stragglers left in the group after its leader exited
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_prefect_server(home: Path, timeout_s: float = 120.0) -> PrefectServer:
    """Start ``prefect server start`` on a free loopback port with ``PREFECT_HOME=home``; wait for /api/health."""
    home.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    env.pop("PREFECT_PROFILE", None)
    log_path = home / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                   env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, preexec_fn=_die_killed_with_parent)
    server = PrefectServer(home, api_url, env, process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise AssertionError(f"prefect server exited with code {process.returncode} before it was healthy"
                                 f"{server.logs()}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    server.stop()
    raise AssertionError(f"prefect server at {api_url} was not healthy after {timeout_s:g} s{server.logs()}")
