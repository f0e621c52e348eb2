"""No credential in a tracked file: every secret-looking assignment is empty, a reference resolved
from the environment or a Secret, or a clearly test-only value (tests/infra/secrets_scan.py)."""

from __future__ import annotations

import subprocess

from .compose_cli import REPO
from .secrets_scan import scan_repo, scan_text, tracked_files


def test_tracked_files_hold_no_credential() -> None:
    names = tracked_files(REPO)
    assert {"docker-compose.yml", ".env.example", "infra/kubernetes/raycluster.yaml"} <= set(names)
    assert ".env" not in names
    found = scan_repo(REPO)
    assert not found, "credentials in tracked files:\n" + "\n".join(map(str, found))


def test_env_is_ignored_by_git() -> None:
    check = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, check=False)
    assert check.returncode == 0, ".env must be listed in .gitignore"
    example = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=REPO, check=False)
    assert example.returncode == 1


def test_the_scan_finds_credentials() -> None:
    lines = [
        "POSTGRES_PASSWORD=hunter2",                               # env file
        "  AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI",                   # YAML
        'API_KEY = "sk-live-1234"',                                # Python literal
        '  "client_secret": "abcdef",',                            # JSON
        "url: postgresql+asyncpg://prefect:hunter2@postgres/db",   # URL password
        "POSTGRES_PASSWORD=test-only-postgres-password",           # allowed: test-only
        "RAY_AUTH_TOKEN: ${RAY_AUTH_TOKEN:?set RAY_AUTH_TOKEN}",   # allowed: from the environment
        "url: postgresql+asyncpg://${USER}:${POSTGRES_PASSWORD}@postgres/db",
        "token = match.group(1)",                                  # allowed in Python: code, not a literal
        'SECRET_NAME = "AWS_SECRET_ACCESS_KEY"',                   # allowed: names a variable
        "tokenizers==0.23.3",                                      # allowed: a version pin
    ]
    text = "\n".join(lines)
    assert [(f.line, f.key) for f in scan_text(text, "settings.env")] == [
        (1, "POSTGRES_PASSWORD"), (2, "AWS_SECRET_ACCESS_KEY"), (3, "API_KEY"), (4, "client_secret"),
        (5, "URL password"), (9, "token")]
    assert [(f.line, f.key) for f in scan_text(text, "settings.py")] == [
        (3, "API_KEY"), (4, "client_secret"), (5, "URL password")]
    markdown = "Credentials: Docker secrets\n```bash\nexport AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI\n```\n"
    assert [(f.line, f.key) for f in scan_text(markdown, "README.md")] == [(3, "AWS_SECRET_ACCESS_KEY")]
