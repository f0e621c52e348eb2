"""infra/docker/Dockerfile and .dockerignore: the image installs the project exactly as the Makefile and
the README do, on Python 3.11, with bpy, as a non-root user, and no credential enters it."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

from .secrets_scan import SECRET_KEY

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PIP_INSTALL = re.compile(r"(?:^|\s)(?P<python>\S*python[\d.]*)\s+-m\s+pip\s+install\s+(?P<args>[^&;\n]+)")


def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile: continuation lines joined, comments dropped, blanks single."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(" ".join(current.split()))
        current = ""
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "") for parts in (entry.split(None, 1) for entry in logical)]


def pip_installs(text: str) -> list[list[str]]:
    """The arguments of every ``python -m pip install`` in ``text``, whichever interpreter path runs it."""
    return [shlex.split(match.group("args")) for match in PIP_INSTALL.finditer(text)]


def dockerfile_pip_installs(text: str) -> list[list[str]]:
    return [args for name, rest in instructions(text) if name == "RUN" for args in pip_installs(rest)]


def makefile_pip_installs(text: str) -> list[list[str]]:
    return [args for line in text.splitlines() if line.startswith("\t") for args in pip_installs(line)]


def readme_pip_installs(text: str) -> list[list[str]]:
    """The ``pip install`` lines of README's "Run on a cluster" section."""
    return pip_installs(text.split("## Run on a cluster", 1)[1].split("\n## ", 1)[0])


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` ``patterns`` leave ``path`` out of the build context (the last
    matching pattern wins; ``!`` includes again; a pattern matching a folder covers its content)."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern[1:] if negate else pattern
        if any(fnmatch.fnmatchcase(candidate, bare) or fnmatch.fnmatchcase(candidate, bare.removeprefix("**/"))
               for candidate in candidates):
            result = not negate
    return result


def dockerignore_patterns(text: str) -> list[str]:
    return [line.strip().rstrip("/") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_pip_steps_equal_the_makefile_and_the_readme() -> None:
    docker = dockerfile_pip_installs(DOCKERFILE.read_text())
    make = makefile_pip_installs((REPO / "Makefile").read_text())
    readme = readme_pip_installs((REPO / "README.md").read_text(encoding="utf-8"))
    assert make == [["--quiet", "--upgrade", "pip"], ["--quiet", "-r", "requirements.txt"],
                    ["--quiet", "--no-deps", "-e", "."]]
    assert docker == make
    assert readme == make


def test_a_different_pip_step_is_seen() -> None:
    text = DOCKERFILE.read_text().replace("install --quiet -r requirements.txt", "install -r requirements.txt")
    assert dockerfile_pip_installs(text) != makefile_pip_installs((REPO / "Makefile").read_text())
    assert instructions("# c\nRUN a \\\n  # inside\n  && b\nUSER x\n") == [("RUN", "a && b"), ("USER", "x")]


def test_python_311_base_with_bpy() -> None:
    steps = instructions(DOCKERFILE.read_text())
    base = next(rest for name, rest in steps if name == "FROM")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-\w+", base), base
    assert "python3.11" in (REPO / "Makefile").read_text() and '">=3.11,<3.12"' in (REPO / "pyproject.toml").read_text()
    requirements = (REPO / "requirements.txt").read_text().splitlines()
    bpy = [line for line in requirements if line.startswith("bpy")]
    assert bpy == ["bpy==5.0.1"] and '"bpy==5.0.1"' in (REPO / "pyproject.toml").read_text()


def test_requirements_are_installed_before_the_code_is_copied() -> None:
    steps = instructions(DOCKERFILE.read_text())
    copy_requirements = steps.index(("COPY", "requirements.txt pyproject.toml ./"))
    install_requirements = next(i for i, (name, rest) in enumerate(steps) if "-r requirements.txt" in rest)
    copy_all = next(i for i, (name, rest) in enumerate(steps) if name == "COPY" and rest.endswith(". ."))
    install_project = next(i for i, (name, rest) in enumerate(steps) if "--no-deps -e ." in rest)
    assert copy_requirements < install_requirements < copy_all < install_project


def test_the_image_runs_as_a_non_root_user() -> None:
    steps = instructions(DOCKERFILE.read_text())
    users = [i for i, (name, _) in enumerate(steps) if name == "USER"]
    assert users, "the Dockerfile never leaves root"
    user = steps[users[-1]][1]
    assert user not in ("root", "0")
    created = [re.search(r"useradd\b[^&]*?\s(\w+)\s*(?:&&|$)", rest) for name, rest in steps[:users[-1]] if name == "RUN"]
    assert user in {match.group(1) for match in created if match}, f"USER {user} is never created"
    assert all(name not in ("CMD", "ENTRYPOINT") for name, _ in steps[:users[-1]])


def test_no_credential_is_baked_into_the_image() -> None:
    steps = instructions(DOCKERFILE.read_text())
    names = [word.split("=", 1)[0] for name, rest in steps if name in ("ENV", "ARG") for word in shlex.split(rest)]
    assert names and not [name for name in names if SECRET_KEY.search(name)], names
    assert not SECRET_KEY.search("PIP_NO_CACHE_DIR") and SECRET_KEY.search("AWS_SECRET_ACCESS_KEY")


def test_dockerignore_keeps_credentials_and_local_state_out() -> None:
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    for path in (".env", ".env.production", ".git/config", ".venv/bin/python", "data/tiny/renders/x.json",
                 "rodin_core/__pycache__/storage.cpython-311.pyc", "rodin.egg-info/PKG-INFO"):
        assert ignored(path, patterns), path
    for path in ("requirements.txt", "pyproject.toml", "README.md", "rodin_core/storage.py",
                 "infra/docker/healthcheck.py", "infra/prefect/work-pool.json", "prefect.yaml", ".env.example"):
        assert not ignored(path, patterns), path
    assert not ignored(".env", [p for p in patterns if p != ".env" and not p.startswith(".env.")])
