"""``up``, ``down`` and ``status`` of the local cluster (docs/local-cluster.md).

``up`` starts, in this order and each on free ports of 127.0.0.1: Postgres, the Prefect server on
it, SeaweedFS (S3), a Ray head, ``workers`` Ray worker nodes, and a Prefect process worker; it
records each in the run folder's ``cluster.json`` as soon as it runs, and writes ``env.sh`` with
what a client needs. A component that does not come up is retried on fresh ports; when one fails
for good, everything already started is stopped again.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import postgres, prefect_services, ray_nodes, seaweed
from .processes import (
    ClusterError,
    free_ports,
    is_alive,
    session_members,
    spawn,
    stop_session,
    wait_for,
)
from .state import STATE_FILE, ClusterState, Component

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ATTEMPTS = 3
"""Starts of one component before ``up`` gives up (a free port can be taken before it is bound)."""
STOP_GRACE_S = 15.0


@dataclass
class ClusterConfig:
    """What ``up`` starts and where it keeps its logs and PIDs."""

    run_dir: Path = Path("data/local-cluster")
    workers: int = 2
    cpus_per_worker: int = 1
    object_store_mb: int = 128
    bucket: str = "rodin"
    pool: str = prefect_services.WORK_POOL
    timeout_s: float = 600.0
    """How long each component may take to answer (generous: Ray's nodes start slowly on a busy machine)."""

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir).absolute()
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) \
                or not 1 <= self.workers <= len(ray_nodes.NODE_LABELS):
            raise ClusterError(f"--workers must be an integer from 1 to {len(ray_nodes.NODE_LABELS)}, "
                               f"got {self.workers!r}")
        if isinstance(self.cpus_per_worker, bool) or not isinstance(self.cpus_per_worker, int) \
                or self.cpus_per_worker < 1:
            raise ClusterError(f"--cpus-per-worker must be a positive integer, got {self.cpus_per_worker!r}")


@dataclass
class _Starter:
    """The state of one ``up`` call: what runs so far, and the environment handed to every process."""

    config: ClusterConfig
    state: ClusterState
    env: dict[str, str] = field(default_factory=dict)

    def log(self, name: str) -> Path:
        return self.config.run_dir / "logs" / f"{name}.log"

    def record(self, component: Component) -> None:
        self.state.components.append(component)
        self.state.save()

    def process_env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, **self.state.env, **self.env, **extra}
        env.pop("PREFECT_PROFILE", None)
        return env


def _launch(starter: _Starter, what: str, log: Path,
            start: Callable[[], tuple[subprocess.Popen, Callable[[], str | None]]],
            cleanup: Callable[[], None] | None = None) -> subprocess.Popen:
    """Start a component and wait until it is ready; again on fresh ports (``start`` picks them) when it exited
    while starting (e.g. a port taken in between); a component that is only slow is not restarted."""
    for attempt in range(ATTEMPTS):
        process, ready = start()
        try:
            wait_for(ready, starter.config.timeout_s, what, process, log)
            return process
        except BaseException as exc:
            exited = process.poll() is not None and isinstance(exc, ClusterError)
            stop_session(process.pid, STOP_GRACE_S)
            if cleanup is not None:
                cleanup()
            if attempt == ATTEMPTS - 1 or not exited:
                raise
    raise AssertionError("unreachable")


def _running(state: ClusterState) -> list[Component]:
    return [c for c in state.components if is_alive(c.pid) or session_members(c.pid)]


def up(config: ClusterConfig) -> ClusterState:
    """Start the cluster in ``config.run_dir``; ClusterError (after stopping what started) on failure."""
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / STATE_FILE).exists():
        running = _running(ClusterState.load(run_dir))
        if running:
            raise ClusterError(f"a local cluster already runs from {run_dir} ({', '.join(c.name for c in running)}); "
                               f"stop it with `python -m infra.local_cluster down --run-dir {run_dir}`")
    shutil.rmtree(run_dir / "logs", ignore_errors=True)
    (run_dir / "logs").mkdir()
    starter = _Starter(config, ClusterState(run_dir=str(run_dir)))
    starter.state.save()
    try:
        _start_postgres(starter)
        _start_prefect_server(starter)
        _start_seaweedfs(starter)
        _start_ray(starter)
        _start_prefect_worker(starter)
    except BaseException:
        _stop(starter.state)
        raise
    return starter.state


