"""A run's local Ray instance is its own (new, on 127.0.0.1, blind to other instances); its workers use its Prefect API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import ray
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.s3_server import die_with_parent
from workflows.ray_runner import (
    LOCAL_HOST,
    build_ray_task_runner,
    keeping_sigterm_handler,
    local_ray_options,
    ray_runtime_env,
    ray_session,
)

RUN_API_URL = "http://127.0.0.1:4321/api"

OTHER_RUN = (
    "import sys, ray\n"
    "ray.init(address='local', num_cpus=1, include_dashboard=False)\n"
    "print(ray.get_runtime_context().gcs_address, flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def other_run() -> Iterator[str]:
    """Another run's local Ray instance on this machine, alive for the test; yields its GCS address."""
    process = subprocess.Popen([sys.executable, "-c", OTHER_RUN], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, preexec_fn=die_with_parent)  # noqa: PLW1509 (no threads yet)
    try:
        address = process.stdout.readline().strip()
        assert address, f"the other run's Ray did not start (exit {process.poll()})"
        yield address
    finally:
        process.stdin.close()  # ends it; ray.shutdown runs at its exit
        process.wait(timeout=60)


def test_workers_get_the_runs_prefect_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(updates={PREFECT_API_URL: RUN_API_URL}):
        assert ray_runtime_env(None)["env_vars"]["PREFECT_API_URL"] == RUN_API_URL
        assert "env_vars" not in ray_runtime_env("ray://head:10001")  # a cluster cannot reach this loopback URL
    with temporary_settings(updates={PREFECT_API_URL: "http://prefect.lan:4200/api"}):
        assert ray_runtime_env("ray://head:10001")["env_vars"] == {"PREFECT_API_URL": "http://prefect.lan:4200/api"}
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert "PREFECT_API_URL" not in ray_runtime_env(None)["env_vars"]


def test_local_options_start_a_new_loopback_instance() -> None:
    options = local_ray_options(3, include_dashboard=True)
    assert options["address"] == "local"  # never attach to another run's instance, nor to RAY_ADDRESS
    assert options["_node_ip_address"] == options["dashboard_host"] == LOCAL_HOST
    runner = build_ray_task_runner(num_cpus=2, include_dashboard=False)
    assert runner.address is None and {k: runner.init_kwargs[k] for k in options} == local_ray_options(2, False)


@ray.remote
def _worker_api_url() -> str | None:
    return os.environ.get("PREFECT_API_URL")


@ray.remote
def _worker_instance() -> tuple[str | None, str | None]:
    """The worker's RAY_ADDRESS, and the id of the node the state API finds for the worker's own node (None if
    the state API looks at another instance), as Ray Train's placement-group cleaner queries it."""
    from ray.util.state import get_node

    node = get_node(ray.get_runtime_context().get_node_id(), timeout=60)
    return os.environ.get("RAY_ADDRESS"), None if node is None else node.node_id


def test_ray_session_is_private_and_on_loopback(other_run: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another run's instance (even named by RAY_ADDRESS) is left alone; workers report to this run's Prefect API
    and find this run's instance; the process keeps its own SIGTERM handler."""
    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_ADDRESS", other_run)  # e.g. left in the shell by another run
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("RAY_GCS_SERVER_PORT", raising=False)

    def ours(signum: int, frame: object) -> None:
        """A command's own SIGTERM handler."""

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        with temporary_settings(updates={PREFECT_API_URL: RUN_API_URL}), ray_session(None):
            handler_in_session = signal.getsignal(signal.SIGTERM)
            gcs = ray.get_runtime_context().gcs_address
            nodes = [node for node in ray.nodes() if node["Alive"]]
            worker_api_url = ray.get(_worker_api_url.remote(), timeout=120)
            worker_ray_address, state_node = ray.get(_worker_instance.remote(), timeout=120)
            node_id = ray.get_runtime_context().get_node_id()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert handler_in_session is ours  # ray.init's own handler (exit status 15 at once) is not left in place
    assert not ray.is_initialized()
    assert gcs != other_run and gcs.startswith(f"{LOCAL_HOST}:")
    assert [node["NodeManagerAddress"] for node in nodes] == [LOCAL_HOST]
    assert worker_api_url == RUN_API_URL  # not unset: a worker would start a temporary server of its own
    # Ray's helpers in the workers find this run's instance, not the shell's RAY_ADDRESS nor "multiple instances"
    assert worker_ray_address == gcs
    assert state_node == node_id
    assert "RAY_GCS_SERVER_PORT" not in os.environ  # only the start of this run's head node saw it


def test_the_sigterm_handler_is_put_back_in_the_main_thread_and_left_alone_in_others() -> None:
    def ours(signum: int, frame: object) -> None:
        """A command's own SIGTERM handler."""

    def replaced(signum: int, frame: object) -> None:
        """What a library installs."""

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        with keeping_sigterm_handler():
            signal.signal(signal.SIGTERM, replaced)
        assert signal.getsignal(signal.SIGTERM) is ours
        errors: list[BaseException] = []

        def elsewhere() -> None:
            try:
                with keeping_sigterm_handler():
                    pass
            except BaseException as exc:  # noqa: BLE001 - reported to the main thread
                errors.append(exc)

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        assert errors == [] and signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_while_ray_starts_goes_to_the_handler_the_process_had() -> None:
    class Stop(BaseException):
        """How a command's own handler stops it."""

    def ours(signum: int, frame: object) -> None:
        raise Stop(signum)

    def rays(signum: int, frame: object) -> None:
        """The handler ``ray.init`` installs in the main thread."""
        sys.exit(signum)

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        with pytest.raises(Stop) as stopped, keeping_sigterm_handler():
            signal.signal(signal.SIGTERM, rays)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs here and interrupts the sleep
        assert stopped.value.args == (signal.SIGTERM,)
        assert stopped.value.__suppress_context__  # no "during handling of SystemExit" in a traceback
        assert signal.getsignal(signal.SIGTERM) is ours
        with pytest.raises(SystemExit) as exited, keeping_sigterm_handler():  # any other exit passes through
            sys.exit(3)
        assert exited.value.code == 3 and signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)
