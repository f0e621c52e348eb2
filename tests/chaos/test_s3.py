"""The S3 server stops while ``rodin render`` writes to an ``s3://`` store, and comes back: what was committed
is kept, nothing is half-committed, and running the command again (if the run's retries did not) finishes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import s3fs

from rodin_core.datasets.integrity import shared_subjects, verify_stage
from rodin_core.datasets.layout import RENDERS_STAGE
from rodin_core.storage import open_store
from tests import s3_server

from .harness import (
    Figures,
    assert_one_line_error,
    record,
    rerun_command,
    run,
    run_env,
    start,
)
from .scenarios import RENDER_ARGS, SHARDS, SUBJECTS

pytestmark = [pytest.mark.chaos, pytest.mark.chaos_long]
DOWN_S = 8
"""How long the server stays down: longer than the render task's retry delay (5 s)."""


def restart(server: s3_server.SeaweedS3) -> s3_server.SeaweedS3:
    """The same server (ports and data folder) started again."""
    weed = s3_server.find_weed_binary()
    again = s3_server._launch(weed, server.log_path.parent, server.ports)
    why = s3_server._wait_ready(again, server.bucket, time.monotonic() + 120)
    assert why is None, why
    again.bucket = server.bucket
    return again


def test_s3_stopped_mid_write_and_restarted(shared_env: dict[str, str], tmp_path: Path) -> None:
    weed = s3_server.find_weed_binary()
    if weed is None:
        pytest.skip(s3_server.INSTALL_HINT)
    server = s3_server.start_seaweedfs(tmp_path / "weed", timeout_s=120)
    try:
        uri = f"s3://{server.bucket}/chaos"
        env = {**shared_env, "AWS_ACCESS_KEY_ID": s3_server.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": s3_server.SECRET_KEY,
               "AWS_ENDPOINT_URL": server.endpoint_url}
        args = ["render", "--out", uri, *RENDER_ARGS, "--runner", "threads"]
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options)
        process = start(args, run_env(env))

        def writing() -> bool:
            fs.invalidate_cache()
            return bool(fs.glob(f"{server.bucket}/chaos/renders/data/*/*/views.parquet"))

        while not writing():
            assert process.poll() is None, process.stderr.read()[-4000:]
            time.sleep(0.2)
        committed_when_stopped = len(fs.glob(f"{server.bucket}/chaos/renders/manifests/*.json"))  # while it answers
        server.stop()
        begin = time.monotonic()
        time.sleep(DOWN_S)
        server = restart(server)
        out, err = process.communicate(timeout=1800)
        if process.returncode != 0:
            assert "Traceback" not in err, err[-4000:]
            from .harness import Done

            line = assert_one_line_error(Done(args, process.returncode, out, err, 0.0), "render shards failed")
            done = run(rerun_command(line), run_env(env))
            assert done.code == 0, done.err[-4000:]
        stage = open_store(uri, server.storage_options).stage(RENDERS_STAGE)
        shards = stage.committed_shards()
        held = {s: list(stage.read_manifest(s).subject_ids) for s in shards}
        assert shards == SHARDS and sorted(i for ids in held.values() for i in ids) == list(range(SUBJECTS))
        assert shared_subjects(held) == {} and all(check.ok for check in verify_stage(stage))
        retries = len(stage.failures())
        record("s3_stopped_mid_write", Figures("S3 server down mid-write", "render", len(shards), 0, 0, retries,
                                               round(time.monotonic() - begin, 1),  # from the stop
                                               f"{committed_when_stopped} committed when stopped; "
                                               f"{'retries finished the run' if process.returncode == 0 else 're-run finishes'}"))
    finally:
        server.stop()
