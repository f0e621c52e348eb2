"""The run folder's record of a local cluster: ``cluster.json`` (components, PIDs, ports, addresses).

``up`` rewrites it after each component starts, so ``down`` stops exactly what was started even
when ``up`` failed half-way; ``status`` reads it without touching the processes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .processes import ClusterError

STATE_FILE = "cluster.json"
ENV_FILE = "env.sh"


@dataclass
class Component:
    """One started process: its session leader's PID, its ports and its log."""

    name: str
    pid: int
    log: str
    ports: dict[str, int] = field(default_factory=dict)
    extra_pids: dict[str, int] = field(default_factory=dict)
    """Other PIDs worth naming (e.g. a Ray node's raylet, the postmaster)."""


@dataclass
class ClusterState:
    """Everything ``up`` started and how to reach it."""

    run_dir: str
    components: list[Component] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    """What a client needs: PREFECT_API_URL, RODIN_RAY_ADDRESS, AWS_* for the S3 store, Ray's token."""
    pg_data: str = ""
    """The Postgres data folder (inside the run folder, or a scratch folder under root)."""
    scratch_dirs: list[str] = field(default_factory=list)
    """Folders outside the run folder (short socket paths), removed by ``down``."""

    def component(self, name: str) -> Component:
        for item in self.components:
            if item.name == name:
                return item
        raise ClusterError(f"no component {name!r} in {Path(self.run_dir) / STATE_FILE}; "
                           f"it has {[c.name for c in self.components]}")

    def save(self) -> None:
        path = Path(self.run_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)
        exports = "".join(f"export {key}='{value}'\n" for key, value in sorted(self.env.items()))
        (Path(self.run_dir) / ENV_FILE).write_text(exports)

    @classmethod
    def load(cls, run_dir: Path) -> ClusterState:
        path = Path(run_dir) / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ClusterError(f"no local cluster was started in {run_dir} (no {STATE_FILE}); "
                               "start one with `python -m infra.local_cluster up`") from None
        except (OSError, ValueError) as exc:
            raise ClusterError(f"{path} is unreadable ({exc}); stop the processes it named by hand and delete it") \
                from None
        components = [Component(**item) for item in data.pop("components")]
        return cls(components=components, **data)
