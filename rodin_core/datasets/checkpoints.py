"""The ``checkpoints/`` stage: the latest checkpoint of each trained stage (paper appendix B.1, B.4).

One shard per stage (``base``, ``upsampler``, ``prior``) holding ``model.safetensors``,
``optimizer.safetensors`` and ``checkpoint.json``, re-committed at every checkpoint of a run; the
newest commit wins. Generation reads it with :func:`read_stage_checkpoint`.
"""

from __future__ import annotations

import json
import logging
import os

from rodin_core.checkpoint import (
    CHECKPOINT_JSON,
    Checkpoint,
    check_format_version,
    checkpoint_files,
    checkpoint_from_files,
)
from rodin_core.datasets.errors import TrainDataError
from rodin_core.datasets.layout import (
    CHECKPOINTS_STAGE,
)
from rodin_core.storage import Manifest, config_hash, open_store

log = logging.getLogger(__name__)


def commit_stage_checkpoint(out: str, stage_name: str, directory: str | os.PathLike, config: dict, extra: dict,
                            storage_options: dict | None = None) -> Manifest:
    """Commit the checkpoint folder ``directory`` as shard ``stage_name`` of ``checkpoints/``.

    ``config`` is the stage's config (its hash is the manifest's), ``extra`` (JSON) goes into the
    manifest (step, run name, ...). Then every attempt folder of the shard but this commit and the
    one it replaced (a reader may still be reading it) is deleted.
    """
    stage = open_store(out, storage_options).stage(CHECKPOINTS_STAGE)
    previous = stage.read_manifest(stage_name).attempt_id if stage.is_committed(stage_name) else None
    writer = stage.begin(stage_name)
    for name, data in checkpoint_files(directory).items():
        writer.write_bytes(name, data)
    manifest = writer.commit([], config_hash(config), extra=extra)
    folder = f"{stage.root}/data/{stage_name}"
    stage.fs.invalidate_cache(folder)
    for path in (p.rstrip("/") for p in stage.fs.ls(folder, detail=False)):
        if path != folder and path.rsplit("/", 1)[-1] not in (manifest.attempt_id, previous):
            stage.fs.rm(path, recursive=True)
    return manifest


def read_stage_checkpoint(out: str, stage_name: str, storage_options: dict | None = None
                          ) -> tuple[Checkpoint, Manifest]:
    """The committed checkpoint of stage ``stage_name`` (verified) and its manifest."""
    stage = open_store(out, storage_options).stage(CHECKPOINTS_STAGE)
    if not stage.is_committed(stage_name):
        raise TrainDataError(f"no committed {stage_name} checkpoint under {stage.uri}; train that stage first: "
                             f"`rodin train {stage_name.replace('_', '-')} --out {out}`")
    manifest = stage.read_manifest(stage_name)
    files = {entry.name: stage.read_bytes(stage_name, entry.name) for entry in manifest.files}
    return checkpoint_from_files(files, where=f"{stage.uri}/{stage_name}"), manifest


def committed_config(out: str, stage_name: str, storage_options: dict | None = None) -> dict | None:
    """The ``config`` of the committed checkpoint of ``stage_name`` (reads its JSON only), or None.

    Raises :class:`~rodin_core.checkpoint.CheckpointError` when it has another format version."""
    stage = open_store(out, storage_options).stage(CHECKPOINTS_STAGE)
    if not stage.is_committed(stage_name):
        return None
    body = json.loads(stage.read_bytes(stage_name, CHECKPOINT_JSON))
    check_format_version(body, f"{stage.uri}/{stage_name}")
    return body["config"]


def committed_step(out: str, stage_name: str, storage_options: dict | None = None) -> int | None:
    """Step of the committed checkpoint of ``stage_name`` (from its manifest), or None."""
    stage = open_store(out, storage_options).stage(CHECKPOINTS_STAGE)
    if not stage.is_committed(stage_name):
        return None
    return int(stage.read_manifest(stage_name).extra.get("step", 0))

