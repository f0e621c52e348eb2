"""Integrity of a dataset root: committed files match their manifests, and each subject is in one shard.

- :func:`repair_command`: what re-creates damaged shards of a stage, as a command to run;
- :func:`corrupt_inputs`: a damaged shard met while a stage reads its inputs becomes one
  :class:`~rodin_core.datasets.errors.CorruptInputError` naming the file, the shard and that command;
- :func:`verify_stage`, :func:`check_inputs`: every committed file hashed against its manifest;
- :func:`shared_subjects`, :func:`missing_subjects`, :func:`id_ranges`: subjects held by several
  shards, ids a corpus lacks (a corpus holds ids 0..N-1), and both written compactly.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from rodin_core.datasets.errors import CorruptInputError
from rodin_core.datasets.layout import (
    CHECKPOINTS_STAGE,
    DECODER_STAGE,
    FRONTALS_STAGE,
    GENERATED_STAGE,
    LATENTS_STAGE,
    RENDERS_STAGE,
    STATS_STAGE,
    TEXT_PAIRS_STAGE,
    TRIPLANES_STAGE,
)
from rodin_core.storage import ShardCheck, ShardCorruptError, StageStore, open_store

VERIFY_THREADS = 8
"""Shards hashed at once (reading dominates; sha256 releases the GIL)."""
_SHARD_INDEX = re.compile(r"shard-(\d+)")


def repair_command(stage: str, shard_ids: Sequence[str], root: str, renders: str | None = None) -> str:
    """What re-creates the damaged shards ``shard_ids`` of ``stage`` under the dataset root ``root``.

    ``renders``: the renders' dataset root of a fit (default ``root``).
    """
    renders = renders or root
    them = "it" if len(shard_ids) == 1 else "them"
    manifests = ", ".join(f"{root}/{stage}/manifests/{shard}.json" for shard in shard_ids)
    indices = [_SHARD_INDEX.fullmatch(s) for s in shard_ids]
    if stage == TRIPLANES_STAGE and all(indices):
        numbers = " ".join(str(int(m.group(1))) for m in indices)
        return (f"re-fit {them} with the preset and --set options of the fit: "
                f"`rodin fit --renders {renders} --out {root} --shards {numbers}`")
    then = {
        RENDERS_STAGE: f"re-render {them} with the options the corpus was rendered with: `rodin render --out {root}`",
        DECODER_STAGE: f"fit again: `rodin fit --renders {renders} --out {root}` (a new decoder re-fits every shard)",
        TRIPLANES_STAGE: f"fit again: `rodin fit --renders {renders} --out {root}`",
        FRONTALS_STAGE: f"run the training command again, e.g. `rodin train base --out {root}` (it extracts {them} again)",
        STATS_STAGE: f"run the training command again, e.g. `rodin train base --out {root}` (it computes {them} again)",
        LATENTS_STAGE: f"encode {them} again: `rodin train prior --out {root}`",
        CHECKPOINTS_STAGE: f"resume the run from its last checkpoint: "
                           f"`rodin train {shard_ids[0].replace('_', '-')} --out {root}`",
        TEXT_PAIRS_STAGE: f"pair them again: `rodin train text-prior --out {root}`",
        GENERATED_STAGE: "run the `rodin sample` command that made " + them + " again",
    }.get(stage, "run the stage that wrote " + them + " again")
    return f"delete {manifests} and {then}"


def corrupt_input_error(errors: Sequence[ShardCorruptError], renders: str | None = None) -> CorruptInputError:
    """One error for the damaged shards ``errors`` (of one stage): the first problem, then the repair."""
    first = errors[0]
    shards = sorted({e.shard_id for e in errors})
    root = first.root or "<dataset root>"
    more = f" ({len(shards)} damaged shards: {', '.join(shards)})" if len(shards) > 1 else ""
    return CorruptInputError(f"{first.problem}{more}; {repair_command(first.stage, shards, root, renders)}")


@contextlib.contextmanager
def corrupt_inputs(renders: str | None = None) -> Iterator[None]:
    """Raise a :class:`ShardCorruptError` of the block as a :class:`CorruptInputError` with its repair."""
    try:
        yield
    except ShardCorruptError as exc:
        raise corrupt_input_error([exc], renders) from exc


def verify_stage(stage: StageStore, shard_ids: Iterable[str] | None = None,
                 threads: int = VERIFY_THREADS) -> list[ShardCheck]:
    """:meth:`StageStore.verify_shard` of every committed shard (or of ``shard_ids``), ``threads`` at a time."""
    shards = stage.committed_shards() if shard_ids is None else list(shard_ids)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(stage.verify_shard, shards))


def check_inputs(out: str, stages: Sequence[str], storage_options: dict | None = None,
                 renders: str | None = None) -> int:
    """Hash every committed file of ``stages`` of ``out`` against its manifest; returns the shards checked.

    Raises :class:`CorruptInputError` for the first stage with damaged shards, naming them and their repair.
    """
    store = open_store(out, storage_options)
    checked = 0
    for name in stages:
        checks = verify_stage(store.stage(name))
        checked += len(checks)
        problems = [problem for check in checks for problem in check.problems]
        if problems:
            raise corrupt_input_error(problems, renders)
    return checked


def shared_subjects(subjects: Mapping[str, Sequence[int]]) -> dict[int, list[str]]:
    """Subject id -> the shards holding it, for every subject that more than one shard of ``subjects`` holds."""
    owners: dict[int, list[str]] = {}
    for shard_id, ids in subjects.items():
        for subject in ids:
            owners.setdefault(subject, []).append(shard_id)
    return {s: shards for s, shards in sorted(owners.items()) if len(shards) > 1}


def missing_subjects(subject_ids: Iterable[int]) -> list[int]:
    """Ids from 0 to the largest of ``subject_ids`` that it lacks (a corpus holds ids 0..N-1)."""
    present = set(subject_ids)
    return [s for s in range(max(present, default=-1) + 1) if s not in present]


def id_ranges(subject_ids: Iterable[int], most: int = 8) -> str:
    """Sorted ids written as ranges, e.g. ``"4..7, 12"`` (at most ``most`` ranges, then ``...``)."""
    ids = sorted(set(subject_ids))
    runs: list[list[int]] = []
    for subject in ids:
        if runs and subject == runs[-1][1] + 1:
            runs[-1][1] = subject
        else:
            runs.append([subject, subject])
    text = ", ".join(f"{a}..{b}" if b > a else str(a) for a, b in runs[:most])
    return text + (", ..." if len(runs) > most else "")
