"""relay_logs forwards the stage code's records of the calling thread only, and restores the logger; the console
prints failures without tracebacks."""

import logging
import threading

from workflows import logs


class _Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def log(self, level: int, fmt: str, *args: object) -> None:
        self.lines.append((level, fmt % args))


def test_relay_forwards_this_threads_records_only(monkeypatch):
    recorder = _Recorder()
    monkeypatch.setattr(logs, "get_run_logger", lambda: recorder)
    source = logging.getLogger("render.test_relay")
    parent = logging.getLogger("render")
    level_before, handlers_before = parent.level, list(parent.handlers)
    propagated = []
    root_handler = logging.Handler()
    root_handler.emit = propagated.append
    logging.getLogger().addHandler(root_handler)
    with logs.relay_logs("render"):
        source.info("subject %d/%d", 1, 2)
        source.debug("too detailed")
        other = threading.Thread(target=lambda: source.warning("from a sibling task"))
        other.start()
        other.join()
    logging.getLogger().removeHandler(root_handler)
    source.info("after the block")
    assert recorder.lines == [(logging.INFO, "subject 1/2")]
    assert not [r for r in propagated if r.thread == threading.get_ident()]  # not printed twice
    assert parent.level == level_before and parent.handlers == handlers_before and parent.propagate


def test_overlapping_relays_in_threads_restore_the_logger_once_all_close(monkeypatch):
    monkeypatch.setattr(logs, "get_run_logger", lambda: _Recorder())
    parent = logging.getLogger("render")
    level_before = parent.level
    first_open, second_open, first_closed = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with logs.relay_logs("render"):
            first_open.set()
            second_open.wait()
        first_closed.set()

    def second() -> None:
        first_open.wait()
        with logs.relay_logs("render"):
            second_open.set()
            first_closed.wait()
            assert not parent.propagate  # still relayed while this task runs

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert parent.propagate and parent.level == level_before


def test_the_console_prints_failures_without_tracebacks_other_handlers_keep_them():
    import io

    from prefect.logging.handlers import PrefectConsoleHandler

    from workflows.logs import console_without_tracebacks

    logger = logging.getLogger("prefect.task_runs.console-test")
    stream, kept = io.StringIO(), []
    console = PrefectConsoleHandler(stream=stream)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    keeper = logging.Handler()
    keeper.emit = kept.append
    logger.addHandler(keeper)
    logger.addHandler(console)
    try:
        console_without_tracebacks()
        console_without_tracebacks()  # idempotent
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            logger.exception("Task run failed with exception: %r - Retries are exhausted", "OSError(28)")
        logger.error("plain %s", "line")
    finally:
        logger.removeHandler(console)
        logger.removeHandler(keeper)
    printed = stream.getvalue()
    assert "Traceback" not in printed and "No space left on device" not in printed
    assert "ERROR Task run failed with exception: 'OSError(28)' - Retries are exhausted" in printed
    assert "ERROR plain line" in printed
    assert kept[0].exc_info is not None and kept[0].exc_info[0] is OSError  # the run's API log keeps it
