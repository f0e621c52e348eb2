"""Tests of the sharded, manifest-committed store (docs/data-contracts.md).

The round-trip and failure-mode tests run on three backends: a local folder, ``memory://`` and S3
through a real SeaweedFS server on loopback (the ``s3_store_uri`` fixture).
"""

from __future__ import annotations

import errno
import json
import pickle
import uuid
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rodin_core.storage import (
    SMALL_RECORD_CHARS,
    FileNotInManifestError,
    Manifest,
    ShardCorruptError,
    ShardNotFoundError,
    StageStore,
    StorageError,
    Store,
    absolute_uri,
    config_hash,
    is_disk_full,
    is_recovered,
    open_store,
    shard_id_for,
)

S1, S2 = shard_id_for(1), shard_id_for(2)
HASH = config_hash({"preset": "tiny"})


@pytest.fixture(params=["local", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    """An empty dataset root on each backend."""
    if request.param == "local":
        yield open_store(str(tmp_path / "dataset"))
        return
    if request.param == "memory":
        uri, options = f"memory://rodin-test-{uuid.uuid4().hex}", {}
    else:
        prefix, options = request.getfixturevalue("s3_store_uri")
        uri = f"{prefix}/{uuid.uuid4().hex}"
    opened = open_store(uri, options)
    yield opened
    if opened.fs.exists(opened.root):
        opened.fs.rm(opened.root, recursive=True)


@pytest.fixture
def renders(store: Store) -> StageStore:
    return store.stage("renders")


def views_table(subjects: list[int], views: int = 3) -> pa.Table:
    """A small renders-like table: one row per (subject, view)."""
    rows = [(s, v) for s in subjects for v in range(views)]
    return pa.table({
        "subject_id": pa.array([s for s, _ in rows], pa.int64()),
        "view": pa.array([v for _, v in rows], pa.int32()),
        "png": pa.array([bytes([s, v]) * 50 for s, v in rows], pa.binary()),
    })


def commit_shard(stage: StageStore, shard_id: str, subjects: list[int]) -> Manifest:
    writer = stage.begin(shard_id)
    writer.write_table("views.parquet", views_table(subjects))
    writer.write_bytes("recipe.json", json.dumps({"subjects": subjects}).encode(), rows=len(subjects))
    return writer.commit(subjects, HASH, extra={"seconds": 1.5})


def data_path(stage: StageStore, shard_id: str, name: str) -> str:
    return f"{stage.root}/{stage.read_manifest(shard_id).file(name).path}"


def test_round_trip_bytes_and_tables(renders: StageStore) -> None:
    manifest = commit_shard(renders, S1, [10, 11])

    again = renders.read_manifest(S1)
    assert again == manifest
    assert (again.stage, again.shard_id, again.subject_ids) == ("renders", S1, (10, 11))
    assert again.config_hash == HASH
    assert again.extra == {"seconds": 1.5}
    assert again.file("views.parquet").rows == 6
    assert again.file("views.parquet").path == f"data/{S1}/{again.attempt_id}/views.parquet"
    assert json.loads(renders.read_bytes(S1, "recipe.json")) == {"subjects": [10, 11]}
    table = renders.read_table(S1, "views.parquet")
    assert table.equals(views_table([10, 11]))
    assert renders.read_table(S1, "views.parquet", columns=["view"]).column_names == ["view"]
    commit_shard(renders, S2, [12])
    streamed = {sid: t.num_rows for sid, t in renders.iter_tables("views.parquet")}
    assert streamed == {S1: 6, S2: 3}
    listing = renders.fs.ls(f"{renders.root}/manifests", detail=False)
    assert sorted(p.rsplit("/", 1)[-1] for p in listing) == [f"{S1}.json", f"{S2}.json"]


def test_only_committed_shards_are_visible(renders: StageStore) -> None:
    commit_shard(renders, S1, [1])
    pending = renders.begin(S2)
    pending.write_table("views.parquet", views_table([2]))

    assert renders.committed_shards() == [S1]
    assert renders.is_committed(S1) and not renders.is_committed(S2)
    with pytest.raises(ShardNotFoundError, match=S2):
        renders.read_table(S2, "views.parquet")
    pending.commit([2], HASH)
    assert renders.committed_shards() == [S1, S2]


class RecordingFS:
    """Forwards to a filesystem and records every method call with its arguments."""

    def __init__(self, fs: fsspec.AbstractFileSystem) -> None:
        self._fs, self.calls = fs, []

    def __getattr__(self, attr: str):
        target = getattr(self._fs, attr)
        if not callable(target):
            return target

        def record(*args, **kwargs):
            self.calls.append((attr, args))
            return target(*args, **kwargs)
        return record


def test_committed_shards_lists_manifests_only(store: Store) -> None:
    stage = store.stage("renders")
    for index in range(3):
        commit_shard(stage, shard_id_for(index), [index])
    for index in range(3, 23):  # many uncommitted attempts in the data tree
        stage.begin(shard_id_for(index)).write_bytes("views.parquet", b"x")

    spy = RecordingFS(store.fs)
    spied = Store(store.uri, spy, store.root).stage("renders")
    assert spied.committed_shards() == [shard_id_for(i) for i in range(3)]
    touched = [str(a) for _, args in spy.calls for a in args]
    assert [name for name, _ in spy.calls].count("ls") == 1
    assert touched and all(p.startswith(f"{stage.root}/manifests") for p in touched), spy.calls


def test_corrupt_manifest_json_names_the_shard(renders: StageStore) -> None:
    commit_shard(renders, S1, [1])
    renders.fs.pipe_file(f"{renders.root}/manifests/{S1}.json", b'{"stage": "renders", ')
    with pytest.raises(ShardCorruptError, match=f"renders.*{S1}.*not valid JSON.*delete the manifest"):
        renders.read_manifest(S1)


def test_manifest_schema_is_validated(renders: StageStore) -> None:
    text = commit_shard(renders, S1, [1]).to_json()
    body = json.loads(text)
    with pytest.raises(ShardCorruptError, match=f"{S2}.*belongs to stage 'renders' shard '{S1}'"):
        Manifest.from_json(text, stage="renders", shard_id=S2)
    for key, value, message in [("subject_ids", ["a"], "subject_ids"), ("files", [], "files"),
                                ("format_version", 99, "format_version")]:
        broken = json.dumps({**body, key: value})
        with pytest.raises(ShardCorruptError, match=message):
            Manifest.from_json(broken, stage="renders", shard_id=S1)
    escaping = {**body, "files": [{**body["files"][0], "path": "../../etc/passwd"}]}
    with pytest.raises(ShardCorruptError, match="path"):
        Manifest.from_json(json.dumps(escaping), stage="renders", shard_id=S1)


def test_missing_data_file_names_the_file(renders: StageStore) -> None:
    commit_shard(renders, S1, [1])
    renders.fs.rm_file(data_path(renders, S1, "views.parquet"))
    with pytest.raises(ShardCorruptError, match=f"{S1}.*views.parquet.*missing"):
        renders.read_table(S1, "views.parquet")


def test_flipped_byte_fails_the_hash_check(renders: StageStore) -> None:
    commit_shard(renders, S1, [1])
    path = data_path(renders, S1, "recipe.json")
    data = bytearray(renders.fs.cat_file(path))
    data[3] ^= 0x01
    renders.fs.pipe_file(path, bytes(data))
    with pytest.raises(ShardCorruptError, match="recipe.json.*sha256"):
        renders.read_bytes(S1, "recipe.json")


def test_truncated_file_fails_the_size_check(renders: StageStore) -> None:
    commit_shard(renders, S1, [1])
    path = data_path(renders, S1, "views.parquet")
    renders.fs.pipe_file(path, renders.fs.cat_file(path)[:-10])
    with pytest.raises(ShardCorruptError, match="views.parquet.*bytes, the manifest says"):
        renders.read_table(S1, "views.parquet")


def test_truncated_parquet_with_matching_hash_fails_in_the_reader(renders: StageStore) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(views_table([1, 2]), sink)
    truncated = sink.getvalue().to_pybytes()[:-40]
    forged = renders.begin(S1)  # its manifest hashes the truncated bytes, so only parquet can tell
    forged.write_bytes("views.parquet", truncated, rows=6)
    forged.commit([1, 2], HASH)

    assert renders.read_bytes(S1, "views.parquet") == truncated
    with pytest.raises(ShardCorruptError, match=f"{S1}.*views.parquet.*not readable parquet"):
        renders.read_table(S1, "views.parquet")


def test_row_count_mismatch_is_corrupt(renders: StageStore) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(views_table([1]), sink)
    writer = renders.begin(S1)
    writer.write_bytes("views.parquet", sink.getvalue().to_pybytes(), rows=4)
    writer.commit([1], HASH)
    with pytest.raises(ShardCorruptError, match="3 rows, the manifest says 4"):
        renders.read_table(S1, "views.parquet")


def test_attempts_do_not_overwrite_and_the_newest_commit_wins(renders: StageStore) -> None:
    first, second = renders.begin(S1), renders.begin(S1)
    assert first.attempt_id != second.attempt_id
    first.write_bytes("out.bin", b"first")
    second.write_bytes("out.bin", b"second")
    second.commit([1], HASH)
    assert renders.read_bytes(S1, "out.bin") == b"second"
    assert renders.fs.cat_file(f"{renders.root}/data/{S1}/{first.attempt_id}/out.bin") == b"first"

    first.commit([1], HASH)  # re-committing replaces the commit point
    assert renders.read_manifest(S1).attempt_id == first.attempt_id
    assert renders.read_bytes(S1, "out.bin") == b"first"


def test_garbage_collection_keeps_committed_attempts(renders: StageStore) -> None:
    committed = commit_shard(renders, S1, [1])
    stray = renders.begin(S1)
    stray.write_bytes("views.parquet", b"half-written")
    orphan = renders.begin(S2)
    orphan.write_bytes("views.parquet", b"never committed")
    expected = sorted(f"{renders.uri}/data/{w.shard_id}/{w.attempt_id}" for w in (stray, orphan))

    assert renders.garbage_attempts() == expected
    assert renders.collect_garbage() == expected
    assert renders.garbage_attempts() == []
    assert not renders.fs.exists(f"{renders.root}/data/{S1}/{stray.attempt_id}/views.parquet")
    assert renders.read_manifest(S1) == committed
    assert renders.read_table(S1, "views.parquet").num_rows == 3


def test_garbage_collection_leaves_shards_with_unreadable_manifests_alone(tmp_path) -> None:
    stage = open_store(str(tmp_path)).stage("renders")
    commit_shard(stage, S1, [1])
    (tmp_path / "renders" / "manifests" / f"{S1}.json").write_text("{not json")
    stage.begin(S1).write_bytes("views.parquet", b"stray")
    assert stage.garbage_attempts() == []


def test_delete_manifest_uncommits(renders: StageStore) -> None:
    manifest = commit_shard(renders, S1, [1])
    renders.delete_manifest(S1)
    assert renders.committed_shards() == [] and not renders.is_committed(S1)
    with pytest.raises(ShardNotFoundError, match=S1):
        renders.read_manifest(S1)
    with pytest.raises(ShardNotFoundError, match=S1):
        renders.delete_manifest(S1)
    assert renders.garbage_attempts() == [f"{renders.uri}/data/{S1}/{manifest.attempt_id}"]


def explode() -> None:
    raise RuntimeError("blender crashed on subject 7")


def test_failures_are_recorded_and_listed(renders: StageStore) -> None:
    writer = renders.begin(S1)
    try:
        explode()
    except RuntimeError as exc:
        uri = renders.record_failure(S1, writer.attempt_id, exc, {"subject": 7})
    renders.record_failure(S2, "attempt-b", "timed out after 600 s")

    assert uri == f"{renders.uri}/failures/{S1}/{writer.attempt_id}.json"
    [record] = renders.failures(S1)
    assert record["error"] == "blender crashed on subject 7" and record["error_type"] == "RuntimeError"
    assert "in explode" in record["traceback"] and record["details"] == {"subject": 7}
    assert (record["shard_id"], record["attempt_id"], record["uri"]) == (S1, writer.attempt_id, uri)
    errors = sorted(r["error"] for r in renders.failures())
    assert errors == ["blender crashed on subject 7", "timed out after 600 s"]
    assert renders.failures(shard_id_for(3)) == []
    assert renders.committed_shards() == []


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "a\\b", "../x"])
def test_bad_names_are_rejected(tmp_path, name: str) -> None:
    store = open_store(str(tmp_path))
    with pytest.raises(StorageError, match="plain file name"):
        store.stage(name)
    with pytest.raises(StorageError, match="plain file name"):
        store.stage("renders").begin(name)
    with pytest.raises(StorageError, match="plain file name"):
        store.stage("renders").begin(S1).write_bytes(name, b"x")
    assert store.stage("renders").committed_shards() == []


