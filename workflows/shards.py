"""What the sharded stage flows share: run one task per shard, wait for all, word and report the failures.

A sharded flow (``render-avatars``, ``fit-triplanes``) builds its config from its parameters
(:func:`~workflows.flow_config.build_config`), plans its shards, enters its task runner (:func:`open_runner`: Ray or a
thread pool, with Ray workers able to unpickle the flow's tasks), submits one task per pending
shard and waits for all of them (:func:`submit_shards`). A shard that fails after its retries (a
data error is not retried: :func:`retry_unless_data_error`) does not stop the others: it becomes
``{shard id: "ErrorType: message"}``, a ``failed`` row of the shard table (:func:`failed_rows`)
and, once the reports are published, one :class:`ShardsFailedError` naming every failed shard.

Every such flow's summary starts with the same counts (:func:`shard_counts`): ``shards_total``,
``shards_<done>`` (``shards_rendered``, ``shards_fitted``), ``shards_skipped``, ``shards_failed``
and ``subjects``; it ends with ``seconds`` and ``store``.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from prefect import Task, get_run_logger
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import TaskRunner
from prefect_ray.context import remote_options
from ray import cloudpickle as ray_cloudpickle

from rodin_core.datasets.errors import StageInputError
from rodin_core.storage import ShardCorruptError, StageStore, is_disk_full
from workflows.artifacts import ShardRow
from workflows.ray_runner import dashboard_message

R = TypeVar("R")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
"""Terminal colour codes (Ray colours its task names in error messages)."""


class ShardOutcome(Protocol):
    """What a shard task reports: the shard and its subjects."""

    @property
    def shard_id(self) -> str: ...

    @property
    def subject_ids(self) -> list[int]: ...


@dataclass(frozen=True)
class FailureWording:
    """How :class:`ShardsFailedError` words the failed shards of one stage."""

    kind: str
    """What the shards hold, as in "1 of 3 ``render`` shards failed"."""
    stage: str
    """The store stage whose ``failures/`` folder holds the failure records."""
    retries: int
    """Retries of the stage's shard task."""
    remedy: str
    """What to do about the failed shards."""
    records: str
    """What the failure records are, as in "``Failure records with Blender's log``: {store}/renders/failures/"."""


class ShardsFailedError(RuntimeError):
    """Some shards failed after all their retries; ``summary`` is the flow's summary of the run.

    ``wording`` makes the message: which shards they are, what to do, where their failure records are.
    """

    def __init__(self, summary: dict[str, Any], wording: FailureWording) -> None:
        failed = summary["shards_failed"]
        listing = "; ".join(f"{shard}: {error.splitlines()[0] if error else ''}" for shard, error in failed.items())
        super().__init__(
            f"{len(failed)} of {summary['shards_total']} {wording.kind} shards failed, each after up to "
            f"{wording.retries} retries ({listing}). The other shards are committed; {wording.remedy}. "
            f"{wording.records}: {summary['store']}/{wording.stage}/failures/")
        self.summary = summary
        self.wording = wording

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.summary, self.wording)


def make_importable_by_ray_workers(module_name: str, import_name: str) -> None:
    """Let Ray workers unpickle a flow module's tasks even when Prefect loaded it by file path.

    A file entrypoint (``workflows/render_avatars.py:render_avatars``) loads the file as a module
    named ``render_avatars`` (``module_name``) instead of ``import_name``, which workers cannot
    import; Ray then pickles it by value instead.
    """
    if module_name != import_name:
        ray_cloudpickle.register_pickle_by_value(sys.modules[module_name])


@contextlib.contextmanager
def open_runner(runner: TaskRunner, module_name: str, import_name: str) -> Iterator[TaskRunner]:
    """Enter ``runner`` for the tasks of the flow module ``module_name`` (import name ``import_name``).

    Logs where the tasks run (the Ray dashboard) and lets Ray workers unpickle the module's tasks
    (:func:`make_importable_by_ray_workers`); the runner shuts down at the end of the block.
    """
    with runner:
        message = dashboard_message(runner)
        if message:
            get_run_logger().info(message)
        make_importable_by_ray_workers(module_name, import_name)
        yield runner


DATA_ERRORS = (StageInputError, ShardCorruptError)
"""Failures of the data a task reads (missing, damaged): the same input fails the same way again."""


def retry_unless_data_error(task: Any, task_run: Any, state: State) -> bool:
    """Retry a failed task (``retry_condition_fn``), but not a data error nor a full disk: a retry would fail
    the same way."""
    try:
        state.result()
    except DATA_ERRORS:
        return False
    except Exception as exc:  # noqa: BLE001 - any other failure may be transient
        return not is_disk_full(exc)
    return True


def submit_shards(runner: TaskRunner, shard_task: Task[..., R], parameters: Mapping[str, dict[str, Any]],
                  num_cpus: int) -> tuple[list[R], dict[str, str]]:
    """Run ``shard_task`` once per shard of ``parameters`` (``{shard id: task parameters}``) on the
    entered ``runner``, each reserving ``num_cpus`` CPUs on Ray; wait for all of them.

    Returns the reports of the shards that succeeded and ``{shard id: error}`` of the others.
    """
    if not parameters:
        return [], {}
    with remote_options(num_cpus=num_cpus):
        futures = {shard_id: runner.submit(shard_task, values) for shard_id, values in parameters.items()}
    return wait_for_shards(futures)


def wait_for_shards(futures: Mapping[str, PrefectFuture[R]]) -> tuple[list[R], dict[str, str]]:
    """Results of every future; a failed one becomes ``{shard id: "ErrorType: message"}``."""
    logger = get_run_logger()
    reports, failures = [], {}
    for shard_id, future in futures.items():
        try:
            reports.append(future.result())
        except Exception as exc:  # noqa: BLE001 - one shard's failure must not lose the others' results
            failures[shard_id] = ANSI_ESCAPE.sub("", f"{type(exc).__name__}: {exc}")
            logger.error("shard %s failed: %s", shard_id, failures[shard_id])
    return reports, failures


def failed_rows(stage: StageStore, failed: Mapping[str, str], subjects: Mapping[str, int]) -> list[ShardRow]:
    """A ``failed`` table row per failed shard: its ``subjects`` count, its error and the last
    failed attempt recorded in ``stage``."""
    rows = []
    for shard_id, error in failed.items():
        records = stage.failures(shard_id)
        attempt = str(records[-1].get("attempt_id", "")) if records else ""
        rows.append(ShardRow(shard_id, "failed", subjects[shard_id], 0, 0.0, attempt, error))
    return rows


def shard_counts(done: str, produced: Sequence[ShardOutcome], skipped: Sequence[ShardOutcome],
                 failed: Mapping[str, str]) -> dict[str, Any]:
    """The counts a sharded flow's summary starts with: ``shards_total``, ``shards_{done}`` (the
    shards this run produced), ``shards_skipped``, ``shards_failed`` (``{shard id: error}``, sorted)
    and ``subjects`` (of the shards this run produced)."""
    return {
        "shards_total": len(produced) + len(skipped) + len(failed), f"shards_{done}": len(produced),
        "shards_skipped": len(skipped), "shards_failed": dict(sorted(failed.items())),
        "subjects": sum(len(r.subject_ids) for r in produced),
    }
