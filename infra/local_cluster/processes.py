"""Child processes of the local cluster: started in their own session, found and stopped by PID.

Every component is started with ``start_new_session``, so its PID is also its process group and
session id: whatever it forks (Ray's raylet and workers, Prefect's uvicorn, flow runs) stays in that
session and is found again by scanning ``/proc``, even after the ``up`` command has exited.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

PROC = Path("/proc")


class ClusterError(RuntimeError):
    """The local cluster could not be started, found or stopped; the message says what to do."""


FIRST_ASSIGNED_PORT = 20000
"""The lowest port :func:`free_ports` hands out: Ray's worker processes listen on 10002-19999 by default."""
EPHEMERAL_RANGE = PROC / "sys" / "net" / "ipv4" / "ip_local_port_range"
_handed_out: set[int] = set()


def assignable_ports() -> range:
    """The ports :func:`free_ports` picks from: from :data:`FIRST_ASSIGNED_PORT` up to the kernel's ephemeral
    range. The kernel gives ephemeral ports to outgoing connections and to every ``bind(port 0)``, so a port
    picked there can be taken by another process (Ray opens hundreds of connections while the cluster starts)
    before the component it was picked for binds it; below that range only an explicit bind takes one."""
    try:
        first_ephemeral = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768  # Linux's default
    return range(FIRST_ASSIGNED_PORT, first_ephemeral)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now, drawn at random from
    :func:`assignable_ports` and never handed out twice by this process; ephemeral ones (the kernel's
    choice) only where the kernel leaves no room below its ephemeral range."""
    candidates = assignable_ports()
    if len(candidates) < 64 * count:
        return _ephemeral_ports(count)
    picked: list[int] = []
    for port in random.SystemRandom().sample(candidates, len(candidates)):
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            picked.append(port)
            if len(picked) == count:
                return picked
    raise ClusterError(f"found only {len(picked)} of {count} free ports in {candidates.start}-{candidates.stop - 1} "
                       "on 127.0.0.1; stop what listens there, or widen net.ipv4.ip_local_port_range")


def _ephemeral_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def spawn(args: list[str], log_path: Path, env: Mapping[str, str], cwd: Path,
          user: str | None = None) -> subprocess.Popen:
    """Start ``args`` in a new session with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(args, cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, user=user)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name, or None when there is no such process."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rsplit(")", 1)[1].split()


def is_alive(pid: int | None) -> bool:
    """Whether ``pid`` runs (a zombie, already dead but not reaped, does not count)."""
    if not pid:
        return False
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def session_members(sid: int) -> list[int]:
    """Live PIDs whose session id is ``sid``, and the live descendants of those (Postgres' backends each
    open a session of their own)."""
    parents, members = {}, set()
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[0] not in ("Z", "X"):
                parents[int(entry.name)] = int(fields[1])
                if int(fields[3]) == sid:
                    members.add(int(entry.name))
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in members} - members
        members |= children
        grew = bool(children)
    return sorted(members)


def process_name(pid: int) -> str:
    """The command name of ``pid`` ('' when gone)."""
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_session(sid: int, grace_s: float) -> list[int]:
    """SIGTERM every process of session ``sid``, SIGKILL what is left after ``grace_s``; the PIDs killed."""
    members = session_members(sid)
    _signal_all(members, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and session_members(sid):
        time.sleep(0.2)
    left = session_members(sid)
    _signal_all(left, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and session_members(sid):
        time.sleep(0.1)
    return members


def wait_for(check: Callable[[], str | None], timeout_s: float, what: str, process: subprocess.Popen | None,
             log_path: Path) -> None:
    """Poll ``check`` (None: ready, else why not) until ready; ClusterError naming ``what`` and its log otherwise."""
    deadline = time.monotonic() + timeout_s
    reason = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ClusterError(f"{what} exited with code {process.returncode} while starting; see {log_path}")
        reason = check() or ""
        if not reason:
            return
        time.sleep(0.5)
    raise ClusterError(f"{what} was not ready after {timeout_s:g} s ({reason}); see {log_path}, "
                       "or raise --timeout on a busy machine")
