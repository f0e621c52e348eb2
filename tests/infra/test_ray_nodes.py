"""The Ray node commands of the local cluster (infra.local_cluster.ray_nodes): labels, ports, environment."""

from __future__ import annotations

import json
from pathlib import Path

from infra.local_cluster.ray_nodes import (
    AGENT_PORTS,
    head_command,
    node_label,
    ray_env,
    worker_command,
)

AGENTS = {name: 40000 + i for i, name in enumerate(AGENT_PORTS)}


def _flags(command: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def test_a_worker_node_is_labelled_and_given_every_agent_port() -> None:
    command = worker_command("127.0.0.1:6379", node_label(1), 2, AGENTS, 64)
    flags = _flags(command)
    assert command[1:3] == ["-m", "infra.local_cluster.ray_start"] and "--block" in command
    assert json.loads(flags["resources"]) == {"node_b": 1} and flags["node-name"] == "node_b"
    assert flags["num-cpus"] == "2" and flags["address"] == "127.0.0.1:6379"
    assert flags["node-ip-address"] == "127.0.0.1" and flags["object-store-memory"] == str(64 * 2**20)
    assert {name: int(flags[name]) for name in AGENT_PORTS} == AGENTS


def test_the_head_offers_no_cpus_and_serves_its_dashboard_on_loopback() -> None:
    ports = {"gcs": 1, "dashboard": 2, "client": 3, **AGENTS}
    flags = _flags(head_command(ports, "/tmp/x", 64))
    assert "--head" in head_command(ports, "/tmp/x", 64)
    assert (flags["num-cpus"], flags["port"], flags["dashboard-port"], flags["dashboard-host"]) == ("0", "1", "2",
                                                                                                  "127.0.0.1")
    assert {name: int(flags[name]) for name in AGENT_PORTS} == AGENTS and flags["temp-dir"] == "/tmp/x"


def test_every_ray_process_keeps_loopback_and_uses_the_cluster_token(tmp_path: Path) -> None:
    env = ray_env(tmp_path / "token")
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert (env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN_PATH"]) == ("token", str(tmp_path / "token"))
    assert [node_label(i) for i in range(3)] == ["node_a", "node_b", "node_c"]
