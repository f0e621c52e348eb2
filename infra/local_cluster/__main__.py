"""``python -m infra.local_cluster up|down|status``: one line per component, one line per error."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cluster import ClusterConfig, down, ray_nodes_alive, status, up
from .processes import ClusterError
from .state import ENV_FILE, ClusterState


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infra.local_cluster", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--run-dir", type=Path, default=ClusterConfig.run_dir,
                        help="folder of the logs, PIDs and data (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=ClusterConfig.workers, help="Ray worker nodes (up)")
    parser.add_argument("--cpus-per-worker", type=int, default=ClusterConfig.cpus_per_worker,
                        help="CPUs each Ray worker node offers (up)")
    parser.add_argument("--timeout", type=float, default=ClusterConfig.timeout_s,
                        help="seconds each component may take to start (up)")
    return parser.parse_args(argv)


def print_status(state: ClusterState) -> bool:
    """Print one row per component and the client settings; whether every component runs."""
    _, rows = status(Path(state.run_dir))
    print(f"{'component':<16} {'pid':>8} {'alive':<5} {'procs':>5}  ports")
    for row in rows:
        ports = " ".join(f"{name}={port}" for name, port in row.ports.items())
        print(f"{row.name:<16} {row.pid:>8} {'yes' if row.alive else 'no':<5} {row.processes:>5}  {ports}")
    if any(row.alive for row in rows):
        names = sorted(node.get("node_name", "?") for node in ray_nodes_alive(state))
        print(f"Ray nodes alive: {len(names)} ({', '.join(names)})")
        print(f"client settings: source {Path(state.run_dir) / ENV_FILE}  (PREFECT_API_URL="
              f"{state.env.get('PREFECT_API_URL')}, RAY_ADDRESS={state.env.get('RAY_ADDRESS')}, "
              f"AWS_ENDPOINT_URL={state.env.get('AWS_ENDPOINT_URL')})")
    print(f"logs: {Path(state.run_dir) / 'logs'}")
    return bool(rows) and all(row.alive for row in rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "up":
            start = time.monotonic()
            state = up(ClusterConfig(args.run_dir, args.workers, args.cpus_per_worker, timeout_s=args.timeout))
            print(f"local cluster up in {time.monotonic() - start:.0f} s")
            print_status(state)
            return 0
        if args.command == "down":
            state = down(args.run_dir)
            print(f"local cluster in {state.run_dir} stopped ({len(state.components)} components)")
            return 0
        state, _ = status(args.run_dir)
        return 0 if print_status(state) else 1
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; what had started was stopped (`status` tells)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
