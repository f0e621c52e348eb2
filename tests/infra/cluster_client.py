"""What the local-cluster tests and the scaling benchmark do against a running cluster.

Deploy ``prefect.yaml``, run a deployment through the Prefect API and wait for it, read flow-run
states from the Postgres database itself, and list Ray tasks and actors per worker node.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from uuid import UUID

from infra.local_cluster import ClusterState
from infra.local_cluster.ray_nodes import state_api

REPO_ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def cluster_env(state: ClusterState, prefect_home: Path) -> dict[str, str]:
    """This process's environment plus the cluster's client settings (``env.sh``), with a private Prefect home."""
    env = {**os.environ, **state.env, "PREFECT_HOME": str(prefect_home)}
    env.pop("PREFECT_PROFILE", None)
    return env


def storage_options(state: ClusterState) -> dict:
    """s3fs options that reach the cluster's SeaweedFS."""
    return {"key": state.env["AWS_ACCESS_KEY_ID"], "secret": state.env["AWS_SECRET_ACCESS_KEY"],
            "client_kwargs": {"endpoint_url": state.env["AWS_ENDPOINT_URL"]}}


def deploy(state: ClusterState, prefect_home: Path) -> str:
    """``prefect deploy --all`` of prefect.yaml from the repository root; its output."""
    done = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], cwd=REPO_ROOT,
                          env=cluster_env(state, prefect_home), capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise AssertionError(f"prefect deploy failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def start_run(state: ClusterState, deployment: str, parameters: dict):
    """Create a flow run of ``deployment`` through the Prefect API; the FlowRun (not waited for)."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: state.env["PREFECT_API_URL"]}):
        return run_deployment(deployment, parameters=parameters, timeout=0)


def wait_run(state: ClusterState, flow_run_id: UUID, timeout_s: float):
    """Wait until the flow run is final; the FlowRun read back from the server."""
    from prefect.flow_runs import wait_for_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: state.env["PREFECT_API_URL"]}):
        return asyncio.run(wait_for_flow_run(flow_run_id, timeout=int(timeout_s), poll_interval=2, log_states=True))


def run_and_wait(state: ClusterState, deployment: str, parameters: dict, timeout_s: float = 1800):
    return wait_run(state, start_run(state, deployment, parameters).id, timeout_s)


def database_states(state: ClusterState, flow_run_ids: list[UUID]) -> dict[str, str]:
    """``{flow run id: state type}`` read with SQL from the Prefect server's Postgres database."""
    import asyncpg

    dsn = state.env["LOCAL_CLUSTER_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")

    async def query() -> dict[str, str]:
        connection = await asyncpg.connect(dsn)
        try:
            rows = await connection.fetch("SELECT id, state_type FROM flow_run WHERE id = ANY($1::uuid[])",
                                          [str(i) for i in flow_run_ids])
        finally:
            await connection.close()
        return {str(row["id"]): str(row["state_type"]) for row in rows}

    return asyncio.run(query())


def _token(state: ClusterState) -> Path:
    return Path(state.env["RAY_AUTH_TOKEN_PATH"])


def node_names(state: ClusterState) -> dict[str, str]:
    """``{node id: node name}`` of every node the head knows (alive or dead)."""
    nodes = state_api(state.env["LOCAL_CLUSTER_RAY_DASHBOARD"], _token(state), "nodes?limit=1000&detail=true")
    return {node["node_id"]: node.get("node_name", "?") for node in nodes}


def ray_rows(state: ClusterState, kind: str, name_key: str, names: set[str]) -> list[dict]:
    """State API rows of ``kind`` (tasks, actors) whose ``name_key`` is in ``names``, each with its ``node_name``."""
    rows = state_api(state.env["LOCAL_CLUSTER_RAY_DASHBOARD"], _token(state), f"{kind}?limit=10000&detail=true",
                     timeout_s=60)
    nodes = node_names(state)
    return [{**row, "node_name": nodes.get(row.get("node_id") or "", "?")}
            for row in rows if row.get(name_key) in names]


def per_node(rows: list[dict], states: set[str] | None = None) -> Counter:
    """How many ``rows`` (in ``states``, when given) ran on each node."""
    return Counter(row["node_name"] for row in rows if states is None or row.get("state") in states)
