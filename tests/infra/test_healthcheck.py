"""infra/docker/healthcheck.py: the healthchecks of docker-compose.yml, against a real HTTP server and /proc."""

from __future__ import annotations

import http.server
import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from .compose_cli import REPO

SCRIPT = REPO / "infra" / "docker" / "healthcheck.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = load_script()


class Statuses(http.server.BaseHTTPRequestHandler):
    """Answers ``/<status>`` with that HTTP status."""

    def do_GET(self) -> None:
        self.send_response(int(self.path.strip("/")))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Statuses)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_http_statuses(server: str) -> None:
    assert healthcheck.probe_http(f"{server}/200") is None
    assert healthcheck.probe_http(f"{server}/403") is None  # up, wants credentials
    assert healthcheck.probe_http(f"{server}/403", ok_below=300) == f"{server}/403 answered HTTP 403 (healthy is below 300)"
    assert healthcheck.probe_http(f"{server}/503") == f"{server}/503 answered HTTP 503 (healthy is below 500)"


def test_a_closed_port_is_unhealthy(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    why = healthcheck.probe_http(closed, timeout_s=2)
    assert why is not None and why.startswith(f"{closed} did not answer: ")
    assert healthcheck.main(["http", closed, "--timeout", "2"]) == 1
    assert capsys.readouterr().err.startswith(f"{closed} did not answer")
    assert healthcheck.main(["http", f"{server}/204", "--ok-below", "300"]) == 0


def test_process_by_name(tmp_path: Path) -> None:
    (tmp_path / "12").mkdir()
    (tmp_path / "12" / "comm").write_text("raylet\n")
    (tmp_path / "13").mkdir()
    (tmp_path / "13" / "comm").write_text("gcs_server\n")
    assert healthcheck.probe_process("raylet", tmp_path) is None
    assert healthcheck.probe_process("ray", tmp_path) == "no process named 'ray' is running"
    this = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert healthcheck.main(["process", this]) == 0
    assert healthcheck.main(["process", "no-such-process-name"]) == 1
