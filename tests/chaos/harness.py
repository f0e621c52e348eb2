"""What the chaos tests share: ``rodin`` as a subprocess with faults, its process tree, the store's counts, figures.

A run is ``python -m workflows.cli ARGS`` from the project root, its own process group, with the
faults of :mod:`tests.chaos.inject.sitecustomize` when asked. :class:`ProcessTree` records every
process a run starts (its Prefect server, Ray's GCS, raylet and workers, Blender) while it runs, so
that a test can check that none outlives it. :func:`store_counts` counts a stage's committed
shards and subjects and hashes its files with the verify code. :func:`record` writes a test's
figures as JSON under ``RODIN_CHAOS_REPORT``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

from rodin_core.datasets.integrity import shared_subjects, verify_stage
from rodin_core.storage import open_store

REPO_ROOT = Path(__file__).resolve().parents[2]
INJECT = Path(__file__).resolve().parent / "inject"
REPORT_ENV = "RODIN_CHAOS_REPORT"
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Done:
    """A finished ``rodin`` run."""

    args: list[str]
    code: int
    out: str
    err: str
    seconds: float

    @property
    def command(self) -> str:
        return shlex.join(["rodin", *self.args])

    def user_lines(self) -> list[str]:
        """The lines of stderr that are the command's own (Prefect and Ray log lines are not)."""
        return [line for line in self.err.splitlines() if line.startswith("rodin")]


def run_env(env: dict[str, str], faults: str | None = None, marker_dir: Path | None = None) -> dict[str, str]:
    """The environment of a run: ``env`` over this one, single-threaded maths, the faults when given."""
    merged = {**os.environ, **THREAD_ENV, **env}
    merged = {name: value for name, value in merged.items() if value != "" or name not in env}  # "" unsets
    merged.pop("RODIN_CHAOS", None)
    if faults:
        merged["PYTHONPATH"] = os.pathsep.join(filter(None, [str(INJECT), merged.get("PYTHONPATH")]))
        merged["RODIN_CHAOS"] = faults
        merged["RODIN_CHAOS_DIR"] = str(marker_dir)
    return merged


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """``rodin ARGS`` in its own process group, stdout and stderr piped."""
    return subprocess.Popen([sys.executable, "-m", "workflows.cli", *args], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def run(args: list[str], env: dict[str, str], timeout_s: float = 900) -> Done:
    """Run ``rodin ARGS`` to its end; every process left in its group is killed after."""
    begin = time.monotonic()
    process = start(args, env)
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(process)
        out, err = process.communicate()
        raise AssertionError(f"`rodin {shlex.join(args)}` did not end in {timeout_s:g} s:\n{err[-4000:]}") from None
    return Done(list(args), process.returncode, out, err, time.monotonic() - begin)


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux ``/proc``; empty once it is gone)."""
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def session_of(pid: int) -> int | None:
    """The session id of ``pid`` (field 6 of ``/proc/PID/stat``), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat[stat.rindex(")") + 2:].split()[3])


@dataclass
class ProcessTree:
    """Every process started under ``root`` seen while it ran, polled from a thread: PID -> command line.

    Ray starts its GCS and raylet as children of the driver and its workers as children of the
    raylet; Blender is a child of a worker. Processes that leave the tree (a new session) are kept
    once seen.
    """

    root: int
    seen: dict[int, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.snapshot()
            self._stop.wait(0.2)

    def snapshot(self) -> None:
        todo = [self.root]
        while todo:
            pid = todo.pop()
            line = command_line(pid)  # re-read: a child seen between fork and exec has the parent's or none
            if line or pid not in self.seen:
                self.seen[pid] = line
            todo += children(pid)

    def matching(self, text: str) -> list[int]:
        return [pid for pid, line in self.seen.items() if text in line]

    def survivors(self, wait_s: float = 30) -> dict[int, str]:
        """The processes of the tree still alive after up to ``wait_s`` seconds (killed after being listed)."""
        deadline = time.monotonic() + wait_s
        while any(alive(pid) for pid in self.seen) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {pid: line for pid, line in self.seen.items() if alive(pid)}
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left


def wait_for(predicate, timeout_s: float, what: str, process: subprocess.Popen | None = None) -> float:
    """Poll ``predicate`` until true; its seconds. AssertionError after ``timeout_s`` or when ``process`` ends."""
    begin = time.monotonic()
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before {what}:\n"
                                 f"{process.stderr.read()[-4000:] if process.stderr else ''}")
        if time.monotonic() - begin > timeout_s:
            raise AssertionError(f"no {what} after {timeout_s:g} s")
        time.sleep(0.2)
    return time.monotonic() - begin


