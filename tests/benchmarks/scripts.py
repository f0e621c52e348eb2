"""A benchmark script loaded as a module: the scripts live in ``benchmarks/``, outside any package."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@contextlib.contextmanager
def loaded_script(name: str) -> Iterator[ModuleType]:
    """``benchmarks/{name}.py`` as module ``name``, registered in ``sys.modules`` while in use.

    Registered because a dataclass defined in the script looks its module up there while it loads.
    """
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
