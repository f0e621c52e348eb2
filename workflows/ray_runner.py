"""Task runners for the Prefect flows: Ray (local or a cluster) or a thread pool (docs/architecture.md).

Embedded default: a local Ray instance started with every core of the machine and its dashboard
when ``ray[default]`` is installed. It is always a new instance of its own (``address="local"``),
never one another run on the machine started, and it listens on 127.0.0.1 only; its workers get its
GCS address as ``RAY_ADDRESS``. With ``address`` (``ray://head:10001`` or ``auto``) the flow
runs its tasks on that cluster instead. ``threads`` is the in-process alternative for tests and
for machines without Ray.

Ray workers must import this project: on a local instance they get the project root on their
``PYTHONPATH``; on a cluster the project root is shipped as the job's ``working_dir`` unless a
``runtime_env`` is given (e.g. when the cluster's image already contains the project).

:func:`ray_session` holds one Ray instance for a block: the training flows' Ray Train jobs run on
it, and flows run in a row inside it share it instead of each starting their own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import ray
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect_ray.task_runners import RayTaskRunner

from workflows.prefect_backend import configured_api_url

log = logging.getLogger(__name__)
T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TASK_RUNNERS = ("ray", "threads")
LOCAL_HOST = "127.0.0.1"
"""The address a local Ray instance binds its GCS, raylet, workers and dashboard to."""
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
WORKING_DIR_EXCLUDES = [".git", ".venv", "data", "**/__pycache__", "*.egg-info", ".pytest_cache"]
"""Paths left out of the project when it is shipped to a Ray cluster as ``working_dir``."""
GCS_PORT_VARIABLE = "RAY_GCS_SERVER_PORT"
"""The variable Ray reads the GCS port of a new head node from (0 or unset: a port of its choosing)."""


@contextlib.contextmanager
def loopback_node_ip() -> Iterator[None]:
    """Around ``ray.init`` of a local instance: keep its node address 127.0.0.1 (GCS and raylet bind to it).

    Ray replaces a loopback node address by the machine's network address when it may form a
    multi-machine cluster; a local instance of one run never does, so that is switched off for the call.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


@contextlib.contextmanager
def keeping_sigterm_handler() -> Iterator[None]:
    """Around ``ray.init``: the SIGTERM handler of the process stays the one it had before.

    ``ray.init`` in the main thread installs a handler that exits with status 15 at once; a ``rodin`` command's
    own handler must stay, so that a stopped command marks its flow run Crashed and ends with its one line and
    exit status 143. A SIGTERM that lands while ``ray.init`` runs (it can take tens of seconds on a busy machine)
    meets Ray's handler: the ``SystemExit(15)`` it raises is handed to the previous handler as the SIGTERM it was.
    Outside the main thread handlers cannot change and are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    except SystemExit as exited:
        if exited.code != signal.SIGTERM or not callable(previous):
            raise
        signal.signal(signal.SIGTERM, previous)
        try:
            previous(signal.SIGTERM, None)
        except BaseException as handled:  # the handler's own way of stopping, raised in its place
            raise handled from None
        raise
    finally:
        if previous is not None:  # None: a handler not installed from Python, which cannot be put back
            signal.signal(signal.SIGTERM, previous)


class RayStartError(RuntimeError):
    """The run's local Ray instance did not start; the message says why and what to do."""


def ray_start_error(exc: BaseException) -> RayStartError:
    """:class:`RayStartError` for the failure ``exc`` of starting a local Ray instance."""
    return RayStartError(f"the local Ray instance of this run did not start ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())}); Ray gives its processes 30 s to start, which a busy machine "
                         "can miss: run the command again when the machine is less busy, or with --runner threads "
                         "where the command has it")


LOCAL_START_ATTEMPTS = 2
"""Tries at starting a local Ray instance: Ray waits a fixed 30 s for its node, which a busy machine can miss."""


