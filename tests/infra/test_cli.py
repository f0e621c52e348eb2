"""``python -m infra.local_cluster``: arguments, the run folder's record, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.local_cluster import (
    ClusterConfig,
    ClusterError,
    ClusterState,
    Component,
    postgres,
    up,
)
from infra.local_cluster.__main__ import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_status_and_down_without_a_cluster_say_how_to_start_one(tmp_path: Path, capsys) -> None:
    for command in ("status", "down"):
        assert main([command, "--run-dir", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert err == (f"error: no local cluster was started in {tmp_path} (no cluster.json); "
                       "start one with `python -m infra.local_cluster up`\n")


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--workers", "0", "--workers must be an integer from 1 to 26, got 0"),
    ("--cpus-per-worker", "0", "--cpus-per-worker must be a positive integer, got 0"),
])
def test_up_refuses_bad_sizes_before_starting_anything(tmp_path: Path, capsys, flag: str, value: str,
                                                       message: str) -> None:
    assert main(["up", "--run-dir", str(tmp_path / "run"), flag, value]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "run").exists()


def test_up_refuses_a_run_folder_whose_cluster_still_runs(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        state = ClusterState(run_dir=str(tmp_path), components=[Component("postgres", sleeper.pid, "x.log")])
        state.save()
        with pytest.raises(ClusterError, match=r"a local cluster already runs from .* \(postgres\); stop it with "
                                               r"`python -m infra.local_cluster down --run-dir "):
            up(ClusterConfig(tmp_path))
    finally:
        sleeper.kill()
        sleeper.wait()


def test_state_round_trips_and_env_sh_exports_the_client_settings(tmp_path: Path) -> None:
    state = ClusterState(run_dir=str(tmp_path), components=[Component("ray-node_a", 12, "a.log", {"agent": 5},
                                                                      {"raylet": 13})],
                         env={"PREFECT_API_URL": "http://127.0.0.1:1/api", "RAY_ADDRESS": "127.0.0.1:2"})
    state.save()
    assert ClusterState.load(tmp_path) == state
    assert json.loads((tmp_path / "cluster.json").read_text())["components"][0]["extra_pids"] == {"raylet": 13}
    sourced = subprocess.run(["bash", "-c", f"source {tmp_path / 'env.sh'} && echo $PREFECT_API_URL $RAY_ADDRESS"],
                             capture_output=True, text=True, check=True)
    assert sourced.stdout.split() == ["http://127.0.0.1:1/api", "127.0.0.1:2"]


def test_missing_postgres_binaries_are_one_line_that_says_how_to_install_them(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    with pytest.raises(ClusterError) as caught:
        postgres.find_binary("initdb")
    assert str(caught.value) == ("PostgreSQL's `initdb` was not found on PATH nor in /usr/lib/postgresql/*/bin; "
                                 "install them with `make cluster-deps` (apt-get install postgresql) or put them on PATH")


def test_postgres_binaries_are_found_in_the_newest_versioned_folder(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    found = ["/usr/lib/postgresql/9/bin/pg_ctl", "/usr/lib/postgresql/15/bin/pg_ctl"]
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: found)
    assert postgres.find_binary("pg_ctl") == "/usr/lib/postgresql/15/bin/pg_ctl"


def test_the_module_runs_as_a_command(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "infra.local_cluster", "status", "--run-dir", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: no local cluster was started in ") and done.stderr.count("\n") == 1
