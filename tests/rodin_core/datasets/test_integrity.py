"""Integrity of a dataset root (rodin_core.datasets.integrity): hashes checked, subjects unique and complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from rodin_core.datasets.errors import CorruptInputError, FitDataError
from rodin_core.datasets.integrity import (
    check_inputs,
    id_ranges,
    missing_subjects,
    repair_command,
    shared_subjects,
    verify_stage,
)
from rodin_core.datasets.layout import VIEWS_TABLE
from rodin_core.datasets.renders import iter_subjects, renders_index
from rodin_core.storage import open_store

from ...training_corpus import make_corpus, tiny_config


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    return make_corpus(tmp_path / "store", tiny_config())


def damage(out: str, stage: str, shard: str, name: str, truncate: bool = False) -> str:
    """Flip one byte of (or cut 9 bytes off) a committed file; returns its URI."""
    stage_store = open_store(out).stage(stage)
    path = f"{stage_store.root}/{stage_store.read_manifest(shard).file(name).path}"
    data = bytearray(stage_store.fs.cat_file(path))
    if truncate:
        data = data[:-9]
    else:
        data[len(data) // 2] ^= 0x40
    stage_store.fs.pipe_file(path, bytes(data))
    return path


def test_subject_helpers() -> None:
    assert shared_subjects({"a": [0, 1, 2], "b": [2, 3], "c": [3, 4, 2]}) == {2: ["a", "b", "c"], 3: ["b", "c"]}
    assert shared_subjects({"a": [0, 1], "b": [2]}) == {}
    assert missing_subjects([0, 1, 5, 2]) == [3, 4] and missing_subjects([]) == []
    assert id_ranges([7, 4, 5, 6, 12, 14, 15]) == "4..7, 12, 14..15"
    assert id_ranges(range(0, 40, 2), most=3) == "0, 2, 4, ..."


def test_repair_commands_name_a_runnable_command() -> None:
    assert repair_command("triplanes", ["shard-000002", "shard-000011"], "data/x", "data/r").endswith(
        "`rodin fit --renders data/r --out data/x --shards 2 11`")
    renders = repair_command("renders", ["shard-000001"], "s3://b/c")
    assert renders.startswith("delete s3://b/c/renders/manifests/shard-000001.json and re-render it")
    assert renders.endswith("`rodin render --out s3://b/c`")
    assert "`rodin train base --out data/x`" in repair_command("checkpoints", ["base"], "data/x")


def test_check_inputs_passes_an_intact_root_and_names_a_damaged_file(corpus: str) -> None:
    assert check_inputs(corpus, ["renders", "triplanes", "frontals"]) == 5  # frontals not extracted: no shard
    path = damage(corpus, "triplanes", "shard-000002", "planes.safetensors", truncate=True)
    damage(corpus, "triplanes", "shard-000000", "records.parquet")
    with pytest.raises(CorruptInputError) as caught:
        check_inputs(corpus, ["renders", "triplanes"], renders="data/renders-root")
    message = str(caught.value)
    assert message.startswith("stage 'triplanes' shard 'shard-000000': data file ") and "records.parquet" in message
    assert "(2 damaged shards: shard-000000, shard-000002)" in message and "\n" not in message
    assert message.endswith(f"`rodin fit --renders data/renders-root --out {corpus} --shards 0 2`")
    checks = {c.shard_id: c for c in verify_stage(open_store(corpus).stage("triplanes"))}
    assert checks["shard-000001"].ok and [p.file for p in checks["shard-000002"].problems] == ["planes.safetensors"]
    assert path.endswith("planes.safetensors") and "has" in checks["shard-000002"].problems[0].problem


def test_damaged_renders_name_the_rerender_when_fitting_reads_them(corpus: str) -> None:
    damage(corpus, "renders", "shard-000001", VIEWS_TABLE)
    stage = open_store(corpus).stage("renders")
    sources = renders_index(stage)
    assert len(list(iter_subjects(stage, [0, 1], sources))) == 2  # shard-000000 is intact
    with pytest.raises(CorruptInputError, match=r"renders.*shard-000001.*views.parquet has sha256") as caught:
        list(iter_subjects(stage, [5], sources))
    assert str(caught.value).endswith(f"re-render it with the options the corpus was rendered with: "
                                      f"`rodin render --out {corpus}`")


def test_renders_of_one_subject_in_two_shards_are_refused(corpus: str) -> None:
    stage = open_store(corpus).stage("renders")
    writer = stage.begin("shard-000002")  # as left by a corpus rendered again with another corpus.shard_size
    writer.write_bytes(VIEWS_TABLE, stage.read_bytes("shard-000001", VIEWS_TABLE), rows=8)
    writer.commit([5, 6, 7, 8], "renders-config")
    with pytest.raises(FitDataError, match=r"subjects 5..8 are in more than one committed renders shard of "
                                           r".*\(shard-000001, shard-000002\)"):
        renders_index(stage)
