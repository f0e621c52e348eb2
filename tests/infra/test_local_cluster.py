"""The pipeline on the local cluster (infra.local_cluster), end to end, through the Prefect API.

``python -m infra.local_cluster up`` starts Postgres, a Prefect server on it, SeaweedFS, a Ray head
with worker nodes ``node_a`` and ``node_b``, and a process worker. ``prefect.yaml`` is deployed,
then ``render-avatars`` (into ``s3://``), ``fit-triplanes`` and a 2-worker ``train-base`` run as
deployments on the Ray cluster. A second fit loses a worker node (its raylet SIGKILLed while it fits
a shard) and must still commit every shard exactly once. ``down`` must leave no process running.

The corpus is the micro corpus of the demo test (16 px views, 8 px planes, networks of a few
thousand parameters), with 6 subjects so that both worker nodes get shards. Slow (minutes, most of
it process start-up on a busy machine): marked ``cluster``, run by ``make test-cluster``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local_cluster import ClusterState
from infra.local_cluster.processes import is_alive, session_members
from infra.local_cluster.ray_nodes import alive_nodes, raylet_pid
from rodin_core.storage import open_store

from ..generation_data import MICRO_NETWORKS
from .cluster_client import (
    REPO_ROOT,
    database_states,
    deploy,
    per_node,
    ray_rows,
    run_and_wait,
    start_run,
    storage_options,
    wait_run,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(7200)]

SUBJECTS = 6
MICRO = [
    f"corpus.subjects={SUBJECTS}", "corpus.holdout_subjects=1", "corpus.shard_size=2",
    "render.views=6", "render.resolution=16", "render.samples=2",
    "triplane.resolution=8", "triplane.channels=4", "triplane.rescale_min=4", "triplane.decoder.hidden=16",
    "fit.shared_subjects=2", "fit.shared_steps=4", "fit.steps=4", "fit.rays_per_step=128", "fit.coarse_samples=8",
    "fit.fine_samples=8", "fit.eval_every=2", "fit.holdout_views=2", "fit.shard_size=1",
    *MICRO_NETWORKS, "base.train.steps=2", "base.train.batch_size=2", "base.train.log_every=1",
]
"""The demo test's micro corpus with 6 subjects in 3 renders shards and 1-subject fitting shards."""
LONG_FIT = [*MICRO, "fit.steps=60", "fit.eval_every=20"]
"""Longer phase-B fits, so that a worker node can be killed while it fits a shard."""
RUN_TIMEOUT_S = 1800
COMPLETED = "COMPLETED"


