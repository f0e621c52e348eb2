"""A private Postgres cluster for the Prefect server: ``initdb`` + ``pg_ctl`` on 127.0.0.1.

The server listens on TCP 127.0.0.1 only (no Unix socket) with ``trust`` authentication for the
database user ``rodin``: the local cluster is a single-machine development setup. Postgres refuses
to run as root; under root the data folder belongs to the ``postgres`` system user, and lives in a
short folder under the system temp dir that that user can reach.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .processes import ClusterError

DB_USER = "rodin"
DB_NAME = "prefect"
SYSTEM_USER = "postgres"
INSTALL_HINT = "install them with `make cluster-deps` (apt-get install postgresql) or put them on PATH"


def find_binary(name: str) -> str:
    """``name`` (initdb, pg_ctl, createdb) on PATH, else in the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return candidates[-1]
    raise ClusterError(f"PostgreSQL's `{name}` was not found on PATH nor in /usr/lib/postgresql/*/bin; "
                       f"{INSTALL_HINT}")


def run_as() -> str | None:
    """The system user the Postgres commands run as: ``postgres`` under root, else the caller (None)."""
    return SYSTEM_USER if os.geteuid() == 0 else None


def data_dir(run_dir: Path) -> tuple[Path, str | None]:
    """Where the cluster's files go, and the scratch folder to remove with it (under root only)."""
    user = run_as()
    if user is None:
        return run_dir / "postgres", None
    scratch = tempfile.mkdtemp(prefix="rodin-pg-")
    shutil.chown(scratch, user)
    return Path(scratch) / "data", scratch


def _run(args: list[str], log_path: Path, what: str) -> None:
    with log_path.open("ab") as log:
        done = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              user=run_as(), cwd="/", check=False, timeout=300)
    if done.returncode != 0:
        raise ClusterError(f"{what} failed with code {done.returncode}; see {log_path}")


def init_cluster(pg_data: Path, log_path: Path) -> None:
    """``initdb`` a new cluster owned by ``rodin`` with trust authentication on 127.0.0.1."""
    _run([find_binary("initdb"), "-D", str(pg_data), "-U", DB_USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
         log_path, "initdb")


def start_server(pg_data: Path, port: int, log_path: Path) -> int:
    """``pg_ctl start`` on 127.0.0.1:``port``, wait until it accepts connections; the postmaster's PID."""
    options = f"-h 127.0.0.1 -p {port} -k '' -c max_connections=100 -c fsync=off"
    _run([find_binary("pg_ctl"), "-D", str(pg_data), "-o", options, "-w", "-t", "120", "start"],
         log_path, "pg_ctl start")
    return int((pg_data / "postmaster.pid").read_text().split()[0])


def create_database(port: int, log_path: Path) -> str:
    """Create the Prefect database; its SQLAlchemy URL for asyncpg."""
    _run([find_binary("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER, DB_NAME],
         log_path, "createdb")
    return f"postgresql+asyncpg://{DB_USER}@127.0.0.1:{port}/{DB_NAME}"


def stop_server(pg_data: Path, log_path: Path) -> None:
    """``pg_ctl stop -m fast``; ignored when the cluster is already down."""
    try:
        _run([find_binary("pg_ctl"), "-D", str(pg_data), "-m", "fast", "-w", "-t", "60", "stop"],
             log_path, "pg_ctl stop")
    except ClusterError:
        pass