@contextlib.contextmanager
def own_gcs_address() -> Iterator[str]:
    """Around the start of a local instance: its GCS listens on a free loopback port chosen here; yields
    ``127.0.0.1:port``, which :func:`with_ray_address` gives its workers as ``RAY_ADDRESS``.

    Ray's own helpers that run in workers (Ray Train's placement-group cleaner, the state API) find their
    instance by ``RAY_ADDRESS``, else by looking for GCS processes on the machine: with a second instance running
    (two ``rodin`` commands, a test cluster) they fail with "Found multiple active Ray instances", and a
    ``RAY_ADDRESS`` inherited from the shell would send them to another run's instance. The port is read by
    Ray from ``RAY_GCS_SERVER_PORT`` at the start of its head node.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCAL_HOST, 0))
        port = probe.getsockname()[1]
    saved = os.environ.get(GCS_PORT_VARIABLE)
    os.environ[GCS_PORT_VARIABLE] = str(port)
    try:
        yield f"{LOCAL_HOST}:{port}"
    finally:
        if saved is None:
            os.environ.pop(GCS_PORT_VARIABLE, None)
        else:
            os.environ[GCS_PORT_VARIABLE] = saved


def with_ray_address(init_kwargs: dict[str, Any], address: str) -> dict[str, Any]:
    """``ray.init`` options whose runtime environment gives every worker ``RAY_ADDRESS=address``."""
    runtime_env = dict(init_kwargs.get("runtime_env") or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), "RAY_ADDRESS": address}
    return {**init_kwargs, "runtime_env": runtime_env}


def start_local_ray(start: Callable[[str], T]) -> T:
    """``start(address)`` (which starts a local Ray instance whose GCS is at ``address``, see
    :func:`own_gcs_address`) with the node address on the loopback. A node that timed out is shut down and
    started once more, on a new port; a start that still fails is a one-line :class:`RayStartError`."""
    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            with loopback_node_ip(), own_gcs_address() as address:
                return start(address)
        except Exception as exc:  # Ray raises a bare Exception when its node does not come up
            ray.shutdown()
            if attempt == LOCAL_START_ATTEMPTS or "timed out" not in str(exc):
                raise ray_start_error(exc) from exc
            log.warning("the local Ray instance did not start in time (attempt %d of %d); starting it again",
                        attempt, LOCAL_START_ATTEMPTS)
    raise AssertionError("unreachable")


def init_local_ray(init_kwargs: dict[str, Any]) -> Any:
    """``ray.init(**init_kwargs)`` of a local instance through :func:`start_local_ray`, its workers given its address;
    returns Ray's context."""
    return start_local_ray(lambda address: ray.init(**with_ray_address(init_kwargs, address)))


class RodinRayTaskRunner(RayTaskRunner):
    """:class:`RayTaskRunner` that remembers the dashboard URL of the Ray instance it started."""

    def __enter__(self) -> Self:
        def start(address: str) -> Self:
            self._started = False  # a retried start enters again
            self.init_kwargs = with_ray_address(self.init_kwargs, address)
            return super(RodinRayTaskRunner, self).__enter__()

        with keeping_sigterm_handler():
            if self.init_kwargs.get("address") != "local":
                return super().__enter__()
            return start_local_ray(start)

    @property
    def dashboard_url(self) -> str | None:
        """``http://host:port`` of the Ray dashboard, or None (not started, no dashboard, or Ray was already up)."""
        url = getattr(self._ray_context, "dashboard_url", None)
        if not url:
            return None
        return url if "://" in url else f"http://{url}"

    def describe(self) -> str:
        """Where the tasks run and where to watch them (call after the runner was entered)."""
        if self.address is not None and self.address != "auto":
            return f"tasks run on the Ray cluster at {self.address}; watch them on that cluster's dashboard"
        if self._ray_context is None:
            return "tasks run on the Ray instance already connected in this process"
        if self.dashboard_url is None:
            return "tasks run on a local Ray instance without a dashboard (install ray[default] to get one)"
        return f"Ray dashboard: {self.dashboard_url}"


def dashboard_available() -> bool:
    """Whether the Ray dashboard can start here (``ray[default]`` brings ``aiohttp`` and the dashboard)."""
    return all(importlib.util.find_spec(name) is not None for name in ("aiohttp", "ray.dashboard"))


def local_ray_options(num_cpus: int, include_dashboard: bool) -> dict[str, Any]:
    """``ray.init`` options of a local instance: new and private to this run, bound to the loopback address."""
    return {"address": "local", "_node_ip_address": LOCAL_HOST, "dashboard_host": LOCAL_HOST,
            "num_cpus": num_cpus, "include_dashboard": include_dashboard}