def _start_postgres(starter: _Starter) -> None:
    log = starter.log("postgres")
    pg_data, scratch = postgres.data_dir(starter.config.run_dir)
    if scratch:
        starter.state.scratch_dirs.append(scratch)
        starter.state.save()
    shutil.rmtree(pg_data, ignore_errors=True)  # the Prefect database is new on every `up`
    postgres.init_cluster(pg_data, log)
    for attempt in range(ATTEMPTS):
        (port,) = free_ports(1)
        try:
            pid = postgres.start_server(pg_data, port, log)
            break
        except ClusterError:
            if attempt == ATTEMPTS - 1:
                raise
    starter.state.pg_data = str(pg_data)
    starter.record(Component("postgres", pid, str(log), {"postgres": port}))
    starter.state.env["LOCAL_CLUSTER_DATABASE_URL"] = postgres.create_database(port, log)
    starter.state.save()


def _start_prefect_server(starter: _Starter) -> None:
    log = starter.log("prefect-server")
    home = starter.config.run_dir / "prefect-home"
    env = starter.process_env(**prefect_services.server_env(home, starter.state.env["LOCAL_CLUSTER_DATABASE_URL"]))
    port = 0

    def start() -> tuple[subprocess.Popen, Callable[[], str | None]]:
        nonlocal port
        (port,) = free_ports(1)
        process = spawn(prefect_services.server_command(port), log, env, starter.config.run_dir)
        return process, lambda: prefect_services.health(f"http://127.0.0.1:{port}/api")

    process = _launch(starter, "the Prefect server", log, start)
    starter.env["PREFECT_HOME"] = str(home)
    starter.state.env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    starter.record(Component("prefect-server", process.pid, str(log), {"api": port}))


def _start_seaweedfs(starter: _Starter) -> None:
    log = starter.log("seaweedfs")
    key, secret, bucket = "rodin", secrets.token_hex(16), starter.config.bucket
    data_dir = starter.config.run_dir / "seaweedfs"
    data_dir.mkdir(exist_ok=True)
    socket_dir = tempfile.mkdtemp(prefix="rodin-weed-")  # Unix socket paths must stay short
    starter.state.scratch_dirs.append(socket_dir)
    starter.state.save()
    env = starter.process_env(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, TMPDIR=socket_dir)
    ports: dict[str, int] = {}

    def start() -> tuple[subprocess.Popen, Callable[[], str | None]]:
        ports.clear()
        ports.update(zip(seaweed.PORT_FLAGS, free_ports(len(seaweed.PORT_FLAGS)), strict=True))
        endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        process = spawn(seaweed.weed_command(data_dir, socket_dir, ports), log, env, data_dir)
        return process, lambda: seaweed.bucket_ready(endpoint, key, secret, bucket)

    process = _launch(starter, "SeaweedFS", log, start, cleanup=lambda: seaweed.remove_sockets(ports))
    starter.state.env.update({"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                              "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3.port']}",
                              "LOCAL_CLUSTER_BUCKET": f"s3://{bucket}"})
    starter.record(Component("seaweedfs", process.pid, str(log), dict(ports)))


def _start_ray(starter: _Starter) -> None:
    config = starter.config
    token_path = config.run_dir / "ray-auth-token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    starter.state.env.update(ray_nodes.ray_env(token_path))
    temp_dir = tempfile.mkdtemp(prefix="rodin-ray-")  # Ray's socket paths must stay short
    starter.state.scratch_dirs.append(temp_dir)
    starter.state.save()
    log = starter.log("ray-head")
    ports: dict[str, int] = {}

    def start() -> tuple[subprocess.Popen, Callable[[], str | None]]:
        ports.clear()
        names = ("gcs", "dashboard", "client", *ray_nodes.AGENT_PORTS)
        ports.update(zip(names, free_ports(len(names)), strict=True))
        process = spawn(ray_nodes.head_command(ports, temp_dir, config.object_store_mb), log, starter.process_env(),
                        PROJECT_ROOT)
        dashboard = f"http://127.0.0.1:{ports['dashboard']}"
        return process, lambda: None if ray_nodes.alive_nodes(dashboard, token_path) else "no node alive yet"

    process = _launch(starter, "the Ray head", log, start)
    gcs_address, dashboard = f"127.0.0.1:{ports['gcs']}", f"http://127.0.0.1:{ports['dashboard']}"
    starter.state.env.update({"RAY_ADDRESS": gcs_address, "LOCAL_CLUSTER_RAY_DASHBOARD": dashboard})
    starter.record(Component("ray-head", process.pid, str(log), dict(ports),
                             {"raylet": ray_nodes.raylet_pid(process.pid) or 0}))
    for index in range(config.workers):
        _start_ray_worker(starter, index, gcs_address, dashboard, token_path)


