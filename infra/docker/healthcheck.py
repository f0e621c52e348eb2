"""Container healthchecks of docker-compose.yml: a server that answers HTTP, or a running process.

    python /opt/rodin/infra/docker/healthcheck.py http URL [--ok-below STATUS]
    python /opt/rodin/infra/docker/healthcheck.py process NAME

``http``: healthy when ``URL`` answers with a status below ``--ok-below`` (default 500: a 401 or 403
of a server that wants credentials still means it is up; 300 requires a success). ``process``:
healthy while a process of this container is named ``NAME`` (e.g. ``raylet`` on a Ray worker).
Exit code 0 when healthy, else 1 with one line on stderr. Standard library only.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path


def probe_http(url: str, ok_below: int = 500, timeout_s: float = 5.0) -> str | None:
    """None when ``url`` answers with a status below ``ok_below``, else why it does not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} did not answer: {getattr(exc, 'reason', exc)}"
    return None if status < ok_below else f"{url} answered HTTP {status} (healthy is below {ok_below})"


def probe_process(name: str, proc: Path = Path("/proc")) -> str | None:
    """None when a process named ``name`` runs (its ``/proc/<pid>/comm``), else why not."""
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                return None
        except OSError:  # the process ended while we looked
            continue
    return f"no process named {name!r} is running"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    checks = parser.add_subparsers(dest="check", required=True)
    http = checks.add_parser("http")
    http.add_argument("url")
    http.add_argument("--ok-below", type=int, default=500)
    http.add_argument("--timeout", type=float, default=5.0)
    process = checks.add_parser("process")
    process.add_argument("name")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    why = probe_http(args.url, args.ok_below, args.timeout) if args.check == "http" else probe_process(args.name)
    if why is not None:
        print(why, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
