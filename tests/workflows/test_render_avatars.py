"""The ``render-avatars`` flow end to end with real Blender renders (workflows.render_avatars).

Every flow run renders a tiny corpus (2 shards of 1 subject, 2 views at 32 px) into a temporary
local store under the session's temporary Prefect server (``prefect_server``, conftest.py).
Failures are injected at the Blender call of ``render.shard_job`` so that they travel the real
failure path (failure record, re-raise, Prefect retry).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from prefect.artifacts import Artifact
from prefect.flows import load_flow_from_entrypoint
from prefect.task_runners import ThreadPoolTaskRunner

import workflows.render_avatars as flow_module
from render import shard_job
from render.launcher import BlenderCrashError
from rodin_core.config import ConfigError
from rodin_core.datasets.layout import SUBJECTS_TABLE, VIEWS_TABLE
from rodin_core.imaging import decode_png
from rodin_core.storage import open_store
from workflows.artifacts import ShardRow, shard_table, totals_markdown
from workflows.ray_runner import (
    PROJECT_ROOT,
    RodinRayTaskRunner,
    build_ray_task_runner,
    build_task_runner,
    ray_runtime_env,
)
from workflows.render_avatars import render_avatars
from workflows.render_avatars import render_config as build_config
from workflows.shards import ShardsFailedError

TINY = {"preset": "tiny", "subjects": 2, "shard_size": 1, "views": 2, "resolution": 32,
        "overrides": ["render.samples=2"]}
SHARDS = ["shard-000000", "shard-000001"]


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry failed shards at once instead of after the production delay."""
    monkeypatch.setattr(flow_module, "render_shard", flow_module.render_shard.with_options(retry_delay_seconds=0))


def inject_blender_failures(monkeypatch: pytest.MonkeyPatch, subject_id: int, failures: int) -> list[int]:
    """Make the first ``failures`` Blender runs of the shard holding ``subject_id`` crash.

    Returns a list that grows by one entry per Blender run of that shard.
    """
    real = shard_job.run_blender_shard
    calls: list[int] = []
    lock = threading.Lock()

    def flaky(spec: dict, workdir: Path, timeout_s: float):
        if spec["subject_ids"] == [subject_id]:
            with lock:
                calls.append(subject_id)
                attempt = len(calls)
            if attempt <= failures:
                raise BlenderCrashError(f"injected crash {attempt} of subject {subject_id}", -11,
                                        "fake log line: Segmentation fault")
        return real(spec, workdir, timeout_s)

    monkeypatch.setattr(shard_job, "run_blender_shard", flaky)
    return calls


def attempts(out: Path) -> dict[str, str]:
    stage = open_store(str(out)).stage("renders")
    return {s: stage.read_manifest(s).attempt_id for s in stage.committed_shards()}


def test_build_config_applies_parameters_after_overrides() -> None:
    cfg = build_config("tiny", None, ["corpus.subjects=9", "render.samples=3"], subjects=5, views=3,
                       resolution=None, asset_dir="/assets/yes")
    assert (cfg.corpus.subjects, cfg.render.views, cfg.render.samples) == (5, 3, 3)
    assert cfg.render.resolution == 64  # tiny preset kept
    assert cfg.corpus.asset_dir == "/assets/yes"  # strings stay strings (not YAML booleans)


def test_task_runners_and_ray_environment() -> None:
    threads = build_task_runner("threads", workers=3)
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = build_task_runner("ray", workers=2)
    assert isinstance(local, RodinRayTaskRunner) and local.address is None
    assert local.init_kwargs["num_cpus"] == 2
    assert local.init_kwargs["runtime_env"]["env_vars"]["PYTHONPATH"].split(os.pathsep)[0] == str(PROJECT_ROOT)
    cluster = build_task_runner("ray", ray_address="ray://head:10001")
    assert "num_cpus" not in cluster.init_kwargs
    assert cluster.init_kwargs["runtime_env"]["working_dir"] == str(PROJECT_ROOT)
    assert ".venv" in cluster.init_kwargs["runtime_env"]["excludes"]
    assert ray_runtime_env("ray://head:10001", {"pip": ["x"]}) == {"pip": ["x"]}
    with pytest.raises(ValueError, match="unknown task runner 'dask'"):
        build_task_runner("dask")
    with pytest.raises(ValueError, match="needs task_runner='ray'"):
        build_task_runner("threads", ray_address="auto")
    with pytest.raises(ValueError, match="local Ray instance only"):
        build_ray_task_runner("ray://head:10001", num_cpus=4)


def test_totals_markdown_counts_rates_and_failures() -> None:
    rows = [ShardRow("shard-000000", "rendered", 2, 20, 4.0, "a0"), ShardRow("shard-000001", "skipped", 2, 20, 0, "a1"),
            ShardRow("shard-000002", "failed", 2, 0, 0, "a2", "BlenderCrashError: exit -11 | core\nlog tail")]
    text = totals_markdown("Render avatars", rows, wall_seconds=8.0, store_uri="s3://b/x")
    assert "| 3 | 1 | 1 | 1 | 2 | 20 | 8.0 | 2.50 |" in text
    assert "| shard-000002 | a2 | BlenderCrashError: exit -11 \\| core |" in text
    assert [r["status"] for r in shard_table(rows)] == ["rendered", "skipped", "failed"]


