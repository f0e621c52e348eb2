"""Fitting shards keyed by subject ids, and damaged inputs found where a stage reads them.

The module commits 8 synthetic subjects (a disc seen by the render rig's 6 cameras,
``tests/evaluation_data.py``) in 4 renders shards of 2 and fits them once with tiny settings into
fitting shards of 2 subjects (phase A's 2 subjects form shard 0). Tests that change the store
work on a copy. The repair commands the errors give are run as given.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

import workflows.fit_triplanes as flow_module
from rodin_core.config import load_config
from rodin_core.datasets.integrity import check_inputs
from rodin_core.datasets.layout import PLANES_FILE, RECORDS_FILE, VIEWS_TABLE
from rodin_core.datasets.renders import VIEWS_SCHEMA
from rodin_core.fitting import shard_job
from rodin_core.storage import open_store, shard_id_for
from workflows.cli import main
from workflows.fit_triplanes import fit_triplanes

from ..evaluation_data import subject_rows

FIT = ["render.views=6", "triplane.resolution=8", "triplane.channels=4", "triplane.rescale_min=4",
       "triplane.decoder.hidden=16", "fit.shared_subjects=2", "fit.shared_steps=4", "fit.steps=4",
       "fit.rays_per_step=64", "fit.coarse_samples=4", "fit.fine_samples=4", "fit.eval_every=2",
       "fit.holdout_views=2", "fit.shard_size=2", "base.unet.attention_resolutions=[]",
       "base.unet.aware_resolutions=[4]", "upsampler.unet.aware_resolutions=[8]"]
"""Tiny planes and 4-step fits; the U-Nets' levels follow the plane sizes, as every config must be valid."""
SETS = [arg for item in FIT for arg in ("--set", item)]
SUBJECTS = [[0, 1], [2, 3], [4, 5], [6, 7]]


