"""The ``frontals/`` stage: view 0 of every fitted subject, what the encoders read (paper §3.2, §4.5).

One shard per committed ``triplanes/`` shard, with the same id (``frontals.parquet``: subject id,
RGBA PNG), copied from the renders. A shard is skipped while it is committed for the same subjects
and renders.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from rodin_core.datasets.errors import TrainDataError
from rodin_core.datasets.integrity import corrupt_inputs
from rodin_core.datasets.layout import (
    FRONTALS_FILE,
    FRONTALS_STAGE,
    RENDERS_STAGE,
    VIEWS_TABLE,
)
from rodin_core.datasets.renders import RenderSource, renders_index
from rodin_core.datasets.triplanes import (
    FRONTALS_SCHEMA,
    committed_triplane_shards,
)
from rodin_core.storage import config_hash, open_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrontalsJob:
    """One ``frontals/`` shard to write: the subjects of the ``triplanes/`` shard with the same id."""

    shard_id: str
    subject_ids: list[int]
    digest: str
    """Config hash of the shard: its subjects and the config hashes of the renders they come from."""
    sources: dict[int, RenderSource]
    """Where each subject's views are."""


def plan_frontals(renders: str, out: str, storage_options: dict | None = None) -> tuple[list[FrontalsJob], list[str]]:
    """(``frontals/`` shards to write, ids of those already current), one per committed ``triplanes/`` shard."""
    planes_stage, shards = committed_triplane_shards(out, storage_options)
    sources = renders_index(open_store(renders, storage_options).stage(RENDERS_STAGE))
    frontals = open_store(out, storage_options).stage(FRONTALS_STAGE)
    pending, current = [], []
    for shard_id in shards:
        ids = list(planes_stage.read_manifest(shard_id).subject_ids)
        missing = [s for s in ids if s not in sources]
        if missing:
            raise TrainDataError(f"subjects {missing[:10]} of {planes_stage.uri} shard {shard_id} are in no committed "
                                 f"renders shard of {renders}/{RENDERS_STAGE}; pass the renders root they were "
                                 f"fitted from (`--renders`), or re-render them with `rodin render --out {renders}`")
        digest = config_hash({"subjects": ids, "renders": sorted({sources[s].config_hash for s in ids})})
        if frontals.is_committed(shard_id) and frontals.read_manifest(shard_id).config_hash == digest:
            current.append(shard_id)
        else:
            pending.append(FrontalsJob(shard_id, ids, digest, {s: sources[s] for s in ids}))
    return pending, current


def extract_frontals_shard(renders: str, out: str, job: FrontalsJob, storage_options: dict | None = None) -> int:
    """Copy view 0 of ``job``'s subjects from the renders into ``frontals/{job.shard_id}``; returns the count.

    Reads only the id, view index and PNG columns of each renders shard involved (a damaged one
    raises :class:`~rodin_core.datasets.errors.CorruptInputError`). A failure is recorded under
    ``frontals/failures/`` and raised again.
    """
    renders_stage = open_store(renders, storage_options).stage(RENDERS_STAGE)
    stage = open_store(out, storage_options).stage(FRONTALS_STAGE)
    writer = stage.begin(job.shard_id)
    try:
        by_shard: dict[str, list[int]] = {}
        for subject_id in job.subject_ids:
            by_shard.setdefault(job.sources[subject_id].shard_id, []).append(subject_id)
        pngs: dict[int, bytes] = {}
        for renders_shard, ids in sorted(by_shard.items()):
            with corrupt_inputs():
                table = renders_stage.read_table(renders_shard, VIEWS_TABLE,
                                                 columns=["subject_id", "view_index", "png"])
            wanted = pc.and_(pc.equal(table["view_index"], 0), pc.is_in(table["subject_id"], pa.array(ids, pa.int64())))
            rows = table.filter(wanted).to_pydict()
            pngs.update(zip(rows["subject_id"], rows["png"], strict=True))
        missing = [s for s in job.subject_ids if s not in pngs]
        if missing:
            raise TrainDataError(f"renders of subjects {missing} have no view 0 (the frontal view); re-render their "
                                 f"shards ({sorted({job.sources[s].shard_id for s in missing})}) with "
                                 f"`rodin render --out {renders}`")
        ids = sorted(job.subject_ids)
        writer.write_table(FRONTALS_FILE, pa.table({"subject_id": ids, "png": [pngs[s] for s in ids]},
                                                   schema=FRONTALS_SCHEMA))
        writer.commit(ids, job.digest, extra={"renders_shards": sorted(by_shard)})
        return len(ids)
    except Exception as exc:
        stage.record_failure(job.shard_id, writer.attempt_id, exc, {"subject_ids": job.subject_ids})
        raise