@dataclass(frozen=True)
class StageCounts:
    """A stage's committed shards, the subjects they hold, those held twice and the damaged shards."""

    shards: list[str]
    subjects: list[int]
    duplicated: dict[int, list[str]]
    damaged: list[str]


def store_counts(root: str | Path, stage_name: str) -> StageCounts:
    stage = open_store(str(root)).stage(stage_name)
    shards = stage.committed_shards()
    held = {s: list(stage.read_manifest(s).subject_ids) for s in shards}
    damaged = [c.shard_id for c in verify_stage(stage, shards) if not c.ok]
    return StageCounts(shards, sorted(i for ids in held.values() for i in ids), shared_subjects(held), damaged)


def failure_records(root: str | Path, stage_name: str) -> int:
    """Failure records of a stage: one per failed attempt, so the retries a run used."""
    return len(open_store(str(root)).stage(stage_name).failures())


@dataclass
class Figures:
    """What one chaos test measured, as one row of the fault table."""

    fault: str
    stage: str
    shards_committed: int
    shards_lost: int
    shards_duplicated: int
    retries: int
    recover_s: float
    outcome: str


def record(test_name: str, figures: Figures) -> None:
    """Write ``figures`` as ``{RODIN_CHAOS_REPORT}/{test_name}.json``; nothing when the variable is unset."""
    folder = os.environ.get(REPORT_ENV)
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{test_name}.json").write_text(json.dumps(asdict(figures), indent=2))


def assert_one_line_error(done: Done, *must_contain: str) -> str:
    """The run failed with exactly one line of its own naming ``must_contain``, and no traceback anywhere."""
    assert done.code != 0, f"{done.command} succeeded:\n{done.out[-2000:]}"
    assert "Traceback" not in done.err, done.err[-6000:]
    lines = done.user_lines()
    assert len(lines) == 1, lines or done.err[-4000:]
    for text in must_contain:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def rerun_command(line: str) -> list[str]:
    """The arguments of the last `` `rodin ...` `` command a user line names."""
    start = line.rindex("`rodin ") + len("`rodin ")
    return shlex.split(line[start:line.index("`", start)])


def repair_command(line: str) -> list[str]:
    """The arguments of the command of the repair a user line names: the first `` `rodin ...` `` after its
    ``delete MANIFEST and`` where it has one. (A stage's error line may go on to name the command that re-runs the
    stage itself.)"""
    repair = line[line.find("delete ") + 1:]
    start = repair.index("`rodin ") + len("`rodin ")
    return shlex.split(repair[start:repair.index("`", start)])


def attempts(root: str | Path, stage_name: str) -> dict[str, str]:
    """Committed shard -> the attempt that committed it."""
    stage = open_store(str(root)).stage(stage_name)
    return {s: stage.read_manifest(s).attempt_id for s in stage.committed_shards()}


def outcome_figures(fault: str, stage: str, before: dict[str, str], after: dict[str, str], counts: StageCounts,
                    retries: int, recover_s: float, outcome: str) -> Figures:
    """The figures of a fault: shards committed after recovery, those committed before it that were lost or
    committed again, subjects held twice."""
    lost = [s for s in before if s not in after]
    again = [s for s in before if s in after and after[s] != before[s]]
    return Figures(fault, stage, len(after), len(lost), len(again) + len(counts.duplicated), retries,
                   round(recover_s, 1), outcome)
