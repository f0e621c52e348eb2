"""Fitting on the local cluster with 1 and with 2 Ray worker nodes (infra.local_cluster).

Starts a local cluster with 2 worker nodes of ``--cpus-per-worker`` CPUs each, renders ``--subjects``
subjects (8 by default) into its S3 store, fits them with both worker nodes, stops worker node
``node_b`` and fits the same renders again on ``node_a`` alone, then stops the cluster. Both fits run
in this process against the cluster's Ray (``ray_address``) and Prefect server, into their own
dataset roots, with 1-subject fitting shards.

Before the timed fits, a short warm-up fit on both nodes starts each node's Ray worker processes and
imports torch there, so neither timed fit pays that once-per-worker cost. Printed: the wall time of
each fit flow (phase A, the shared decoder, runs once on one node in both), the phase-B wall time
(first shard task start to last shard task end), their ratios (1 node / 2 nodes; 2.0 would be
perfect scaling), and per phase-B shard the overhead around the fitting itself: the Ray task's run time
minus the seconds the shard job spent fitting and committing (its manifest's ``seconds``), as a
share of those seconds; plus the time each shard waited between submission and start (queueing
included). The machine's load average is printed: timings only compare on an otherwise idle machine.

Run: ``.venv/bin/python benchmarks/cluster_scaling.py [--run-dir DIR] [--subjects 8] [--steps 1500]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from infra.local_cluster import ClusterConfig, ClusterState, down, up
from infra.local_cluster.processes import stop_session
from infra.local_cluster.ray_nodes import alive_nodes, state_api

CORPUS = ["corpus.holdout_subjects=1", "corpus.shard_size=4", "render.views=6", "render.resolution=16",
          "render.samples=2", "triplane.resolution=8", "triplane.channels=4", "triplane.rescale_min=4",
          "triplane.decoder.hidden=16", "fit.shared_subjects=2", "fit.shared_steps=4", "fit.rays_per_step=128",
          "fit.coarse_samples=8", "fit.fine_samples=8", "fit.holdout_views=2", "fit.shard_size=1",
          "base.unet.attention_resolutions=[]", "base.unet.aware_resolutions=[4]",
          "upsampler.unet.aware_resolutions=[8]"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("data/cluster-scaling"))
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1500, help="phase-B steps per subject (fit.steps)")
    parser.add_argument("--cpus-per-worker", type=int, default=1)
    return parser.parse_args()


def fit_tasks(state: ClusterState, since_ms: float) -> list[dict]:
    """Finished ``fit_shard`` tasks created after ``since_ms`` (epoch ms)."""
    rows = state_api(state.env["LOCAL_CLUSTER_RAY_DASHBOARD"], Path(state.env["RAY_AUTH_TOKEN_PATH"]),
                     "tasks?limit=10000&detail=true", timeout_s=60)
    return [r for r in rows if r.get("name") == "fit_shard" and r.get("state") == "FINISHED"
            and (r.get("creation_time_ms") or 0) >= since_ms]


def shard_overheads(state: ClusterState, tasks: list[dict], root: str) -> tuple[list[float], list[float]]:
    """Per phase-B shard: (task run time - shard job seconds) / shard job seconds, and submission-to-start waits."""
    from rodin_core.storage import open_store

    options = {"key": state.env["AWS_ACCESS_KEY_ID"], "secret": state.env["AWS_SECRET_ACCESS_KEY"],
               "client_kwargs": {"endpoint_url": state.env["AWS_ENDPOINT_URL"]}}
    stage = open_store(root, options).stage("triplanes")
    job_seconds = [stage.read_manifest(s).extra.get("seconds") for s in stage.committed_shards()
                   if stage.read_manifest(s).extra.get("phase") == "B"]
    runs = sorted((t["end_time_ms"] - t["start_time_ms"]) / 1000 for t in tasks
                  if t.get("end_time_ms") and t.get("start_time_ms"))
    waits = [(t["start_time_ms"] - t["creation_time_ms"]) / 1000 for t in tasks
             if t.get("start_time_ms") and t.get("creation_time_ms")]
    jobs = sorted(s for s in job_seconds if s)
    shares = [(run - job) / job for run, job in zip(runs, jobs, strict=False)]
    return shares, waits


def phase_b_seconds(tasks: list[dict]) -> float:
    """Seconds from the first phase-B shard task's start to the last one's end."""
    spans = [(t["start_time_ms"], t["end_time_ms"]) for t in tasks if t.get("start_time_ms") and t.get("end_time_ms")]
    return (max(end for _, end in spans) - min(start for start, _ in spans)) / 1000


def timed_fit(state: ClusterState, renders: str, out: str, overrides: list[str]) -> tuple[float, list[dict]]:
    from workflows.fit_triplanes import fit_triplanes

    since_ms = time.time() * 1000
    start = time.perf_counter()
    fit_triplanes(renders=renders, out=out, overrides=overrides, ray_address=state.env["RAY_ADDRESS"])
    seconds = time.perf_counter() - start
    return seconds, fit_tasks(state, since_ms)


def main() -> None:
    args = parse_args()
    overrides = [f"corpus.subjects={args.subjects}", *CORPUS, f"fit.steps={args.steps}",
                 f"fit.eval_every={max(1, args.steps // 2)}"]
    print(f"starting the local cluster in {args.run_dir} (2 worker nodes of {args.cpus_per_worker} CPU)")
    state = up(ClusterConfig(args.run_dir, workers=2, cpus_per_worker=args.cpus_per_worker))
    try:
        os.environ.update(state.env)  # this process is a client: Prefect API, S3 and Ray's token
        from workflows.render_avatars import render_avatars

        renders = "s3://rodin/scaling/renders"
        start = time.perf_counter()
        render_avatars(out=renders, overrides=overrides, ray_address=state.env["RAY_ADDRESS"])
        print(f"rendered {args.subjects} subjects in {time.perf_counter() - start:.1f} s")
        warm = [o for o in overrides if not o.startswith(("fit.steps=", "fit.eval_every="))]
        timed_fit(state, renders, "s3://rodin/scaling/warm-up", [*warm, "fit.steps=4", "fit.eval_every=2"])
        print("warm-up fit done: every node's Ray workers have imported torch")
        results, phase_b = {}, {}
        for nodes in (2, 1):
            if nodes == 1:
                stop_session(state.component("ray-node_b").pid, 15.0)
                while len(alive_nodes(state.env["LOCAL_CLUSTER_RAY_DASHBOARD"],
                                      Path(state.env["RAY_AUTH_TOKEN_PATH"]))) != 2:
                    time.sleep(1)
            out = f"s3://rodin/scaling/fit-{nodes}-nodes"
            load = os.getloadavg()[0]
            seconds, tasks = timed_fit(state, renders, out, overrides)
            shares, waits = shard_overheads(state, tasks, out)
            results[nodes], phase_b[nodes] = seconds, phase_b_seconds(tasks)
            print(f"{nodes} worker node(s): fit wall time {seconds:.1f} s, phase B {phase_b[nodes]:.1f} s (load {load:.1f} -> {os.getloadavg()[0]:.1f}), "
                  f"{len(tasks)} shard tasks; overhead per shard {statistics.mean(shares):.1%} of its fitting time "
                  f"(median {statistics.median(shares):.1%}); submission-to-start wait mean "
                  f"{statistics.mean(waits):.1f} s")
        print(f"wall time ratio 1 node / 2 nodes: fit flow {results[1] / results[2]:.2f}, "
              f"phase B {phase_b[1] / phase_b[2]:.2f}")
    finally:
        down(args.run_dir)


if __name__ == "__main__":
    main()
