"""Relay the log records of the host-side stage code (e.g. Blender progress) into Prefect run logs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger


class _RunLoggerRelay(logging.Handler):
    """Forwards records emitted by one thread to the current Prefect run logger."""

    def __init__(self, run_logger: logging.LoggerAdapter, level: int) -> None:
        super().__init__(level)
        self.run_logger = run_logger
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:  # tasks running in sibling threads keep their own logs
            self.run_logger.log(record.levelno, "%s", record.getMessage())


_LOCK = threading.Lock()
_ACTIVE: dict[str, tuple[int, int, bool]] = {}
"""logger name -> (relays open on it, its level and propagate flag before the first one opened)."""


@contextmanager
def relay_logs(logger_name: str, level: int = logging.INFO) -> Iterator[None]:
    """While the block runs, records of ``logger_name`` from this thread go to the run's log.

    They stop propagating meanwhile: the run logger prints them already, so a root handler (a Ray
    worker installs one) would print them twice. Relays of tasks running side by side in threads
    share the logger: the last one to close restores its level and propagation.
    """
    source = logging.getLogger(logger_name)
    handler = _RunLoggerRelay(get_run_logger(), level)
    with _LOCK:
        count, previous, propagate = _ACTIVE.get(logger_name, (0, source.level, source.propagate))
        _ACTIVE[logger_name] = (count + 1, previous, propagate)
        source.addHandler(handler)
        source.propagate = False
        if source.getEffectiveLevel() > level:
            source.setLevel(level)
    try:
        yield
    finally:
        with _LOCK:
            source.removeHandler(handler)
            count, previous, propagate = _ACTIVE.pop(logger_name)
            if count > 1:
                _ACTIVE[logger_name] = (count - 1, previous, propagate)
            else:
                source.setLevel(previous)
                source.propagate = propagate
