"""Finding and stopping the local cluster's processes by session (infra.local_cluster.processes)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.local_cluster import processes
from infra.local_cluster.processes import (
    ClusterError,
    assignable_ports,
    free_ports,
    is_alive,
    session_members,
    spawn,
    stop_session,
    wait_for,
)

FORKS_A_CHILD = "import subprocess, time; subprocess.Popen(['sleep', '600']); time.sleep(600)"
IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
                  "time.sleep(600)"


def _wait_members(sid: int, count: int) -> list[int]:
    deadline = time.monotonic() + 60
    while len(members := session_members(sid)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return members


def test_a_session_and_its_forked_children_are_found_and_stopped(tmp_path: Path) -> None:
    process = spawn([sys.executable, "-c", FORKS_A_CHILD], tmp_path / "log", {}, tmp_path)
    members = _wait_members(process.pid, 2)
    assert process.pid in members and len(members) == 2
    child = next(pid for pid in members if pid != process.pid)
    stopped = stop_session(process.pid, grace_s=10)
    process.wait(10)
    assert sorted(stopped) == sorted(members)
    assert session_members(process.pid) == [] and not is_alive(child)


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    process = spawn([sys.executable, "-c", IGNORES_SIGTERM], tmp_path / "log", {}, tmp_path)
    deadline = time.monotonic() + 60
    while "ready" not in (tmp_path / "log").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    start = time.monotonic()
    stop_session(process.pid, grace_s=1.0)
    assert process.wait(10) == -9
    assert time.monotonic() - start >= 1.0


def test_a_zombie_is_not_alive() -> None:
    process = subprocess.Popen(["true"])
    deadline = time.monotonic() + 30
    while is_alive(process.pid) and time.monotonic() < deadline:  # exited but not reaped: a zombie
        time.sleep(0.05)
    assert not is_alive(process.pid)
    process.wait()
    assert not is_alive(None) and not is_alive(0)


def test_wait_for_names_the_component_its_exit_code_and_its_log(tmp_path: Path) -> None:
    log = tmp_path / "thing.log"
    process = spawn([sys.executable, "-c", "raise SystemExit(3)"], log, {}, tmp_path)
    with pytest.raises(ClusterError) as caught:
        wait_for(lambda: "not yet", 60, "the thing", process, log)
    assert str(caught.value) == f"the thing exited with code 3 while starting; see {log}"
    with pytest.raises(ClusterError, match=r"^the thing was not ready after 0.3 s \(still booting\); see "):
        wait_for(lambda: "still booting", 0.3, "the thing", None, log)


def test_children_that_open_a_session_of_their_own_still_belong_to_the_component(tmp_path: Path) -> None:
    forks_a_session = "import subprocess, time; subprocess.Popen(['setsid', 'sleep', '600']); time.sleep(600)"
    process = spawn([sys.executable, "-c", forks_a_session], tmp_path / "log", {}, tmp_path)
    members = _wait_members(process.pid, 2)
    assert len(members) == 2
    stop_session(process.pid, grace_s=10)
    process.wait(10)
    assert not any(is_alive(pid) for pid in members)


def _fake_ephemeral_range(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, first: int) -> None:
    (tmp_path / "range").write_text(f"{first}\t60999\n")
    monkeypatch.setattr(processes, "EPHEMERAL_RANGE", tmp_path / "range")
    monkeypatch.setattr(processes, "_handed_out", set())


def test_free_ports_lie_below_the_ephemeral_range_are_bindable_and_never_repeat() -> None:
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert assignable_ports() == range(processes.FIRST_ASSIGNED_PORT, first_ephemeral)
    batches = [free_ports(4) for _ in range(25)]
    ports = [port for batch in batches for port in batch]
    assert len(set(ports)) == 100
    assert all(processes.FIRST_ASSIGNED_PORT <= port < first_ephemeral for port in ports)
    for port in ports[:8]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_free_ports_skip_the_ports_that_are_taken(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = processes.FIRST_ASSIGNED_PORT
    _fake_ephemeral_range(monkeypatch, tmp_path, first + 128)
    taken = []
    try:
        for port in range(first, first + 128):
            if port not in (first + 5, first + 77):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:  # already held by another process: taken all the same
                    sock.close()
                    continue
                sock.listen()
                taken.append(sock)
        if not (processes._bindable(first + 5) and processes._bindable(first + 77)):
            pytest.skip("another process holds one of the two ports left free")
        assert sorted(free_ports(2)) == [first + 5, first + 77]
        with pytest.raises(ClusterError, match=r"^found only 0 of 1 free ports in 20000-20127 on 127\.0\.0\.1; "):
            free_ports(1)  # both handed out already, the rest bound
    finally:
        for sock in taken:
            sock.close()


def test_free_ports_fall_back_to_the_kernels_choice_without_room_below_its_range(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    kernel_first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    _fake_ephemeral_range(monkeypatch, tmp_path, processes.FIRST_ASSIGNED_PORT + 10)
    ports = free_ports(3)
    assert len(set(ports)) == 3
    assert all(port >= kernel_first for port in ports)  # bind(port 0) answers from the kernel's own range
