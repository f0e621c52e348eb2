"""The ``fit-triplanes`` flow end to end on real renders (workflows.fit_triplanes, rodin_core.fitting.shard_job).

The module renders one tiny corpus with the real render flow (6 subjects x 6 views at 32 px, in
2 renders shards) and fits it once with very small settings (8 px planes of 4 channels, 20 steps)
into another dataset root: phase A's 2 subjects form fitting shard 0, shards 1 and 2 are phase B's.
Tests that change the store work on a copy of that fitted root. Failures are injected inside the
shard task (``rodin_core.fitting.shard_job``) so that they take the real path: failure record, re-raise,
Prefect retry.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from prefect import task
from prefect.artifacts import Artifact
from prefect.cache_policies import NO_CACHE
from prefect.flows import load_flow_from_entrypoint

import workflows.fit_triplanes as flow_module
from rodin_core.config import load_config
from rodin_core.datasets.decoder import load_shared_planes, load_warm_start
from rodin_core.datasets.errors import FitDataError
from rodin_core.datasets.layout import PLANES_FILE, RECORDS_FILE
from rodin_core.datasets.renders import renders_index
from rodin_core.datasets.triplane_records import planes_from_safetensors
from rodin_core.fitting import shard_job
from rodin_core.imaging import decode_png
from rodin_core.storage import open_store
from workflows.cli import main
from workflows.fit_triplanes import FitShardsFailedError, fit_triplanes
from workflows.render_avatars import render_avatars

SHARDS = ["shard-000000", "shard-000001", "shard-000002"]
SUBJECTS = [[0, 1], [2, 3], [4, 5]]
FIT = ["triplane.resolution=8", "triplane.channels=4", "triplane.rescale_min=4", "triplane.decoder.hidden=16",
       "fit.shared_subjects=2", "fit.shared_steps=20", "fit.steps=20", "fit.rays_per_step=256",
       "fit.coarse_samples=8", "fit.fine_samples=8", "fit.eval_every=10", "fit.holdout_views=2", "fit.shard_size=2",
       "base.unet.attention_resolutions=[]", "base.unet.aware_resolutions=[4]", "upsampler.unet.aware_resolutions=[8]"]
"""Small planes and short fits; the U-Nets' levels follow the plane sizes (4 and 8), as every config must be valid."""


