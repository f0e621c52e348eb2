"""The one Prefect backend of a ``rodin`` run (docs/architecture.md).

With ``PREFECT_API_URL`` set, flows report to that server. Without it, :func:`prefect_backend`
starts a temporary server on 127.0.0.1 for the run, instead of Prefect's own on-demand one: its
URL is set for this process and handed to Ray workers (:func:`workflows.ray_runner.ray_runtime_env`),
so every task of the run is recorded on the same server and no worker starts a server of its own.
On Linux the server dies with the process that started it, even when that process is SIGKILLed. It runs in a
session of its own, so a signal to the run's process group (Ctrl-C in a terminal, ``kill -- -PGID``, a
supervisor stopping the group) stops the run and not the server under it: the run still reports how it ended,
then stops the server. Had the server died with the group, the run would retry a server that is gone for minutes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import prefect
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)

from rodin_core.child_process import die_with_parent

HOST = "127.0.0.1"


class PrefectBackendError(RuntimeError):
    """The run's temporary Prefect server did not start."""


def configured_api_url() -> str | None:
    """The Prefect API this process reports to (``PREFECT_API_URL`` or the active profile), or None."""
    return PREFECT_API_URL.value() or None


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    """The Prefect API server (no UI) on ``HOST:port`` as a child that dies with this process, in a session of its
    own so that signals to this process's group do not reach it (the module's docstring)."""
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT_SERVER_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
               "prefect.server.api.server:create_app", "--host", HOST, "--port", str(port),
               "--log-level", "error", "--lifespan", "on"]
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=die_with_parent)  # noqa: PLW1509 (the CLI starts it before any thread)


def wait_healthy(process: subprocess.Popen, api_url: str, timeout_s: float) -> None:
    """Return once ``api_url/health`` answers 200; PrefectBackendError when the server exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PrefectBackendError(f"the temporary Prefect server for {api_url} exited with code "
                                      f"{process.returncode}; set PREFECT_API_URL to a running Prefect server")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise PrefectBackendError(f"the temporary Prefect server at {api_url} did not answer in {timeout_s:g} s; raise "
                              "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or set PREFECT_API_URL")


def stop_server(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the server, SIGKILL it after ``grace_s`` seconds; reap it."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def flush_to_server(timeout_s: float = 10.0) -> None:
    """Send the logs and events this process has queued for the API now, while its server still runs; otherwise
    Prefect sends them at interpreter exit, to a server that is gone, and prints an error."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout_s)  # blocks, from synchronous code, until sent or timed out


@contextlib.contextmanager
def prefect_backend() -> Iterator[str]:
    """The run's Prefect API URL: the configured one, else a temporary server's, stopped at the end of the block."""
    configured = configured_api_url()
    if configured:
        yield configured
        return
    port = _free_port()
    api_url = f"http://{HOST}:{port}/api"
    process = start_server(port)
    previous = os.environ.get("PREFECT_API_URL")
    try:
        wait_healthy(process, api_url, float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
        os.environ["PREFECT_API_URL"] = api_url
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield api_url
    finally:
        with contextlib.suppress(Exception):  # a log that cannot be shipped must not mask the run's own outcome
            flush_to_server()
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        stop_server(process)
