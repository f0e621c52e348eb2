"""Child processes that do not outlive their parent (Linux ``PR_SET_PDEATHSIG``).

A child started with ``preexec_fn=die_with_parent`` gets SIGKILL from the kernel when the thread
that started it ends, however it ends: a parent killed with SIGKILL runs no ``finally`` and no
``atexit``, and would otherwise leave the child running. The temporary Prefect server of a
``rodin`` command and the Blender process of each render shard attempt are started so. Elsewhere
than on Linux it does nothing.
"""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def _prctl() -> ctypes._CFuncPtr | None:
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True).prctl


_PRCTL = _prctl()
"""Looked up once, here: the child between fork and exec then only calls it, and never runs the dynamic
loader, whose lock another thread of the parent may have held at the fork."""


def die_with_parent() -> None:
    """In a child, before exec (``preexec_fn``): get SIGKILL when the thread that started it ends."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
