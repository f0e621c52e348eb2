"""Relay the log records of the host-side stage code (e.g. Blender progress) into Prefect run logs, and keep
tracebacks off the console.

A failed task or flow run is logged by Prefect with its traceback. On the terminal of a ``rodin``
command that is noise around the command's own one-line error, so :func:`console_without_tracebacks`
prints such records without it; the run's log on the Prefect server and the shard's failure record
keep the traceback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger
from prefect.logging.handlers import PrefectConsoleHandler


class _WithoutTraceback(logging.Formatter):
    """Formats a record as ``inner`` does, leaving out its traceback and stack."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        if not (record.exc_info or record.exc_text or record.stack_info):
            return self.inner.format(record)
        bare = logging.makeLogRecord(record.__dict__)  # other handlers still see the traceback
        bare.exc_info = bare.exc_text = bare.stack_info = None
        return self.inner.format(bare)


def console_without_tracebacks() -> None:
    """From now on, Prefect's console handlers in this process print records without their tracebacks."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    for handler in {h for logger in loggers for h in logger.handlers}:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, _WithoutTraceback):
            handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))


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
    share the logger: the last one to close restores its level and propagation. Tracebacks stay off this
    process's console (:func:`console_without_tracebacks`): a Ray worker's console is the driver's terminal.
    """
    console_without_tracebacks()
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
