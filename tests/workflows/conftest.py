"""Fixtures shared by the flow tests: one temporary Prefect server for the whole session."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[float]:
    """A temporary Prefect server and database for the session; yields its start-up seconds."""
    start = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        seconds = time.perf_counter() - start
        print(f"prefect_test_harness started in {seconds:.1f} s")
        yield seconds