def test_bad_parameter_fails_before_rendering(prefect_server: float, tmp_path: Path) -> None:
    state = render_avatars(**{**TINY, "subjects": 0}, out=str(tmp_path / "store"), task_runner="threads",
                           return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match="corpus.subjects"):
        state.result()
    assert not (tmp_path / "store").exists()
    state = render_avatars(**TINY, out=str(tmp_path / "store"), task_runner="dask", return_state=True)
    assert state.is_failed() and "task_runner" in state.message
    assert not (tmp_path / "store").exists()


def test_render_resume_and_rerender_one_shard(prefect_server: float, tmp_path: Path) -> None:
    out = tmp_path / "store"
    first = render_avatars(**TINY, out=str(out), task_runner="threads")
    assert first["shards_total"] == 2 and first["shards_rendered"] == 2 and first["shards_skipped"] == 0
    assert first["shards_failed"] == {} and (first["subjects"], first["views"]) == (2, 4)
    stage = open_store(str(out)).stage("renders")
    assert stage.committed_shards() == SHARDS
    for index, shard in enumerate(SHARDS):
        views = stage.read_table(shard, VIEWS_TABLE)
        assert views.column("subject_id").to_pylist() == [index, index]
        assert views.column("view_index").to_pylist() == [0, 1]
        assert stage.read_table(shard, SUBJECTS_TABLE).column("subject_id").to_pylist() == [index]
    sheet = decode_png((out / "reports" / "render-contact-sheet.png").read_bytes())
    assert sheet.shape == (32 + 12, 2 * 32, 3)  # two 32 px frontal views side by side, label strip
    assert first["contact_sheet"].endswith("reports/render-contact-sheet.png")
    table = Artifact.get("render-avatars-shards")
    assert '"status": "rendered"' in table.data and "shard-000001" in table.data
    assert "data:image/png;base64," in Artifact.get("render-avatars-contact-sheet").data

    committed = attempts(out)
    second = render_avatars(**TINY, out=str(out), task_runner="threads")
    assert (second["shards_rendered"], second["shards_skipped"], second["views"]) == (0, 2, 0)
    assert attempts(out) == committed

    stage.delete_manifest("shard-000001")
    third = render_avatars(**TINY, out=str(out), task_runner="threads")
    assert (third["shards_rendered"], third["shards_skipped"]) == (1, 1)
    after = attempts(out)
    assert after["shard-000000"] == committed["shard-000000"]
    assert after["shard-000001"] != committed["shard-000001"]


def test_shard_that_fails_once_is_retried(prefect_server: float, tmp_path: Path, fast_retries: None,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "store"
    calls = inject_blender_failures(monkeypatch, subject_id=1, failures=1)
    state = render_avatars(**TINY, out=str(out), task_runner="threads", return_state=True)
    assert state.is_completed(), state.message
    assert len(calls) == 2
    stage = open_store(str(out)).stage("renders")
    assert stage.committed_shards() == SHARDS
    records = stage.failures("shard-000001")
    assert len(records) == 1 and "injected crash 1" in records[0]["error"]
    assert records[0]["details"]["log_tail"] == "fake log line: Segmentation fault"
    assert records[0]["attempt_id"] != stage.read_manifest("shard-000001").attempt_id
    assert stage.failures("shard-000000") == []


def test_shard_that_always_fails_fails_the_flow_after_the_others(prefect_server: float, tmp_path: Path,
                                                                 fast_retries: None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "store"
    calls = inject_blender_failures(monkeypatch, subject_id=1, failures=99)
    state = render_avatars(**TINY, out=str(out), task_runner="threads", return_state=True)
    assert state.is_failed()
    assert len(calls) == 1 + flow_module.RETRIES
    stage = open_store(str(out)).stage("renders")
    assert stage.committed_shards() == ["shard-000000"]
    assert len(stage.failures("shard-000001")) == 1 + flow_module.RETRIES
    with pytest.raises(ShardsFailedError, match=r"1 of 2 render shards failed.*shard-000001: BlenderCrashError"):
        state.result()
    error = state.result(raise_on_failure=False)
    assert error.summary["shards_rendered"] == 1
    assert "injected crash 3 of subject 1" in error.summary["shards_failed"]["shard-000001"]
    summary = Artifact.get("render-avatars-summary").data
    assert "## Failed shards" in summary and "shard-000001" in summary and "injected crash 3" in summary


def test_render_on_local_ray_from_file_entrypoint(prefect_server: float, tmp_path: Path) -> None:
    """Loaded by file path (module ``render_avatars``, unknown to Ray workers), as ``prefect deploy`` may."""
    flow_from_file = load_flow_from_entrypoint(str(Path(flow_module.__file__)) + ":render_avatars")
    assert flow_from_file.fn.__module__ != flow_module.__name__
    out = tmp_path / "store"
    start = time.perf_counter()
    summary = flow_from_file(**TINY, out=str(out), task_runner="ray")
    print(f"ray flow run took {time.perf_counter() - start:.1f} s")
    assert (summary["shards_rendered"], summary["shards_failed"]) == (2, {})
    stage = open_store(str(out)).stage("renders")
    assert stage.committed_shards() == SHARDS
    assert [stage.read_table(s, VIEWS_TABLE).num_rows for s in SHARDS] == [2, 2]
