"""The cluster's Ray nodes: a head without CPUs for tasks, and N worker nodes labelled ``node_a``, ``node_b``...

Every node is a ``ray start --block`` process (its session holds the node's GCS or raylet and
workers). Nodes talk over 127.0.0.1 with Ray's token authentication; the token is a file of the
run folder (``RAY_AUTH_TOKEN_PATH``). The head's dashboard serves the state API read here.
"""

from __future__ import annotations

import json
import string
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .processes import process_name, session_members

NODE_LABELS = tuple(f"node_{letter}" for letter in string.ascii_lowercase)


def node_label(index: int) -> str:
    """The custom resource (and node name) of worker node ``index``: node_a, node_b, ..."""
    return NODE_LABELS[index]


BUSY_MACHINE_SETTINGS = {
    "RAY_worker_register_timeout_seconds": "600",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
    "RAY_raylet_liveness_self_check_interval_ms": "3600000",
    "RAY_health_check_timeout_ms": "30000",
    "RAY_agent_register_timeout_ms": "600000",
}
"""All nodes share the machine's cores: worker processes and Ray Train's worker group get 10 minutes
to start (importing torch on a busy machine takes minutes); a raylet does not ask the GCS every few
seconds whether it is still alive (a reply that comes late aborts the raylet), and the GCS waits
30 s for each health-check answer. A killed raylet is still seen dead within seconds: its port refuses
the checks at once."""


def ray_env(token_path: Path) -> dict[str, str]:
    """Environment of every Ray process and driver of the cluster: loopback addresses, token auth,
    :data:`BUSY_MACHINE_SETTINGS`."""
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token_path), "RAY_USAGE_STATS_ENABLED": "0", **BUSY_MACHINE_SETTINGS}


AGENT_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
               "runtime-env-agent-port")
"""The agents' ports of a node, all given: with one left to pick, the raylet waits a few seconds for the
agent to report it and aborts when the agent (slow to import on a busy machine) misses that window."""


def _start_command(agent_ports: dict[str, int], args: list[str]) -> list[str]:
    return [sys.executable, "-m", "infra.local_cluster.ray_start", "--block", "--disable-usage-stats",
            "--node-ip-address=127.0.0.1", *(f"--{name}={agent_ports[name]}" for name in AGENT_PORTS), *args]


def head_command(ports: dict[str, int], temp_dir: str, object_store_mb: int) -> list[str]:
    """The head: GCS, dashboard (state API) and client server; no CPUs, so tasks run on worker nodes."""
    return _start_command(ports, [
        "--head", f"--port={ports['gcs']}", "--num-cpus=0", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={ports['dashboard']}", f"--ray-client-server-port={ports['client']}",
        f"--temp-dir={temp_dir}", f"--object-store-memory={object_store_mb * 2**20}"])


def worker_command(gcs_address: str, label: str, cpus: int, agent_ports: dict[str, int],
                   object_store_mb: int) -> list[str]:
    """A worker node with ``cpus`` CPUs and the custom resource ``{label: 1}`` (also its node name)."""
    return _start_command(agent_ports, [
        f"--address={gcs_address}", f"--num-cpus={cpus}", f"--resources={json.dumps({label: 1})}",
        f"--node-name={label}", f"--object-store-memory={object_store_mb * 2**20}"])


def state_api(dashboard_url: str, token_path: Path, path: str, timeout_s: float = 10.0) -> list[dict]:
    """The rows of a state API listing (``nodes``, ``tasks``...) of the dashboard at ``dashboard_url``."""
    request = urllib.request.Request(f"{dashboard_url}/api/v0/{path}",
                                     headers={"Authorization": f"Bearer {token_path.read_text().strip()}"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        body = json.loads(response.read())
    if not body.get("result"):
        raise RuntimeError(body.get("msg") or f"state API {path} answered {body}")
    return body["data"]["result"]["result"]


def alive_nodes(dashboard_url: str, token_path: Path) -> list[dict]:
    """The nodes the head sees alive, or [] while it does not answer."""
    try:
        nodes = state_api(dashboard_url, token_path, "nodes?limit=1000")
    except (urllib.error.URLError, ConnectionError, TimeoutError, RuntimeError, ValueError, OSError):
        return []
    return [node for node in nodes if node.get("state") == "ALIVE"]


def raylet_pid(session: int) -> int | None:
    """The raylet of the node whose ``ray start`` leads session ``session`` (None when it has none)."""
    for pid in session_members(session):
        if process_name(pid) == "raylet":
            return pid
    return None