def cli(*args: str, timeout_s: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.local_cluster", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout_s, check=False)


def running(state: ClusterState) -> dict[str, list[int]]:
    """Every recorded PID (leaders, raylets) and session member still alive, per component."""
    alive = {}
    for component in state.components:
        pids = [pid for pid in (component.pid, *component.extra_pids.values()) if is_alive(pid)]
        pids += session_members(component.pid)
        if pids:
            alive[component.name] = sorted(set(pids))
    return alive


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    run_dir = tmp_path_factory.mktemp("local-cluster")
    start = time.perf_counter()
    done = cli("up", "--run-dir", str(run_dir), "--workers", "2", "--timeout", "1500", timeout_s=3000)
    print(f"`up` took {time.perf_counter() - start:.0f} s\n{done.stdout}")
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        yield ClusterState.load(run_dir)
    finally:
        if (run_dir / "cluster.json").exists() and running(ClusterState.load(run_dir)):
            cli("down", "--run-dir", str(run_dir))


@pytest.fixture(scope="module")
def deployed(cluster: ClusterState, tmp_path_factory: pytest.TempPathFactory) -> ClusterState:
    output = deploy(cluster, tmp_path_factory.mktemp("prefect-client"))
    for name in ("render-avatars/tiny", "fit-triplanes/tiny", "train-base/tiny"):
        assert name in output, output
    return cluster


@pytest.fixture(scope="module")
def pipeline(deployed: ClusterState) -> dict:
    """render-avatars, fit-triplanes and train-base (2 Ray Train workers) run as deployments on the cluster."""
    state, root = deployed, "s3://rodin/e2e"
    common = {"preset": "tiny", "overrides": MICRO, "ray_address": state.env["RAY_ADDRESS"]}
    runs, seconds = {}, {}
    for name, parameters in (
        ("render-avatars/tiny", {**common, "out": root}),
        ("fit-triplanes/tiny", {**common, "renders": root, "out": root}),
        ("train-base/tiny", {**common, "out": root, "workers": 2, "cpus_per_worker": 1}),
    ):
        start = time.perf_counter()
        runs[name] = run_and_wait(state, name, parameters, RUN_TIMEOUT_S)
        seconds[name] = round(time.perf_counter() - start, 1)
        assert runs[name].state_type.value == COMPLETED, f"{name}: {runs[name].state}"
    print(f"flow runs (s): {seconds}")
    return {"root": root, "runs": runs, "seconds": seconds}


def test_status_lists_every_component_alive_and_three_ray_nodes(cluster: ClusterState) -> None:
    done = cli("status", "--run-dir", cluster.run_dir, timeout_s=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[1:] if line and line[0] != " "}
    expected = ["postgres", "prefect-server", "seaweedfs", "ray-head", "ray-node_a", "ray-node_b", "prefect-worker"]
    assert [c.name for c in cluster.components] == expected
    for component in cluster.components:
        assert rows[component.name][1:3] == [str(component.pid), "yes"], done.stdout
    nodes = alive_nodes(cluster.env["LOCAL_CLUSTER_RAY_DASHBOARD"], Path(cluster.env["RAY_AUTH_TOKEN_PATH"]))
    assert sorted(node.get("node_name") for node in nodes if not node["is_head_node"]) == ["node_a", "node_b"]
    assert len(nodes) == 3 and "Ray nodes alive: 3" in done.stdout


def test_pipeline_runs_on_both_worker_nodes_and_records_its_runs_in_postgres(cluster: ClusterState,
                                                                             pipeline: dict) -> None:
    store = open_store(pipeline["root"], storage_options(cluster))
    renders = store.stage("renders")
    assert renders.committed_shards() == ["shard-000000", "shard-000001", "shard-000002"]
    fitted = store.stage("triplanes")
    subjects = [s for shard in fitted.committed_shards() for s in fitted.read_manifest(shard).subject_ids]
    assert sorted(subjects) == list(range(SUBJECTS))
    assert all(fitted.verify_shard(shard).ok for shard in fitted.committed_shards())
    base = store.stage("checkpoints").read_manifest("base")
    assert base.extra["workers"] == 2

    ids = [run.id for run in pipeline["runs"].values()]
    assert database_states(cluster, ids) == {str(i): COMPLETED for i in ids}

    shard_tasks = ray_rows(cluster, "tasks", "name", {"render_shard", "fit_shard"})
    counts = {name: per_node([t for t in shard_tasks if t["name"] == name], {"FINISHED"})
              for name in ("render_shard", "fit_shard")}
    trainers = per_node(ray_rows(cluster, "actors", "class_name", {"RayTrainWorker"}))
    print(f"finished shard tasks per node: {counts}; Ray Train workers per node: {dict(trainers)}")
    assert sum(counts["render_shard"].values()) == 3
    both = counts["render_shard"] + counts["fit_shard"]
    assert set(both) == {"node_a", "node_b"} and min(both.values()) >= 1, both
    assert dict(trainers) == {"node_a": 1, "node_b": 1}


WORKER_NODES = ("node_a", "node_b")
"""The worker nodes of the local cluster; a killed node is one of them."""


def _running_fit_shard(state: ClusterState, deadline: float) -> dict:
    """A ``fit_shard`` task running on a worker node (node_b preferred), once there is one.

    A task the state API lists as running before its node is known (node name ``?``) is passed over.
    """
    while time.monotonic() < deadline:
        rows = [t for t in ray_rows(state, "tasks", "name", {"fit_shard"})
                if t.get("state") == "RUNNING" and t["node_name"] in WORKER_NODES]
        if rows:
            return min(rows, key=lambda t: t["node_name"] != "node_b")
        time.sleep(0.5)
    raise AssertionError("no fit_shard task started running on the cluster in time")


def test_fit_survives_a_worker_node_killed_mid_shard(cluster: ClusterState, pipeline: dict) -> None:
    state, root = cluster, "s3://rodin/killed-node"
    parameters = {"preset": "tiny", "overrides": LONG_FIT, "renders": pipeline["root"], "out": root,
                  "ray_address": state.env["RAY_ADDRESS"]}
    run = start_run(state, "fit-triplanes/tiny", parameters)
    victim = _running_fit_shard(state, time.monotonic() + RUN_TIMEOUT_S)
    node = state.component(f"ray-{victim['node_name']}")
    raylet = raylet_pid(node.pid)
    assert raylet is not None, f"no raylet in the session of {node.name}"
    os.kill(raylet, signal.SIGKILL)
    killed_at = time.monotonic()

    stage = open_store(root, storage_options(state)).stage("triplanes")
    recovered_s = None
    final = None
    while final is None:
        covered = [s for shard in stage.committed_shards() for s in stage.read_manifest(shard).subject_ids]
        if recovered_s is None and sorted(covered) == list(range(SUBJECTS)):
            recovered_s = time.monotonic() - killed_at
        final = wait_run(state, run.id, 5) if _is_final(state, run.id) else None
        time.sleep(1)
    flow_s = time.monotonic() - killed_at

    assert final.state_type.value == COMPLETED, final.state
    assert database_states(state, [run.id]) == {str(run.id): COMPLETED}
    shards = stage.committed_shards()
    subjects = [s for shard in shards for s in stage.read_manifest(shard).subject_ids]
    assert sorted(subjects) == list(range(SUBJECTS))  # every subject in exactly one committed shard
    assert all(stage.verify_shard(shard).ok for shard in shards)
    attempts = {shard: _attempts(stage, shard) for shard in shards}
    duplicated = [shard for shard in shards if _complete_attempts(stage, shard) > 1]
    retried = [shard for shard, count in attempts.items() if count > 1]
    tasks = ray_rows(state, "tasks", "name", {"fit_shard"})
    print(f"killed the raylet of {node.name} while it fitted a shard; shards committed {len(shards)}, "
          f"retried {len(retried)} ({retried}), duplicated {len(duplicated)}, all subjects committed "
          f"{recovered_s if recovered_s is None else round(recovered_s, 1)} s after the kill, flow completed "
          f"{flow_s:.1f} s after it; fit_shard task states per node: "
          f"{ {s: dict(per_node(tasks, {s})) for s in sorted({t['state'] for t in tasks})} }")
    assert not duplicated
    assert not is_alive(raylet)
    alive = alive_nodes(state.env["LOCAL_CLUSTER_RAY_DASHBOARD"], Path(state.env["RAY_AUTH_TOKEN_PATH"]))
    assert victim["node_name"] not in [n.get("node_name") for n in alive]


def _is_final(state: ClusterState, flow_run_id) -> bool:
    states = database_states(state, [flow_run_id])
    return states.get(str(flow_run_id)) in {COMPLETED, "FAILED", "CRASHED", "CANCELLED"}


def _attempts(stage, shard: str) -> int:
    """Attempt folders written for ``shard`` (the committed one included)."""
    folder = f"{stage.store.root}/{stage.name}/data/{shard}"
    return len([p for p in stage.fs.ls(folder, detail=False, refresh=True)]) if stage.fs.exists(folder) else 0


def _complete_attempts(stage, shard: str) -> int:
    """Attempt folders of ``shard`` holding every file its manifest names (two would be a duplicate commit)."""
    names = {f.name for f in stage.read_manifest(shard).files}
    folder = f"{stage.store.root}/{stage.name}/data/{shard}"
    complete = 0
    for attempt in stage.fs.ls(folder, detail=False, refresh=True):
        present = {Path(p).name for p in stage.fs.find(attempt)}
        complete += names <= present
    return complete


def test_down_stops_every_process_it_started(cluster: ClusterState, pipeline: dict) -> None:
    assert running(cluster)
    start = time.perf_counter()
    done = cli("down", "--run-dir", cluster.run_dir, timeout_s=600)
    print(f"`down` took {time.perf_counter() - start:.0f} s: {done.stdout.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert running(ClusterState.load(Path(cluster.run_dir))) == {}
    assert all(not Path(folder).exists() for folder in cluster.scratch_dirs)
    status = cli("status", "--run-dir", cluster.run_dir, timeout_s=120)
    assert status.returncode == 1 and " yes " not in status.stdout, status.stdout