@pytest.fixture(scope="module")
def fitted(prefect_server: float, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset root holding the renders and, fitted from them, the decoder and 4 tri-plane shards."""
    root = tmp_path_factory.mktemp("fit-integrity") / "store"
    cfg = load_config("tiny", None, FIT)
    renders = open_store(str(root)).stage("renders")
    for index, ids in enumerate(SUBJECTS):
        writer = renders.begin(shard_id_for(index))
        rows = [row for s in ids for row in subject_rows(s, cfg)]
        writer.write_table(VIEWS_TABLE, pa.Table.from_pylist(rows, schema=VIEWS_SCHEMA))
        writer.commit(ids, "renders-config", extra={"views": cfg.render.views, "corpus_subjects": 8})
    summary = fit_triplanes(renders=str(root), overrides=FIT, task_runner="threads")
    assert summary["shards_fitted"] == 4
    return root


@pytest.fixture
def store(fitted: Path, tmp_path: Path) -> Path:
    out = tmp_path / "store"
    shutil.copytree(fitted, out)
    return out


def attempts(out: Path) -> dict[str, str]:
    stage = open_store(str(out)).stage("triplanes")
    return {s: stage.read_manifest(s).attempt_id for s in stage.committed_shards()}


def planned_subjects(out: Path) -> list[list[int]]:
    stage = open_store(str(out)).stage("triplanes")
    return [list(stage.read_manifest(s).subject_ids) for s in stage.committed_shards()]


def damage(out: Path, stage_name: str, shard: str, name: str, truncate: bool = False) -> tuple[str, bytes]:
    """Flip one byte of (or cut 9 bytes off) a committed file; returns its path and its intact bytes."""
    stage = open_store(str(out)).stage(stage_name)
    path = f"{stage.root}/{stage.read_manifest(shard).file(name).path}"
    intact = stage.fs.cat_file(path)
    data = bytearray(intact[:-9] if truncate else intact)
    if not truncate:
        data[len(data) // 2] ^= 0x40
    stage.fs.pipe_file(path, bytes(data))
    return path, intact


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


def test_fitting_plan_is_keyed_by_subject_ids() -> None:
    complete = shard_job.fitting_plan(list(range(8)), shared_subjects=2, shard_size=2)
    assert (complete.shards, complete.shared_shards, complete.missing) == (SUBJECTS, 1, {})
    gap = shard_job.fitting_plan([0, 1, 2, 3, 6, 7], shared_subjects=2, shard_size=2)  # renders of 4, 5 deleted
    assert (gap.shared_ids, gap.shards, gap.missing) == ([0, 1], [[0, 1], [2, 3], [], [6, 7]], {2: [4, 5]})
    partial = shard_job.fitting_plan([0, 1, 2, 3, 4, 6, 7, 8], shared_subjects=3, shard_size=2)
    assert partial.shards == [[0, 1], [2], [3, 4], [6], [7, 8]] and partial.missing == {3: [5]}
    tail = shard_job.fitting_plan([0, 1, 2, 3, 4, 5], shared_subjects=2, shard_size=2, corpus_size=8)  # 6, 7 gone
    assert (tail.shards, tail.missing) == ([[0, 1], [2, 3], [4, 5], []], {3: [6, 7]})


def test_a_deleted_last_renders_manifest_makes_its_fitting_shard_wait(
        store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Deleting the manifest of the LAST renders shard does not shrink the corpus the fit plans over: the renders
    manifests record how many subjects the corpus has."""
    committed = attempts(store)
    open_store(str(store)).stage("renders").delete_manifest("shard-000003")
    assert main(["fit", "--renders", str(store), "--runner", "threads", *SETS]) == 1
    error = last_line(capsys.readouterr().err)
    assert error.startswith("rodin: 1 of 4 tri-plane shards failed") and "shard-000003: FitDataError" in error
    assert "holds subjects 6..7 of this fitting shard" in error and f"`rodin render --out {store}`" in error
    assert attempts(store) == committed and planned_subjects(store) == SUBJECTS


def test_a_deleted_renders_manifest_never_overwrites_committed_tri_planes(
        store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's way to re-render a shard, followed by a fit before re-rendering."""
    committed = attempts(store)
    open_store(str(store)).stage("renders").delete_manifest("shard-000002")
    assert main(["fit", "--renders", str(store), "--runner", "threads", *SETS]) == 1
    error = last_line(capsys.readouterr().err)
    assert error.startswith("rodin: 1 of 4 tri-plane shards failed") and "shard-000002: FitDataError" in error
    assert "holds subjects 4..5 of this fitting shard" in error and f"`rodin render --out {store}`" in error
    assert attempts(store) == committed and planned_subjects(store) == SUBJECTS

    summary = fit_triplanes(renders=str(store), overrides=FIT, shards=[3], task_runner="threads")
    assert (summary["shards_fitted"], summary["shards_failed"]) == (1, {})  # the shard waiting is not selected
    assert planned_subjects(store) == SUBJECTS and attempts(store)["shard-000002"] == committed["shard-000002"]


def test_damaged_renders_fail_their_shard_once_and_only_failed_refits_it_after_the_repair(
        store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow_module, "fit_shard", flow_module.fit_shard.with_options(retry_delay_seconds=0))
    committed = attempts(store)
    path, intact = damage(store, "renders", "shard-000001", VIEWS_TABLE)
    state = fit_triplanes(renders=str(store), overrides=FIT, shards=[1], task_runner="threads", return_state=True)
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "shard-000001: CorruptInputError: stage 'renders' shard 'shard-000001': data file" in message
    assert "views.parquet has sha256" in message and f"`rodin render --out {store}`" in message
    stage = open_store(str(store)).stage("triplanes")
    assert len(stage.failures("shard-000001")) == 1  # a damaged input is not retried
    assert attempts(store) == committed  # the older commit of shard 1 stays
    assert shard_job.failed_shards(stage, 4) == [1]  # its last attempt failed

    Path(path).write_bytes(intact)  # as a re-render would
    summary = fit_triplanes(renders=str(store), overrides=FIT, only_failed=True, task_runner="threads")
    assert (summary["shards_fitted"], summary["shards_skipped"], summary["shards_failed"]) == (1, 3, {})
    after = attempts(store)
    assert after["shard-000001"] != committed["shard-000001"]
    assert {s: a for s, a in after.items() if s != "shard-000001"} == {
        s: a for s, a in committed.items() if s != "shard-000001"}
    assert shard_job.failed_shards(stage, 4) == [] and stage.unrecovered_failures() == []


def test_damaged_tri_planes_stop_training_before_it_starts_and_the_named_refit_repairs_them(
        store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    committed = attempts(store)
    damage(store, "triplanes", "shard-000003", PLANES_FILE, truncate=True)
    assert main(["train", "base", "--out", str(store), *SETS]) == 1
    error = last_line(capsys.readouterr().err)
    assert error.startswith("rodin: stage 'triplanes' shard 'shard-000003': data file ")
    assert "planes.safetensors has" in error and "bytes, the manifest says" in error
    command = re.search(r"`(rodin fit [^`]*)`", error).group(1)
    assert command == f"rodin fit --renders {store} --out {store} --shards 3"
    assert not open_store(str(store)).stage("checkpoints").committed_shards()  # training never started

    assert main([*shlex.split(command)[1:], "--runner", "threads", *SETS]) == 0
    assert check_inputs(str(store), ["triplanes", "frontals", "stats"]) >= 4
    after = attempts(store)
    assert after["shard-000003"] != committed["shard-000003"] and planned_subjects(store) == SUBJECTS


def test_training_refuses_subjects_of_two_tri_plane_shards(store: Path, capsys: pytest.CaptureFixture[str],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    stage = open_store(str(store)).stage("triplanes")
    writer = stage.begin("shard-000004")  # as another fit.shard_size leaves it: subjects 6, 7 twice
    for name in (PLANES_FILE, RECORDS_FILE):
        writer.write_bytes(name, stage.read_bytes("shard-000003", name), rows=2 if name == RECORDS_FILE else None)
    writer.commit([6, 7], stage.read_manifest("shard-000003").config_hash)
    with caplog.at_level("WARNING"):
        assert fit_triplanes(renders=str(store), overrides=FIT, task_runner="threads")["shards_skipped"] == 4
    assert "tri-plane shards shard-000004 are beyond this fitting plan (4 shards) but hold subjects of it" in caplog.text
    assert main(["train", "base", "--out", str(store), *SETS]) == 1
    error = last_line(capsys.readouterr().err)
    assert error.startswith("rodin: tri-plane shards shard-000003, shard-000004 of ")
    assert "hold the same subjects (6..7)" in error
