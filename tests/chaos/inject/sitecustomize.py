"""Faults injected into every Python process of a ``rodin`` run: the driver, its Ray workers, Blender.

The chaos tests put this folder first on ``PYTHONPATH`` (Ray workers and Blender inherit it) and
name the faults in ``RODIN_CHAOS`` as ``name=argument`` pairs joined by ``;``; each process then
patches the real code right after it is imported. ``RODIN_CHAOS_DIR`` is a folder where the faults
leave markers the test reads (``paused-*``, ``blender-*``). Without ``RODIN_CHAOS`` nothing happens.

- ``enospc=STAGE``: writing a manifest of ``STAGE`` writes half of it, then fails with ENOSPC;
- ``pause=TEXT`` (not with ``enospc``): writing a local file whose path holds ``TEXT`` writes it, leaves a
  ``paused-PID-N`` marker and sleeps, so that the test can kill the run at that moment; ``pause=once:TEXT``
  pauses the first such write of the run only;
- ``blender=crash:N`` / ``blender=hang:N``: the first ``N`` Blender runs die of SIGSEGV / never end
  after their first view (``N`` 0: every run);
- ``sigterm=MODULE``: the ``rodin`` process sends itself SIGTERM right after it has imported ``MODULE``
  (as a SIGTERM from outside landing at that moment of its start-up) and leaves a ``sigterm-*`` marker.
"""

from __future__ import annotations

import errno
import importlib.abc
import importlib.machinery
import os
import signal
import sys
import time
from pathlib import Path

FAULTS = dict(item.split("=", 1) for item in os.environ.get("RODIN_CHAOS", "").split(";") if "=" in item)
MARKERS = Path(os.environ.get("RODIN_CHAOS_DIR", "."))
PAUSE_S = 600


class _AfterImport(importlib.abc.MetaPathFinder):
    """Run ``patch(module)`` right after module ``name`` is imported."""

    def __init__(self, name: str, patch) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader, patch = spec.loader, self.patch

        class Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                patch(module)

        spec.loader = Loader()
        return spec


def _marker(prefix: str) -> Path:
    MARKERS.mkdir(parents=True, exist_ok=True)
    path = MARKERS / f"{prefix}-{os.getpid()}-{time.monotonic_ns()}"
    path.write_text(" ".join(sys.orig_argv))
    return path


def _full_disk(stage: str):
    def patch(local) -> None:
        real = local.LocalFileSystem.pipe_file

        def pipe_file(self, path, value, *args, **kwargs):
            if f"/{stage}/manifests/" in str(path):
                real(self, path, bytes(value)[: len(value) // 2], *args, **kwargs)
                _marker("enospc")
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real(self, path, value, *args, **kwargs)

        local.LocalFileSystem.pipe_file = pipe_file
    return patch


def _pause(how: str):
    once, text = how.startswith("once:"), how.removeprefix("once:")

    def patch(local) -> None:
        real = local.LocalFileSystem.pipe_file

        def pipe_file(self, path, value, *args, **kwargs):
            done = real(self, path, value, *args, **kwargs)
            if text in str(path) and not (once and list(MARKERS.glob("paused-*"))):
                _marker("paused").write_text(str(path))
                time.sleep(PAUSE_S)
            return done

        local.LocalFileSystem.pipe_file = pipe_file
    return patch


def _blender(how: str):
    kind, _, times = how.partition(":")
    runs = len(list(MARKERS.glob("blender-*"))) if MARKERS.is_dir() else 0
    _marker("blender")
    if int(times or 0) and runs >= int(times):
        return None

    def patch(scene) -> None:
        def render_still(*args, **kwargs):
            if kind == "crash":
                os.kill(os.getpid(), signal.SIGSEGV)
            time.sleep(PAUSE_S * 6)

        scene.render_still = render_still
    return patch


def _sigterm(module) -> None:
    _marker("sigterm")
    os.kill(os.getpid(), signal.SIGTERM)


_LOCAL = "fsspec.implementations.local"
if "enospc" in FAULTS:
    sys.meta_path.insert(0, _AfterImport(_LOCAL, _full_disk(FAULTS["enospc"])))
elif "pause" in FAULTS:
    sys.meta_path.insert(0, _AfterImport(_LOCAL, _pause(FAULTS["pause"])))
if "blender" in FAULTS and "render.blender_worker" in sys.orig_argv:
    _patch = _blender(FAULTS["blender"])
    if _patch is not None:
        sys.meta_path.insert(0, _AfterImport("render.blender_scene", _patch))
if "sigterm" in FAULTS and "workflows.cli" in sys.orig_argv:
    sys.meta_path.insert(0, _AfterImport(FAULTS["sigterm"], _sigterm))
