"""The cluster's Prefect server (on the Postgres database) and its process worker.

Both run under the run folder's ``PREFECT_HOME``, so they never touch the user's Prefect profile.
The worker polls the ``rodin-process`` work pool of ``prefect.yaml`` (created by the worker when
missing); flow runs it starts inherit its environment: the API URL, the S3 credentials and Ray's
token.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

PREFECT = str(Path(sys.executable).with_name("prefect"))
WORK_POOL = "rodin-process"


def server_env(home: Path, database_url: str) -> dict[str, str]:
    """Settings of the server: Postgres through asyncpg, no analytics."""
    return {"PREFECT_HOME": str(home), "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_API_HOST": "127.0.0.1"}


def server_command(port: int) -> list[str]:
    return [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]


def worker_command(pool: str) -> list[str]:
    return [PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--name", "local-cluster"]


def _call(url: str, body: dict | None = None, timeout_s: float = 5.0) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read() or b"null")


def health(api_url: str) -> str | None:
    """None when ``api_url/health`` answers, else why not."""
    try:
        _call(f"{api_url}/health")
        return None
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def online_workers(api_url: str, pool: str) -> list[str]:
    """Names of the workers of ``pool`` the server sees online ([] while the pool does not exist)."""
    try:
        rows = _call(f"{api_url}/work_pools/{pool}/workers/filter", {})
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
        return []
    return [row["name"] for row in rows or [] if row.get("status") == "ONLINE"]
