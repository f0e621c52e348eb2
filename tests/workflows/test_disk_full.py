"""A full disk while publishing reports or running a shard: one clear error, no empty file, no useless retry."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from prefect.states import Failed

from rodin_core.storage import StorageError, open_store
from workflows.artifacts import write_report
from workflows.shards import retry_unless_data_error


def test_a_report_on_a_full_disk_is_one_error_naming_it_and_no_empty_file(tmp_path: Path, monkeypatch) -> None:
    store = open_store(str(tmp_path / "dataset"))

    def full(path: str, data: bytes, **kwargs: object) -> None:
        open(path, "wb").close()
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(store.fs, "pipe_file", full)
    with pytest.raises(StorageError) as raised:
        write_report(store, "reports/fit-triplanes.md", b"# report\n")
    message = str(raised.value)
    assert f"{store.uri}/reports/fit-triplanes.md" in message and "No space left on device" in message
    assert "free space" in message and "\n" not in message
    assert list((tmp_path / "dataset" / "reports").iterdir()) == []


def _failed(exc: BaseException) -> Failed:
    return Failed(data=exc)


def test_a_full_disk_is_not_retried_other_os_errors_are() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/data/x/renders/data/shard-000001")
    try:
        try:
            raise full
        except OSError as exc:
            raise RuntimeError("Blender failed writing shard-000001") from exc
    except RuntimeError as wrapped:
        assert retry_unless_data_error(None, None, _failed(wrapped)) is False
    assert retry_unless_data_error(None, None, _failed(full)) is False
    assert retry_unless_data_error(None, None, _failed(OSError(errno.ECONNRESET, "reset"))) is True


def test_every_shard_task_retries_through_the_full_disk_check() -> None:
    import workflows.fit_triplanes as fit_flow
    import workflows.render_avatars as render_flow

    for shard_task in (render_flow.render_shard, fit_flow.fit_shard, fit_flow.fit_shared_decoder_task):
        assert shard_task.retries > 0 and shard_task.retry_condition_fn is retry_unless_data_error, shard_task.name
