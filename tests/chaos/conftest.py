"""Fixtures of the chaos suite: a migrated Prefect database to copy, a shared Prefect API, a rendered micro corpus.

Every ``rodin`` run of the suite is a real subprocess. A run that must own its Prefect server (the
kill tests, two runs at once) gets a private ``PREFECT_HOME`` holding a copy of a database migrated
once per session, so that its server starts without migrating; the other runs report to one
session server (``PREFECT_API_URL``), as a user's runs against a configured server do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3_server import die_with_parent
from workflows.prefect_backend import stop_server, wait_healthy

from .harness import Done, run, run_env
from .scenarios import FIT_ARGS, RENDER_ARGS, TRAIN_ARGS

STARTUP_S = 900
"""A fresh Prefect database is migrated at its first start; on a busy shared core that took minutes."""
BASE_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",
            "PREFECT_LOGGING_LEVEL": "WARNING"}


def _server(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, **BASE_ENV, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "0",
           "PREFECT_SERVER_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    import prefect

    return subprocess.Popen([sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
                             "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
                             str(port), "--log-level", "error", "--lifespan", "on"], env=env,
                            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)  # noqa: PLW1509


def _free_port() -> int:
    from tests.s3_server import free_ports

    return free_ports(1)[0]


@pytest.fixture(scope="session")
def prefect_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``PREFECT_HOME`` whose database is migrated (its server was started once, then stopped)."""
    home = tmp_path_factory.mktemp("prefect-template")
    port = _free_port()
    server = _server(home, port)
    try:
        wait_healthy(server, f"http://127.0.0.1:{port}/api", STARTUP_S)
    finally:
        stop_server(server)
    return home


def private_home(template: Path, folder: Path) -> dict[str, str]:
    """The environment of a run that starts its own Prefect server, on a copy of the migrated database."""
    shutil.copytree(template, folder)
    return {**BASE_ENV, "PREFECT_HOME": str(folder), "PREFECT_API_URL": ""}


@pytest.fixture(scope="session")
def prefect_api(prefect_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's Prefect API URL: a server on a copy of the migrated database."""
    home = tmp_path_factory.mktemp("prefect-shared") / "home"
    shutil.copytree(prefect_template, home)
    port = _free_port()
    server = _server(home, port)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(server, url, STARTUP_S)
        yield url
    finally:
        stop_server(server)


@pytest.fixture
def shared_env(prefect_api: str) -> dict[str, str]:
    """The environment of a run reporting to the session's Prefect server."""
    return {**BASE_ENV, "PREFECT_API_URL": prefect_api}


@pytest.fixture(scope="session")
def rendered(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro corpus rendered once (2 shards of 1 subject); tests change copies of it."""
    root = tmp_path_factory.mktemp("rendered") / "data"
    done: Done = run(["render", "--out", str(root), *RENDER_ARGS, "--runner", "threads"],
                     run_env({**BASE_ENV, "PREFECT_API_URL": prefect_api}))
    assert done.code == 0, done.err[-4000:]
    return root


@pytest.fixture
def corpus(rendered: Path, tmp_path: Path) -> Path:
    """A copy of the rendered micro corpus for one test."""
    root = tmp_path / "data"
    shutil.copytree(rendered, root)
    return root


@pytest.fixture(scope="session")
def fitted_root(rendered: Path, prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The micro corpus fitted once (3 fitting shards of 1 subject)."""
    root = tmp_path_factory.mktemp("fitted") / "data"
    shutil.copytree(rendered, root)
    done = run(["fit", "--renders", str(root), *FIT_ARGS, "--runner", "threads"],
               run_env({**BASE_ENV, "PREFECT_API_URL": prefect_api}))
    assert done.code == 0, done.err[-4000:]
    return root


@pytest.fixture
def fitted(fitted_root: Path, tmp_path: Path) -> Path:
    """A copy of the fitted micro corpus for one test."""
    root = tmp_path / "fitted"
    shutil.copytree(fitted_root, root)
    return root


fitted_copy = fitted


@pytest.fixture(scope="session")
def trained_root(fitted_root: Path, prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fitted micro corpus with a base model trained for 2 steps."""
    root = tmp_path_factory.mktemp("trained") / "data"
    shutil.copytree(fitted_root, root)
    done = run(["train", "base", "--out", str(root), *FIT_ARGS, *TRAIN_ARGS],
               run_env({**BASE_ENV, "PREFECT_API_URL": prefect_api}))
    assert done.code == 0, done.err[-4000:]
    return root


@pytest.fixture
def trained_copy(trained_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "trained"
    shutil.copytree(trained_root, root)
    return root
