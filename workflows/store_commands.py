"""``rodin status``, ``rodin verify`` and ``rodin gc``: look after a dataset root without running a stage.

``status`` lists one stage's committed shards and its failure records (those a later commit
recovered are marked as such); with ``verify`` it also hashes the stage's files. ``verify`` hashes
every committed file of a dataset root against its manifest and names the command that re-creates
each damaged shard. ``gc`` removes what no manifest references (attempt folders of failed or
replaced attempts, stray files), leaving alone anything written in the last ``min_age_minutes``.

Each returns the command's exit code and prints; bad input and storage errors are one line on
stderr (exit code 2 for bad input, 1 for a damaged store or an unreachable one).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rodin_core.datasets.integrity import repair_command, verify_stage
from rodin_core.datasets.layout import STAGES
from rodin_core.storage import (
    MANIFESTS,
    ShardCheck,
    StageStore,
    StorageError,
    Store,
    is_recovered,
    open_store,
)

GC_MIN_AGE_MINUTES = 60
"""``rodin gc`` leaves alone what was written in the last hour: an attempt may still be writing."""


class StoreCommandError(Exception):
    """Bad input of a store command; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def store_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of reaching a store (missing filesystem packages, the network, object-store clients)."""
    errors: list[type[BaseException]] = [StorageError, OSError, ValueError, ImportError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return tuple(errors)
    return (*errors, BotoCoreError, ClientError)


def run(command: str, out: str, stages: Sequence[str] | None = None, verify: bool = False, dry_run: bool = False,
        min_age_minutes: float = GC_MIN_AGE_MINUTES) -> int:
    """Run store command ``command`` (``status``, ``verify`` or ``gc``); errors become one line on stderr."""
    try:
        if command == "status":
            return status(out, stages[0] if stages else "renders", verify)
        if command == "verify":
            return verify_store(out, stages)
        return collect_garbage(out, stages, dry_run, min_age_minutes)
    except StoreCommandError as err:
        print(f"rodin: {err}", file=sys.stderr)
        return err.code
    except store_errors() as err:
        print(f"rodin: cannot read the dataset root {out}: {type(err).__name__}: {' '.join(str(err).split())}",
              file=sys.stderr)
        return 1


def open_root(out: str) -> Store:
    """The existing dataset root ``out``; :class:`StoreCommandError` when there is nothing there."""
    store = open_store(out)
    if not store.fs.exists(store.root):
        raise StoreCommandError(f"no dataset root at {out} (nothing is there); pass the --out of a render or fit run")
    return store


def check_stages(stages: Sequence[str]) -> list[str]:
    """``stages`` when each is a stage of :data:`STAGES`; else :class:`StoreCommandError` naming the valid ones."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise StoreCommandError(f"unknown stage {', '.join(map(repr, unknown))}; the stages are {', '.join(STAGES)}")
    return list(stages)


def present_stages(store: Store, stages: Sequence[str] | None) -> list[str]:
    """``stages`` (checked), or every stage of :data:`STAGES` with a ``manifests/`` folder under ``store``."""
    if stages:
        return check_stages(stages)
    return [s for s in STAGES if store.fs.exists(f"{store.root}/{s}/{MANIFESTS}")]


def status(out: str, stage_name: str, verify: bool = False) -> int:
    """Print a stage's committed shards and its failure records (recovered ones marked); 1 if ``verify`` finds damage."""
    check_stages([stage_name])
    stage = open_root(out).stage(stage_name)
    shards = stage.committed_shards()
    manifests = {shard_id: stage.read_manifest(shard_id) for shard_id in shards}
    subjects = sum(len(m.subject_ids) for m in manifests.values())
    records = [(r, manifests.get(str(r.get("shard_id")))) for r in stage.failures()]
    recovered = sum(is_recovered(r, m) for r, m in records)
    summary = f"{stage.uri}: {len(shards)} committed shards, {subjects} subjects"
    if records:
        summary += f"; {len(records)} failure records ({recovered} recovered by a later commit)"
    print(summary)
    for record, manifest in records:
        shard, attempt, error = record.get("shard_id"), record.get("attempt_id"), record.get("error")
        if is_recovered(record, manifest):
            print(f"  recovered attempt {shard}/{attempt} (committed since by attempt {manifest.attempt_id}): {error}")
        else:
            print(f"  failed attempt {shard}/{attempt}: {error}")
    if not verify:
        return 0
    checks = verify_stage(stage, shards)
    damaged = [c for c in checks if not c.ok]
    files, size = sum(c.files for c in checks), sum(c.size for c in checks)
    print(f"  verified {len(checks)} shards ({files} files, {human_bytes(size)}): {len(checks) - len(damaged)} ok, "
          f"{len(damaged)} damaged")
    print_damage(damaged, out, indent="  ")
    return 1 if damaged else 0


