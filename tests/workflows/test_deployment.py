"""The ``render-avatars/tiny`` deployment of prefect.yaml, run through a real server and process worker.

The way users run it (README): a Prefect server, the ``rodin-process`` work pool, ``prefect
deploy`` from the repository root, a process worker, ``prefect deployment run``. The worker is
started outside the repository so that the deployment's pull step (back to the repository root)
is what makes the flow importable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rodin_core.datasets.layout import VIEWS_TABLE
from rodin_core.storage import open_store

from ..prefect_server import PrefectServer, start_prefect_server

REPO_ROOT = Path(__file__).resolve().parents[2]
POOL = "rodin-process"


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[PrefectServer]:
    start = time.perf_counter()
    server = start_prefect_server(tmp_path / "prefect-home")
    print(f"prefect server healthy after {time.perf_counter() - start:.1f} s")
    try:
        yield server
    finally:
        server.stop()


def test_deployment_runs_on_a_process_worker(prefect_server: PrefectServer, tmp_path: Path) -> None:
    server = prefect_server
    server.run(["work-pool", "create", POOL, "--type", "process"], REPO_ROOT, 120, "work-pool")
    deployed = server.run(["--no-prompt", "deploy", "--name", "tiny"], REPO_ROOT, 180, "deploy")
    assert "render-avatars/tiny" in deployed.stdout, deployed.stdout
    workdir = tmp_path / "worker"
    workdir.mkdir()
    server.start(["worker", "start", "--pool", POOL, "--type", "process"], workdir, "worker")

    out = tmp_path / "store"
    params = {"out": str(out), "subjects": 2, "shard_size": 1, "views": 2, "resolution": 32,
              "overrides": ["render.samples=2"]}
    start = time.perf_counter()
    run = server.run(["deployment", "run", "render-avatars/tiny", "--params", json.dumps(params),
                      "--watch", "--watch-timeout", "400"], REPO_ROOT, 450, "deployment-run")
    print(f"deployment run finished after {time.perf_counter() - start:.1f} s")
    assert "Flow run finished successfully in 'Completed'" in run.stdout, run.stdout + server.logs()

    stage = open_store(str(out)).stage("renders")
    assert stage.committed_shards() == ["shard-000000", "shard-000001"]
    assert [stage.read_table(s, VIEWS_TABLE).num_rows for s in stage.committed_shards()] == [2, 2]
    assert (out / "reports" / "render-contact-sheet.png").is_file()
