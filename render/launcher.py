"""Host side of shard rendering: start Blender in a subprocess, bound it in time, check its files.

A crash or a hang inside Blender must cost one shard attempt, never the flow.
:func:`run_blender_shard` therefore runs :mod:`render.blender_worker` (paper §4.1 / appendix B.2,
the multi-view renders of each subject) as a separate process in its own process group, kills
the whole group when it outlives its timeout, and turns every failure into a typed exception that
carries the end of Blender's log. Blender dies with the thread that started it (Linux), so a Ray
worker or shard job killed with SIGKILL leaves no Blender rendering behind it.
:func:`validate_outputs` checks the files it produced before anything is published.

This module never imports ``bpy``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rodin_core.child_process import die_with_parent

# File names shared with render.blender_worker, which imports them from here.
DONE_NAME = "DONE"
RECIPE_NAME = "recipe.json"
SPEC_NAME = "spec.json"
LOG_NAME = "blender.log"
LOG_TAIL_LINES = 40
PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROGRESS_PREFIX = b"[blender_worker]"
"""Lines of the worker's output that are relayed to this module's logger."""
PROGRESS_POLL_S = 1.0

log = logging.getLogger(__name__)


class BlenderError(RuntimeError):
    """A Blender shard attempt failed; ``log_tail`` holds the last lines of its log.

    Picklable with all its fields, so it crosses process boundaries (Ray, Prefect) intact.
    """

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(f"{message}\n--- last lines of the Blender log ---\n{log_tail}" if log_tail else message)
        self.message = message
        self.log_tail = log_tail

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message, self.log_tail)


class BlenderTimeoutError(BlenderError):
    """Blender outlived its timeout; its whole process group was killed."""


class BlenderCrashError(BlenderError):
    """Blender exited with a non-zero code (``returncode``; negative: killed by that signal)."""

    def __init__(self, message: str, returncode: int, log_tail: str = "") -> None:
        super().__init__(message, log_tail)
        self.returncode = returncode

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message, self.returncode, self.log_tail)


class InvalidRenderError(RuntimeError):
    """A rendered shard is incomplete or wrong; the message names the subject, view and file."""


@dataclass(frozen=True)
class BlenderRun:
    """What one successful Blender run produced and how long it took."""

    output_dir: Path
    """Folder holding ``<subject_id:06d>/`` sub-folders (the run's workdir)."""
    log_path: Path
    seconds: float
    """Wall-clock time of the subprocess, start-up included."""
    subject_seconds: dict[int, float]
    """Per-subject render time (views only, scene building excluded), from the DONE files."""
    blender_version: str


def subject_dir(output_dir: str | Path, subject_id: int) -> Path:
    """Folder of one subject's files: ``<output_dir>/<subject_id:06d>``."""
    return Path(output_dir) / f"{subject_id:06d}"


def view_name(view_index: int) -> str:
    """File name of one view: ``view_<k:04d>.png``."""
    return f"view_{view_index:04d}.png"


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    if not log_path.exists():
        return ""
    with log_path.open("r", errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines)).rstrip("\n")


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group of ``process`` (created with start_new_session) and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _wait_relaying_progress(process: subprocess.Popen, log_path: Path, deadline: float) -> int:
    """Wait for ``process``, logging the worker's progress lines as they appear in its log.

    Raises ``subprocess.TimeoutExpired`` once ``deadline`` (``time.monotonic()``) has passed.
    """
    offset, pending = 0, b""
    while True:
        try:
            returncode = process.wait(timeout=max(0.0, min(PROGRESS_POLL_S, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            returncode = None
        with log_path.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
        offset += len(chunk)
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            if line.startswith(PROGRESS_PREFIX):
                log.info("%s", line.decode(errors="replace"))
        if returncode is not None:
            return returncode
        if time.monotonic() >= deadline:
            raise subprocess.TimeoutExpired(process.args, deadline)


def run_blender_shard(spec: dict[str, Any], workdir: Path, timeout_s: float) -> BlenderRun:
    """Run ``python -m render.blender_worker`` on ``spec`` with outputs, spec and log in ``workdir``.

    ``spec`` follows :mod:`render.blender_worker`; its ``output_dir`` is set to ``workdir`` (giving
    another folder is an error). Raises :class:`BlenderTimeoutError` after ``timeout_s`` seconds
    (the process group is killed, nothing is left running) and :class:`BlenderCrashError` on a
    non-zero exit; both carry the last lines of ``workdir/blender.log``.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    workdir = Path(workdir).resolve()
    given = spec.get("output_dir")
    if given is not None and Path(given).resolve() != workdir:
        raise ValueError(f"spec output_dir {given!r} differs from workdir {str(workdir)!r}; leave output_dir out")
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, log_path = workdir / SPEC_NAME, workdir / LOG_NAME
    spec_path.write_text(json.dumps({**spec, "output_dir": str(workdir)}, indent=2, sort_keys=True))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "render.blender_worker", str(spec_path)]
    start = time.perf_counter()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   preexec_fn=die_with_parent)  # noqa: PLW1509 (it only calls prctl)
        try:
            returncode = _wait_relaying_progress(process, log_path, deadline=time.monotonic() + timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise BlenderTimeoutError(
                f"Blender shard run exceeded its timeout of {timeout_s:g} s and was killed; raise "
                f"render.timeout_s or lower the shard size (log: {log_path})", log_tail(log_path)) from None
        except BaseException:
            _kill_group(process)
            raise
        finally:
            # A worker that exited may leave children behind in its group; never leak them.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    seconds = time.perf_counter() - start
    if returncode != 0:
        raise BlenderCrashError(f"Blender shard run exited with code {returncode} after {seconds:.1f} s "
                                f"(log: {log_path})", returncode, log_tail(log_path))
    stats = [_read_done(workdir, subject_id) for subject_id in spec["subject_ids"]]
    return BlenderRun(
        output_dir=workdir, log_path=log_path, seconds=seconds,
        subject_seconds={s["subject_id"]: float(s["render_seconds"]) for s in stats},
        blender_version=str(stats[0]["blender_version"]) if stats else "",
    )


def _read_done(output_dir: Path, subject_id: int) -> dict[str, Any]:
    path = subject_dir(output_dir, subject_id) / DONE_NAME
    if not path.is_file():
        raise InvalidRenderError(f"subject {subject_id}: no {DONE_NAME} marker at {path}; the worker did not finish it")
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidRenderError(f"subject {subject_id}: {DONE_NAME} marker {path} is not JSON ({exc})") from exc
    if not isinstance(stats, dict) or stats.get("subject_id") != subject_id or "render_seconds" not in stats:
        raise InvalidRenderError(f"subject {subject_id}: {DONE_NAME} marker {path} has unexpected content {stats!r}")
    return stats


def load_view(path: Path, resolution: int) -> np.ndarray:
    """Decode one rendered view as RGBA uint8 (H, W, 4), checking its size; InvalidRenderError otherwise."""
    try:
        with Image.open(path) as image:
            image.load()
            mode, size = image.mode, image.size
            rgba = np.asarray(image.convert("RGBA"))
    except (OSError, ValueError) as exc:
        raise InvalidRenderError(f"view file {path} is not a readable PNG ({exc})") from exc
    if mode != "RGBA":
        raise InvalidRenderError(f"view file {path} has mode {mode}, expected RGBA (transparent film)")
    if size != (resolution, resolution):
        raise InvalidRenderError(f"view file {path} is {size[0]}x{size[1]}, expected {resolution}x{resolution}")
    return rgba  # (H, W, 4)


def validate_outputs(workdir: str | Path, subject_ids: Sequence[int], views: int, resolution: int) -> None:
    """Check the worker's files in ``workdir`` for every subject, else raise :class:`InvalidRenderError`.

    Each subject needs its DONE marker, a recipe.json of the same subject, and exactly ``views``
    PNGs ``view_0000.png`` ... decodable as RGBA ``resolution`` x ``resolution`` whose alpha is not
    empty (every view shows part of the avatar).
    """
    for subject_id in subject_ids:
        folder = subject_dir(workdir, subject_id)
        _read_done(Path(workdir), subject_id)
        recipe_path = folder / RECIPE_NAME
        try:
            recipe = json.loads(recipe_path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidRenderError(f"subject {subject_id}: {recipe_path} is missing or not JSON ({exc})") from exc
        if not isinstance(recipe, dict) or recipe.get("subject_id") != subject_id:
            raise InvalidRenderError(f"subject {subject_id}: {recipe_path} describes subject "
                                     f"{recipe.get('subject_id') if isinstance(recipe, dict) else recipe!r}")
        expected = {view_name(k) for k in range(views)}
        found = {p.name for p in folder.glob("*.png")}
        if found != expected:
            raise InvalidRenderError(
                f"subject {subject_id}: expected {views} views in {folder}, missing "
                f"{sorted(expected - found)[:5]}, unexpected {sorted(found - expected)[:5]}")
        for k in range(views):
            path = folder / view_name(k)
            rgba = load_view(path, resolution)
            if not (rgba[..., 3] > 127).any():
                raise InvalidRenderError(f"subject {subject_id} view {k}: {path} has an empty alpha mask; "
                                         "the avatar is outside the camera's field of view")