def verify_store(out: str, stages: Sequence[str] | None = None) -> int:
    """Hash every committed file of ``stages`` (default: every stage there) against its manifest; print a table.

    Returns 1 when a file differs from its manifest (or a manifest is unreadable), else 0.
    """
    store = open_root(out)
    names = present_stages(store, stages)
    results = {name: verify_stage(store.stage(name)) for name in names}
    rows = [(name, len(checks), sum(c.files for c in checks), sum(c.size for c in checks),
             sum(not c.ok for c in checks)) for name, checks in results.items()]
    print(f"{'stage':<12} {'shards':>7} {'files':>7} {'bytes':>10} {'damaged':>8}")
    for name, shards, files, size, bad in rows:
        print(f"{name:<12} {shards:>7} {files:>7} {human_bytes(size):>10} {bad:>8}")
    damaged = [c for checks in results.values() for c in checks if not c.ok]
    print_damage(damaged, out)
    total = sum(r[1] for r in rows)
    print(f"{out}: {total} committed shards in {len(rows)} stages verified ({sum(r[2] for r in rows)} files, "
          f"{human_bytes(sum(r[3] for r in rows))}): {total - len(damaged)} ok, {len(damaged)} damaged")
    return 1 if damaged else 0


def print_damage(damaged: Sequence[ShardCheck], out: str, indent: str = "") -> None:
    """One line per damaged shard: its first problem and the command that re-creates it."""
    for check in damaged:
        first = check.problems[0]
        more = f" (and {len(check.problems) - 1} more files)" if len(check.problems) > 1 else ""
        print(f"{indent}damaged {check.stage}/{check.shard_id}: {first.problem}{more}; "
              f"{repair_command(check.stage, [check.shard_id], out)}")


def collect_garbage(out: str, stages: Sequence[str] | None = None, dry_run: bool = False,
                    min_age_minutes: float = GC_MIN_AGE_MINUTES) -> int:
    """Remove (or with ``dry_run`` list) what no manifest references in ``stages`` (default: every stage there)."""
    if min_age_minutes < 0:
        raise StoreCommandError(f"--min-age must be 0 or more minutes, got {min_age_minutes:g}")
    store = open_root(out)
    verb = "would remove" if dry_run else "removed"
    removed, kept = [], 0
    for name in present_stages(store, stages):
        stage: StageStore = store.stage(name)
        garbage = stage.find_garbage(min_age_minutes * 60)
        kept += len(stage.find_garbage()) - len(garbage) if min_age_minutes > 0 else 0
        if not dry_run:
            stage.remove_garbage(garbage)
        for item in garbage:
            print(f"{verb} {item.uri}{'/' if item.folder else ''} ({human_bytes(item.size)})")
        removed += garbage
    folders = sum(g.folder for g in removed)
    print(f"{out}: {verb} {folders} unreferenced attempt folders and {len(removed) - folders} files "
          f"({human_bytes(sum(g.size for g in removed))})")
    if kept:
        print(f"kept {kept} more written in the last {min_age_minutes:g} minutes (a stage may still be writing "
              "them); `--min-age 0` removes them too")
    return 0


def human_bytes(size: int) -> str:
    """``size`` bytes as ``"512 B"``, ``"1.5 KiB"``, ``"2.0 MiB"`` ..."""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