def test_writer_misuse_is_rejected(tmp_path) -> None:
    stage = open_store(str(tmp_path)).stage("renders")
    writer = stage.begin(S1)
    with pytest.raises(StorageError, match="wrote no files"):
        writer.commit([1], HASH)
    with pytest.raises(StorageError, match="needs bytes for 'a.bin', got str"):
        writer.write_bytes("a.bin", "text")
    writer.write_bytes("a.bin", b"a")
    with pytest.raises(StorageError, match="subject_ids must be a sequence of integers"):
        writer.commit(["7"], HASH)
    with pytest.raises(StorageError, match="already wrote 'a.bin'"):
        writer.write_bytes("a.bin", b"b")
    writer.commit([1], HASH)
    with pytest.raises(StorageError, match="already committed"):
        writer.write_bytes("b.bin", b"b")
    with pytest.raises(StorageError, match="already committed"):
        writer.commit([1], HASH)
    with pytest.raises(FileNotInManifestError, match=r"no file 'c.bin'.*\['a.bin'\]"):
        stage.read_bytes(S1, "c.bin")
    table_writer = stage.begin(S2)
    table_writer.write_table("t.parquet", pa.table({"x": [1]}))
    table_writer.commit([2], HASH)
    with pytest.raises(StorageError, match=r"no columns \['nope'\]; it has \['x'\]"):
        stage.read_table(S2, "t.parquet", columns=["nope"])


