"""``ray start`` for a node of the local cluster, kept on 127.0.0.1.

Run as ``python -m infra.local_cluster.ray_start ARGS`` with the arguments of ``ray start``. Ray
replaces a loopback ``--node-ip-address`` by the machine's network address on Linux, and refuses
to add a worker node when told not to (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). The cluster sets
that variable for every Ray process, so that the raylets, workers and drivers all resolve their
node address to 127.0.0.1, and this wrapper lets ``ray start`` itself keep the address it is given.

A busy machine (several nodes starting on shared cores) also trips two fixed start-up windows of
Ray: the raylet gives its dashboard agent about 15 s to report its ports, and ``ray start`` gives
the raylet 30 s to register with the GCS. Here the agent's ports, all chosen by the cluster, are
written for the raylet before it starts, and the node is waited for up to :data:`NODE_START_WAIT_S`.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from typing import Any

from ray._private import ray_constants, services
from ray._raylet import (
    DASHBOARD_AGENT_LISTEN_PORT_NAME,
    METRICS_AGENT_PORT_NAME,
    METRICS_EXPORT_PORT_NAME,
    persist_port,
)
from ray.scripts.scripts import cli

NODE_START_WAIT_S = 300.0


def patient(get_node: Callable[..., Any], wait_s: float) -> Callable[..., Any]:
    """``get_node`` retried on RuntimeError (node not registered yet) for up to ``wait_s`` seconds."""

    def get(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return get_node(*args, **kwargs)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    return get


def ports_written_first(start_raylet: Callable[..., Any]) -> Callable[..., Any]:
    """``start_raylet`` that first writes the agent's given ports where the raylet looks for them."""
    signature = inspect.signature(start_raylet)

    def start(*args: Any, **kwargs: Any) -> Any:
        given = signature.bind(*args, **kwargs).arguments
        for name, key in ((METRICS_AGENT_PORT_NAME, "metrics_agent_port"),
                          (METRICS_EXPORT_PORT_NAME, "metrics_export_port"),
                          (DASHBOARD_AGENT_LISTEN_PORT_NAME, "dashboard_agent_listen_port")):
            if given.get(key):
                persist_port(given["session_dir"], given["node_id"], name, int(given[key]))
        return start_raylet(*args, **kwargs)

    return start


def main(argv: list[str]) -> int:
    ray_constants.ENABLE_RAY_CLUSTER = True  # worker nodes may join
    services.resolve_ip_for_localhost = lambda host: host  # the given address is the node's
    services.get_node = patient(services.get_node, NODE_START_WAIT_S)
    services.start_raylet = ports_written_first(services.start_raylet)
    return cli.main(args=["start", *argv], prog_name="ray", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
