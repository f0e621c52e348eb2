"""``ray start`` for a node of the local cluster, kept on 127.0.0.1.

Run as ``python -m infra.local_cluster.ray_start ARGS`` with the arguments of ``ray start``. Ray
replaces a loopback ``--node-ip-address`` by the machine's network address on Linux, and refuses
to add a worker node when told not to (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). The cluster sets
that variable for every Ray process, so that the raylets, workers and drivers all resolve their
node address to 127.0.0.1, and this wrapper lets ``ray start`` itself keep the address it is given.
"""

from __future__ import annotations

import sys

from ray._private import ray_constants, services
from ray.scripts.scripts import cli


def main(argv: list[str]) -> int:
    ray_constants.ENABLE_RAY_CLUSTER = True  # worker nodes may join
    services.resolve_ip_for_localhost = lambda host: host  # the given address is the node's
    return cli.main(args=["start", *argv], prog_name="ray", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