def test_config_hash_is_stable_under_key_order() -> None:
    a = {"render": {"size": 64, "views": 24}, "seed": 0}
    b = {"seed": 0, "render": {"views": 24, "size": 64}}
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16 and int(config_hash(a), 16) >= 0
    assert config_hash(a) != config_hash({**a, "seed": 1})
    assert shard_id_for(42) == "shard-000042"
    with pytest.raises(TypeError, match="JSON-serialisable"):
        config_hash({"bad": object()})


def test_absolute_uri_anchors_relative_local_paths_only(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_uri("data/tiny") == str(tmp_path / "data" / "tiny")
    assert absolute_uri("file://data/tiny") == f"file://{tmp_path / 'data' / 'tiny'}"
    assert absolute_uri("/srv/corpus") == "/srv/corpus"
    assert absolute_uri("s3://bucket/corpus") == "s3://bucket/corpus"
    assert absolute_uri("memory://corpus") == "memory://corpus"


def test_verify_shard_reports_damage_without_raising(renders: StageStore) -> None:
    commit_shard(renders, S1, [1])
    commit_shard(renders, S2, [2])
    good = renders.verify_shard(S1)
    assert good.ok and good.files == 2 and good.size == sum(f.size for f in renders.read_manifest(S1).files)
    flipped = data_path(renders, S1, "recipe.json")
    data = bytearray(renders.fs.cat_file(flipped))
    data[0] ^= 0x01
    renders.fs.pipe_file(flipped, bytes(data))
    truncated = data_path(renders, S2, "views.parquet")
    renders.fs.pipe_file(truncated, renders.fs.cat_file(truncated)[:-5])
    renders.fs.rm_file(data_path(renders, S2, "recipe.json"))

    [problem] = renders.verify_shard(S1).problems
    assert (problem.stage, problem.shard_id, problem.file, problem.root) == ("renders", S1, "recipe.json",
                                                                           renders.store.uri)
    assert "recipe.json has sha256" in problem.problem and "the manifest says" in problem.problem
    damaged = renders.verify_shard(S2)
    assert not damaged.ok and [p.file for p in damaged.problems] == ["views.parquet", "recipe.json"]
    assert "bytes, the manifest says" in str(damaged.problems[0]) and "missing" in str(damaged.problems[1])
    renders.fs.pipe_file(f"{renders.root}/manifests/{S1}.json", b"{broken")
    [unreadable] = renders.verify_shard(S1).problems
    assert unreadable.file is None and "not valid JSON" in unreadable.problem


def test_corrupt_error_keeps_where_it_happened_across_pickling(renders: StageStore) -> None:
    commit_shard(renders, S1, [1])
    renders.fs.pipe_file(data_path(renders, S1, "recipe.json"), b"{}")
    with pytest.raises(ShardCorruptError) as caught:
        renders.read_bytes(S1, "recipe.json")
    again = pickle.loads(pickle.dumps(caught.value))
    assert (again.stage, again.shard_id, again.file, again.root) == ("renders", S1, "recipe.json", renders.store.uri)
    assert str(again) == str(caught.value) and "has 2 bytes, the manifest says" in again.problem


def test_a_later_commit_recovers_a_failure(renders: StageStore) -> None:
    renders.record_failure(S1, "20260101T000000Z-aaaaaaaa", OSError("first attempt died"))
    assert [r["attempt_id"] for r in renders.unrecovered_failures()] == ["20260101T000000Z-aaaaaaaa"]
    manifest = commit_shard(renders, S1, [1])
    assert is_recovered(renders.failures(S1)[0], manifest)
    assert renders.unrecovered_failures() == []
    later = {"shard_id": S1, "attempt_id": "x", "time": "2999-01-01T00:00:00+00:00"}
    assert not is_recovered(later, manifest) and not is_recovered(later, None)
    assert not is_recovered({"shard_id": S1, "attempt_id": "x", "time": None}, manifest)


def test_garbage_includes_stray_files_and_spares_recent_writes(renders: StageStore) -> None:
    committed = commit_shard(renders, S1, [1])
    folder = f"{renders.root}/data/{S1}/{committed.attempt_id}"
    renders.fs.pipe_file(f"{folder}/unlisted.bin", b"left behind")
    renders.fs.pipe_file(f"{renders.root}/manifests/{S1}.json.20260101T000000Z-aaaaaaaa.tmp", b"{}")
    orphan = renders.begin(S2)
    orphan.write_bytes("views.parquet", b"never committed")

    found = renders.find_garbage()
    assert [(g.path, g.folder) for g in found] == [
        (f"data/{S1}/{committed.attempt_id}/unlisted.bin", False),
        (f"data/{S2}/{orphan.attempt_id}", True),
        (f"manifests/{S1}.json.20260101T000000Z-aaaaaaaa.tmp", False)]
    assert [g.size for g in found] == [11, 15, 2]
    assert renders.find_garbage(min_age_s=3600) == []  # all of it was written just now
    assert renders.garbage_attempts() == [f"{renders.uri}/data/{S2}/{orphan.attempt_id}"]
    assert renders.collect_garbage() == [g.uri for g in found]
    assert renders.find_garbage() == []
    assert renders.read_manifest(S1) == committed and renders.verify_shard(S1).ok


def _disk_full_after(limit: int):
    """A ``pipe_file`` that, like a full disk, creates the file and then fails for payloads over ``limit`` bytes."""
    def pipe_file(path: str, data: bytes, **kwargs: object) -> None:
        if len(data) > limit:
            with open(path, "wb"):
                pass
            raise OSError(errno.ENOSPC, "No space left on device", path)
        with open(path, "wb") as handle:
            handle.write(data)
    return pipe_file


def test_a_full_disk_leaves_a_small_failure_record_never_an_empty_one(tmp_path, monkeypatch) -> None:
    renders = open_store(str(tmp_path / "dataset")).stage("renders")
    monkeypatch.setattr(renders.fs, "pipe_file", _disk_full_after(1500))
    error = RuntimeError("render failed: " + "x" * 3000)
    uri = renders.record_failure(S1, "20260101T000000Z-aaaaaaaa", error, {"log": "y" * 5000})
    (record,) = renders.failures(S1)
    assert record["uri"] == uri and record["error_type"] == "RuntimeError"
    assert record["error"] == str(error)[:SMALL_RECORD_CHARS] and record["details"] == {"truncated": True}
    folder = tmp_path / "dataset" / "renders" / "failures" / S1
    assert [p.name for p in folder.iterdir()] == ["20260101T000000Z-aaaaaaaa.json"]  # no temporary file left


def test_a_failure_record_that_cannot_be_written_is_logged_not_left_empty(tmp_path, monkeypatch) -> None:
    renders = open_store(str(tmp_path / "dataset")).stage("renders")
    monkeypatch.setattr(renders.fs, "pipe_file", _disk_full_after(0))
    assert renders.record_failure(S1, "20260101T000000Z-aaaaaaaa", OSError("first")) == ""
    assert renders.failures(S1) == []  # no empty, "unreadable" record


def test_is_disk_full_follows_the_cause() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise full
        except OSError as exc:
            raise RuntimeError("shard-000001 failed") from exc
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EIO, "I/O error")) and not is_disk_full(None)


def test_a_commit_on_a_full_disk_leaves_no_manifest_and_no_temporary_one(tmp_path, monkeypatch) -> None:
    renders = open_store(str(tmp_path / "dataset")).stage("renders")
    writer = renders.begin(S1)
    writer.write_bytes("a.bin", b"x" * 100)
    monkeypatch.setattr(renders.fs, "pipe_file", _disk_full_after(0))
    with pytest.raises(OSError) as raised:
        writer.commit([1], "cfg")
    assert is_disk_full(raised.value)
    assert renders.committed_shards() == []
    assert list((tmp_path / "dataset" / "renders" / "manifests").iterdir()) == []  # no half-written .tmp beside it