def ray_runtime_env(address: str | None, runtime_env: dict[str, Any] | None = None) -> dict[str, Any]:
    """The runtime environment Ray workers need to import ``rodin_core``, ``render`` and ``workflows``.

    A given ``runtime_env`` wins. Local instance: the project root is prepended to ``PYTHONPATH``
    (nothing is copied). Cluster: the project root becomes the job's ``working_dir``. Workers report
    their task runs to this process's Prefect API (``PREFECT_API_URL``; on a cluster only when it is
    not a loopback address), never to a temporary server of their own.
    """
    if runtime_env is not None:
        return dict(runtime_env)
    api_url = configured_api_url()
    if address is None:
        path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
        return {"env_vars": {"PYTHONPATH": path, **({"PREFECT_API_URL": api_url} if api_url else {})}}
    env = {"working_dir": str(PROJECT_ROOT), "excludes": list(WORKING_DIR_EXCLUDES)}
    if api_url and urlsplit(api_url).hostname not in LOOPBACK_HOSTS:
        env["env_vars"] = {"PREFECT_API_URL": api_url}
    return env


def build_ray_task_runner(
    address: str | None = None,
    num_cpus: int | None = None,
    runtime_env: dict[str, Any] | None = None,
    include_dashboard: bool | None = None,
) -> RodinRayTaskRunner:
    """A Ray task runner: a local instance (``address=None``) or the cluster at ``address``.

    Local: ``num_cpus`` defaults to ``os.cpu_count()``; the dashboard starts when
    :func:`dashboard_available` (or as ``include_dashboard`` says). For a cluster, ``num_cpus`` and
    ``include_dashboard`` must stay None: the cluster's own resources and dashboard are used.
    """
    if address is not None and (num_cpus is not None or include_dashboard is not None):
        raise ValueError(f"num_cpus={num_cpus!r} and include_dashboard={include_dashboard!r} apply to a local Ray "
                         f"instance only; leave them unset when connecting to the cluster at {address!r}")
    init_kwargs: dict[str, Any] = {"runtime_env": ray_runtime_env(address, runtime_env)}
    if address is None:
        cpus = (os.cpu_count() or 1) if num_cpus is None else num_cpus
        if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
            raise ValueError(f"num_cpus must be a positive integer, got {num_cpus!r}")
        dashboard = dashboard_available() if include_dashboard is None else include_dashboard
        init_kwargs.update(local_ray_options(cpus, dashboard))
    return RodinRayTaskRunner(address=address, init_kwargs=init_kwargs)


def build_task_runner(
    kind: str,
    ray_address: str | None = None,
    workers: int | None = None,
    runtime_env: dict[str, Any] | None = None,
) -> TaskRunner:
    """The task runner named ``kind`` (one of :data:`TASK_RUNNERS`).

    ``workers``: CPUs of a local Ray instance, or threads of the thread pool (default: all cores).
    """
    if kind == "ray":
        return build_ray_task_runner(ray_address, num_cpus=None if ray_address else workers, runtime_env=runtime_env)
    if kind == "threads":
        if ray_address is not None:
            raise ValueError(f"ray_address={ray_address!r} needs task_runner='ray', got task_runner='threads'")
        return ThreadPoolTaskRunner(max_workers=workers or os.cpu_count() or 1)
    raise ValueError(f"unknown task runner {kind!r}; choose one of {TASK_RUNNERS}")


def largest_node_cpus() -> int:
    """CPUs of the largest live node of the Ray cluster this process is connected to (at least 1)."""
    cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")]
    return max(1, int(max(cpus, default=1)))


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Ray for the trainers, or for several flows run in a row: the instance this process is connected to,
    else the cluster at ``address``, else a local instance with every core (shut down at the end of the block)."""
    if ray.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {"runtime_env": ray_runtime_env(address)}
    if address is None:
        kwargs.update(local_ray_options(os.cpu_count() or 1, dashboard_available()))
    else:
        kwargs["address"] = address
    with keeping_sigterm_handler():
        if address is not None:
            context = ray.init(**kwargs)
        else:
            context = init_local_ray(kwargs)
    url = getattr(context, "dashboard_url", None)
    log.info("Ray %s; %s", f"cluster at {address}" if address else "started locally",
             f"dashboard (Train tab) at http://{url}" if url else "no dashboard (install ray[default])")
    try:
        yield
    finally:
        ray.shutdown()


def dashboard_message(runner: TaskRunner) -> str | None:
    """A log line telling where the Ray dashboard is, or None for runners without Ray."""
    if not isinstance(runner, RodinRayTaskRunner):
        return None
    return runner.describe()