def _start_ray_worker(starter: _Starter, index: int, gcs_address: str, dashboard: str, token_path: Path) -> None:
    config, label = starter.config, ray_nodes.node_label(index)
    log = starter.log(f"ray-{label}")
    agent_ports: dict[str, int] = {}

    def joined() -> str | None:
        names = [node.get("node_name") for node in ray_nodes.alive_nodes(dashboard, token_path)]
        return None if label in names else f"alive nodes: {names}"

    def start() -> tuple[subprocess.Popen, Callable[[], str | None]]:
        agent_ports.clear()
        agent_ports.update(zip(ray_nodes.AGENT_PORTS, free_ports(len(ray_nodes.AGENT_PORTS)), strict=True))
        command = ray_nodes.worker_command(gcs_address, label, config.cpus_per_worker, agent_ports,
                                           config.object_store_mb)
        return spawn(command, log, starter.process_env(), PROJECT_ROOT), joined

    process = _launch(starter, f"Ray worker node {label}", log, start)
    starter.record(Component(f"ray-{label}", process.pid, str(log), dict(agent_ports),
                             {"raylet": ray_nodes.raylet_pid(process.pid) or 0}))


def _start_prefect_worker(starter: _Starter) -> None:
    log, config = starter.log("prefect-worker"), starter.config
    api_url = starter.state.env["PREFECT_API_URL"]
    env = starter.process_env(PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="2")

    def start() -> tuple[subprocess.Popen, Callable[[], str | None]]:
        process = spawn(prefect_services.worker_command(config.pool), log, env, config.run_dir)
        return process, lambda: None if prefect_services.online_workers(api_url, config.pool) else "not online yet"

    process = _launch(starter, "the Prefect worker", log, start)
    starter.state.env["LOCAL_CLUSTER_WORK_POOL"] = config.pool
    starter.record(Component("prefect-worker", process.pid, str(log)))


def _stop(state: ClusterState) -> list[str]:
    """Stop every component of ``state`` (last started first); the names of those that still run."""
    for component in reversed(state.components):
        if component.name == "postgres":
            postgres.stop_server(Path(state.pg_data), Path(component.log))
        stop_session(component.pid, STOP_GRACE_S)
        if component.name == "seaweedfs":
            seaweed.remove_sockets(component.ports)
    left = [c.name for c in state.components if is_alive(c.pid) or session_members(c.pid)
            or any(is_alive(pid) for pid in c.extra_pids.values())]
    for folder in state.scratch_dirs:
        shutil.rmtree(folder, ignore_errors=True)
    return left


def down(run_dir: Path) -> ClusterState:
    """Stop what ``up`` started in ``run_dir``; ClusterError naming what still runs."""
    state = ClusterState.load(Path(run_dir).absolute())
    left = _stop(state)
    if left:
        raise ClusterError(f"{', '.join(left)} of {run_dir} still run after SIGKILL; see `python -m infra.local_cluster "
                           f"status --run-dir {run_dir}`")
    return state


@dataclass
class ComponentStatus:
    """One row of ``status``."""

    name: str
    pid: int
    ports: dict[str, int]
    alive: bool
    processes: int
    log: str


def status(run_dir: Path) -> tuple[ClusterState, list[ComponentStatus]]:
    """The recorded components and whether each still runs (its leader, and how many processes its session has)."""
    state = ClusterState.load(Path(run_dir).absolute())
    rows = [ComponentStatus(c.name, c.pid, c.ports, is_alive(c.pid), len(session_members(c.pid)), c.log)
            for c in state.components]
    return state, rows


def ray_nodes_alive(state: ClusterState) -> list[dict]:
    """The Ray nodes the head sees alive ([] when the head is down)."""
    dashboard = state.env.get("LOCAL_CLUSTER_RAY_DASHBOARD")
    token = state.env.get("RAY_AUTH_TOKEN_PATH")
    if not dashboard or not token:
        return []
    return ray_nodes.alive_nodes(dashboard, Path(token))