@pytest.fixture(scope="module")
def renders_root(prefect_server: float, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("renders")
    start = time.perf_counter()
    summary = render_avatars(preset="tiny", out=str(root), subjects=6, shard_size=3, views=6, resolution=32,
                             overrides=["render.samples=2"], task_runner="threads")
    print(f"rendered the fitting corpus in {time.perf_counter() - start:.1f} s")
    assert summary["shards_rendered"] == 2
    return root


@pytest.fixture(scope="module")
def fitted(renders_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The dataset root fitted once by the flow (threads runner) and the first run's summary."""
    out = tmp_path_factory.mktemp("fitted") / "store"
    start = time.perf_counter()
    summary = fit_triplanes(renders=str(renders_root), out=str(out), overrides=FIT, task_runner="threads")
    print(f"first fit-triplanes run took {time.perf_counter() - start:.1f} s")
    return out, summary


@pytest.fixture
def store_copy(fitted: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    out = tmp_path / "store"
    shutil.copytree(fitted[0], out)
    return out


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow_module, "fit_shard", flow_module.fit_shard.with_options(retry_delay_seconds=0))


def attempts(out: Path) -> dict[str, str]:
    stage = open_store(str(out)).stage("triplanes")
    return {s: stage.read_manifest(s).attempt_id for s in stage.committed_shards()}


def inject_shard_failures(monkeypatch: pytest.MonkeyPatch, subject_id: int, failures: int) -> list[int]:
    """Make the first ``failures`` reads of renders for the shard holding ``subject_id`` raise."""
    real = shard_job.iter_subjects
    calls: list[int] = []
    lock = threading.Lock()

    def flaky(stage, subject_ids, sources):
        if subject_id in subject_ids:
            with lock:
                calls.append(subject_id)
                attempt = len(calls)
            if attempt <= failures:
                raise OSError(f"injected read error {attempt} of subject {subject_id}")
        return real(stage, subject_ids, sources)

    monkeypatch.setattr(shard_job, "iter_subjects", flaky)
    return calls


def test_plan_and_hashes() -> None:
    plan = shard_job.fitting_plan([5, 0, 3, 1, 2, 4, 6], shared_subjects=3, shard_size=2)
    assert (plan.shared_ids, plan.shards, plan.shared_shards) == ([0, 1, 2], [[0, 1], [2], [3, 4], [5, 6]], 2)
    assert shard_job.fitting_plan([0, 1], 4, 2).shards == [[0, 1]]
    sources = {s: shard_job.RenderSource("shard-000000", "r0", 6) for s in range(4)}
    base = load_config("tiny", None, FIT)
    other_steps = load_config("tiny", None, [*FIT, "fit.steps=7", "fit.target_psnr=20", "fit.shard_size=3"])
    other_shared = load_config("tiny", None, [*FIT, "fit.shared_steps=7"])
    assert shard_job.decoder_hash(base, [0, 1], sources) == shard_job.decoder_hash(other_steps, [0, 1], sources)
    assert shard_job.decoder_hash(base, [0, 1], sources) != shard_job.decoder_hash(other_shared, [0, 1], sources)
    assert shard_job.decoder_hash(base, [0, 1], sources) != shard_job.decoder_hash(base, [0, 2], sources)
    planes = shard_job.planes_hash(base, "sha-a", [2, 3], sources)
    assert planes != shard_job.planes_hash(base, "sha-b", [2, 3], sources)
    assert planes != shard_job.planes_hash(other_steps, "sha-a", [2, 3], sources)
    shard_size_only = load_config("tiny", None, [*FIT, "fit.shard_size=5"])
    assert planes == shard_job.planes_hash(shard_size_only, "sha-a", [2, 3], sources)


def test_renders_become_subject_views(renders_root: Path) -> None:
    stage = open_store(str(renders_root)).stage("renders")
    sources = renders_index(stage)
    assert sorted(sources) == list(range(6)) and sources[4].shard_id == "shard-000001" and sources[4].views == 6
    subjects = list(shard_job.iter_subjects(stage, [1, 4], sources))
    assert [s.subject_id for s in subjects] == [1, 4]
    assert subjects[0].images.shape == (6, 32, 32, 4) and subjects[0].images.dtype == torch.float32
    assert 0.0 <= float(subjects[0].images.min()) and float(subjects[0].images.max()) <= 1.0
    assert float(subjects[0].alpha()[0].max()) == 1.0  # the frontal view shows the avatar
    assert subjects[0].c2w.shape == (6, 4, 4) and subjects[0].intrinsics.shape == (6, 3, 3)
    with pytest.raises(FitDataError, match="subject 9 is in no committed renders shard"):
        list(shard_job.iter_subjects(stage, [9], sources))
    with pytest.raises(FitDataError, match="no committed renders shard"):
        renders_index(open_store(str(renders_root / "empty")).stage("renders"))


def test_fit_commits_decoder_planes_and_reports(fitted: tuple[Path, dict[str, Any]]) -> None:
    out, summary = fitted
    assert summary["decoder"] == "committed" and summary["shards_failed"] == {}
    assert (summary["shards_total"], summary["shards_fitted"], summary["subjects"]) == (3, 3, 6)
    assert summary["psnr_min"] <= summary["psnr_median"] and summary["subject_errors"] == 0
    decoder = open_store(str(out)).stage("decoder")
    assert decoder.committed_shards() == ["decoder"]
    assert list(decoder.read_manifest("decoder").subject_ids) == [0, 1]
    sha = decoder.read_manifest("decoder").file("decoder.safetensors").sha256
    stage = open_store(str(out)).stage("triplanes")
    phase_a = load_shared_planes(decoder)  # phase A's planes: where phase B starts its subjects
    assert sorted(phase_a) == [0, 1]
    warm_start = load_warm_start(decoder)  # phase B starts the others from their mean
    assert warm_start.shape == (3, 4, 8, 8)
    assert torch.allclose(warm_start, torch.stack(list(phase_a.values())).mean(0), atol=1e-2)
    assert stage.committed_shards() == SHARDS
    for shard, ids in zip(SHARDS, SUBJECTS):
        manifest = stage.read_manifest(shard)
        assert list(manifest.subject_ids) == ids and manifest.extra["decoder_sha256"] == sha
        assert manifest.extra["phase"] == "B"
        planes = planes_from_safetensors(stage.read_bytes(shard, PLANES_FILE))
        assert sorted(planes) == ids
        assert all(p.shape == (3, 4, 8, 8) and p.dtype == torch.float16 for p in planes.values())
        records = stage.read_table(shard, RECORDS_FILE).to_pylist()
        assert [r["subject_id"] for r in records] == ids and all(r["error"] is None for r in records)
        assert all(r["steps"] == 20 and r["psnr_holdout"] > 0 for r in records)
    sheet = decode_png((out / "reports" / "fit-gt-vs-fitted.png").read_bytes())
    assert sheet.shape == (4 * (32 + 12), 2 * 32, 3)  # 2 subjects of shard 0 x (GT, fitted) rows, 2 held-out views
    assert (out / "reports" / "fit-psnr-histogram.png").is_file()
    assert "| 3 | 3 | 0 | 0 | 6 | 36 |" in (out / "reports" / "fit-triplanes.md").read_text()
    assert summary["report"] == f"{out}/reports/fit-triplanes.md"
    table = Artifact.get("fit-triplanes-shards").data
    assert '"status": "fitted"' in table and '"psnr_median"' in table
    assert "data:image/png;base64," in Artifact.get("fit-triplanes-comparison").data
    assert "6 subjects: median" in Artifact.get("fit-triplanes-psnr").data


def test_rerun_skips_and_shards_refits_only_those(renders_root: Path, store_copy: Path) -> None:
    committed = attempts(store_copy)
    second = fit_triplanes(renders=str(renders_root), out=str(store_copy), overrides=FIT, task_runner="threads")
    assert (second["decoder"], second["shards_fitted"], second["shards_skipped"]) == ("reused", 0, 3)
    assert attempts(store_copy) == committed

    third = fit_triplanes(renders=str(renders_root), out=str(store_copy), overrides=FIT, shards=[1],
                          task_runner="threads")
    assert (third["decoder"], third["shards_fitted"], third["shards_skipped"], third["subjects"]) == ("reused", 1, 2, 2)
    after = attempts(store_copy)
    assert after["shard-000001"] != committed["shard-000001"]
    assert {s: after[s] for s in ("shard-000000", "shard-000002")} == {
        s: committed[s] for s in ("shard-000000", "shard-000002")}

    state = fit_triplanes(renders=str(renders_root), out=str(store_copy), overrides=FIT, shards=[3],
                          task_runner="threads", return_state=True)
    assert state.is_failed()
    with pytest.raises(FitDataError, match=r"shards \[3\] are not fitting shards.*indices 0..2"):
        state.result()


def test_subject_error_is_recorded_and_only_failed_refits_it(renders_root: Path, store_copy: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A subject whose optimisation diverges is recorded; ``only_failed`` re-fits its shard only."""
    real = shard_job.fit_subject

    @functools.wraps(real)
    def diverging(subject, decoder, tri_cfg, fit_cfg, progress=None, init=None):
        if subject.subject_id == 5:
            fit_cfg = dataclasses.replace(fit_cfg, lr_planes=float("inf"))
        return real(subject, decoder, tri_cfg, fit_cfg, progress, init)

    monkeypatch.setattr(shard_job, "fit_subject", diverging)
    committed = attempts(store_copy)
    summary = fit_triplanes(renders=str(renders_root), out=str(store_copy), overrides=FIT, shards=[2],
                            task_runner="threads")
    assert (summary["shards_fitted"], summary["subject_errors"]) == (1, 1)
    stage = open_store(str(store_copy)).stage("triplanes")
    records = {r["subject_id"]: r for r in stage.read_table("shard-000002", RECORDS_FILE).to_pylist()}
    assert records[4]["error"] is None and "subject 5" in records[5]["error"]
    assert sorted(planes_from_safetensors(stage.read_bytes("shard-000002", PLANES_FILE))) == [4]
    assert shard_job.failed_shards(stage, 3) == [2]

    monkeypatch.setattr(shard_job, "fit_subject", real)
    stage.delete_manifest("shard-000001")
    stage.record_failure("shard-000001", "20260101T000000Z-forged00", OSError("forged failure"))
    again = fit_triplanes(renders=str(renders_root), out=str(store_copy), overrides=FIT, only_failed=True,
                          task_runner="threads")
    assert (again["shards_fitted"], again["subject_errors"]) == (2, 0)
    after = attempts(store_copy)
    assert after["shard-000000"] == committed["shard-000000"]
    assert sorted(planes_from_safetensors(stage.read_bytes("shard-000002", PLANES_FILE))) == [4, 5]
    assert shard_job.failed_shards(stage, 3) == []


def test_shard_that_fails_once_is_retried(renders_root: Path, store_copy: Path, fast_retries: None,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls = inject_shard_failures(monkeypatch, subject_id=2, failures=1)
    summary = fit_triplanes(renders=str(renders_root), out=str(store_copy), overrides=FIT, shards=[1, 2],
                            task_runner="threads")
    assert summary["shards_fitted"] == 2 and summary["shards_failed"] == {}
    assert len(calls) == 2
    stage = open_store(str(store_copy)).stage("triplanes")
    records = stage.failures("shard-000001")
    assert len(records) == 1 and "injected read error 1 of subject 2" in records[0]["error"]
    assert records[0]["details"]["subject_ids"] == [2, 3]
    assert records[0]["attempt_id"] != stage.read_manifest("shard-000001").attempt_id
    assert stage.failures("shard-000002") == []


def test_shard_that_always_fails_fails_the_flow_and_only_failed_repairs_it(
        renders_root: Path, store_copy: Path, fast_retries: None, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = open_store(str(store_copy)).stage("triplanes")
    for shard in SHARDS[1:]:
        stage.delete_manifest(shard)
    calls = inject_shard_failures(monkeypatch, subject_id=2, failures=99)
    state = fit_triplanes(renders=str(renders_root), out=str(store_copy), overrides=FIT, task_runner="threads",
                          return_state=True)
    assert state.is_failed() and len(calls) == 1 + flow_module.RETRIES
    assert stage.committed_shards() == ["shard-000000", "shard-000002"]
    with pytest.raises(FitShardsFailedError, match=r"1 of 3 tri-plane shards failed.*shard-000001: OSError"):
        state.result()
    assert "--only-failed" in str(state.result(raise_on_failure=False))
    assert "## Failed shards" in Artifact.get("fit-triplanes-summary").data

    monkeypatch.undo()  # the renders read well again
    summary = fit_triplanes(renders=str(renders_root), out=str(store_copy), overrides=FIT, only_failed=True,
                            task_runner="threads")
    assert (summary["shards_fitted"], summary["shards_skipped"], summary["shards_failed"]) == (1, 2, {})
    assert stage.committed_shards() == SHARDS


def fail_first_call(real_task: Any, marker: Path, shard_index: int) -> Any:
    """A copy of the ``fit_shard`` task that raises on its first call for ``shard_index``.

    ``marker`` (a file on the shared disk) carries the state across processes: the first call
    writes its process id there, so the test can tell it ran in a Ray worker.
    """
    real = real_task.fn

    @functools.wraps(real)
    def flaky(cfg, renders, out, job, storage_options):
        if job.shard_index == shard_index and not marker.exists():
            marker.write_text(str(os.getpid()))
            raise RuntimeError(f"injected failure of shard {shard_index} in process {os.getpid()}")
        return real(cfg, renders, out, job, storage_options)

    return task(flaky, name="fit_shard", retries=1, retry_delay_seconds=0, cache_policy=NO_CACHE,
                task_run_name="fit-shard-{job.shard_index}")


def test_fit_on_local_ray_retries_in_the_worker(renders_root: Path, store_copy: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded by file path, as ``prefect deploy`` may; shard 1 fails once inside its Ray worker."""
    flow_from_file = load_flow_from_entrypoint(str(Path(flow_module.__file__)) + ":fit_triplanes")
    module = sys.modules[flow_from_file.fn.__module__]
    assert module is not flow_module
    marker = tmp_path / "first-attempt-pid"
    monkeypatch.setattr(module, "fit_shard", fail_first_call(module.fit_shard, marker, 1))
    committed = attempts(store_copy)
    start = time.perf_counter()
    summary = flow_from_file(renders=str(renders_root), out=str(store_copy), overrides=FIT, shards=[1, 2],
                             task_runner="ray")
    print(f"ray fit-triplanes run took {time.perf_counter() - start:.1f} s")
    assert (summary["shards_fitted"], summary["shards_failed"]) == (2, {})
    assert int(marker.read_text()) != os.getpid()  # the failure happened in a Ray worker process
    after = attempts(store_copy)
    assert after["shard-000000"] == committed["shard-000000"]
    assert all(after[s] != committed[s] for s in SHARDS[1:])


def test_cli_refits_one_shard(renders_root: Path, store_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's command to re-fit one shard."""
    committed = attempts(store_copy)
    overrides = [arg for item in FIT for arg in ("--set", item)]
    code = main(["fit", "--renders", str(renders_root), "--out", str(store_copy), "--shards", "2", "--runner",
                 "threads", *overrides])
    assert code == 0
    assert '"shards_fitted": 1' in capsys.readouterr().out
    after = attempts(store_copy)
    assert after["shard-000002"] != committed["shard-000002"]
    assert {s: after[s] for s in SHARDS[:2]} == {s: committed[s] for s in SHARDS[:2]}
