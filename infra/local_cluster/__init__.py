"""The pipeline's cluster on one machine, without containers (docs/local-cluster.md).

``python -m infra.local_cluster up|down|status [--run-dir DIR] [--workers N]`` starts Postgres,
a Prefect server on it, SeaweedFS (S3), a Ray head with N worker nodes and a Prefect process
worker, all on free ports of 127.0.0.1, with their logs and PIDs in one run folder.
"""

from .cluster import ClusterConfig, ComponentStatus, down, ray_nodes_alive, status, up
from .processes import ClusterError
from .state import ClusterState, Component

__all__ = ["ClusterConfig", "ClusterError", "ClusterState", "Component", "ComponentStatus", "down",
           "ray_nodes_alive", "status", "up"]
