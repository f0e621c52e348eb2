"""Fixtures shared by the flow tests: one temporary Prefect server for the whole session, a local Ray."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import ray
from prefect.testing.utilities import prefect_test_harness

from workflows.ray_runner import init_local_ray, local_ray_options, ray_runtime_env


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[float]:
    """A temporary Prefect server and database for the session; yields its start-up seconds."""
    start = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        seconds = time.perf_counter() - start
        print(f"prefect_test_harness started in {seconds:.1f} s")
        yield seconds


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance on 2 CPUs for one test module, with the project importable by its workers, which find
    this instance beside any other on the machine (as a command's own instance)."""
    init_local_ray({**local_ray_options(2, include_dashboard=False), "runtime_env": ray_runtime_env(None)})
    try:
        yield
    finally:
        ray.shutdown()
