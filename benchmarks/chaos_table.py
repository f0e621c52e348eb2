"""Print the figures the chaos suite recorded (``RODIN_CHAOS_REPORT=DIR``, one JSON file per test) as a markdown table.

    RODIN_CHAOS_REPORT=chaos-report .venv/bin/python -m pytest -m chaos tests/chaos
    .venv/bin/python benchmarks/chaos_table.py chaos-report
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLUMNS = [("test", "test"), ("fault", "fault"), ("stage", "stage"), ("shards_committed", "committed"),
           ("shards_lost", "lost"), ("shards_duplicated", "duplicated"), ("retries", "retries"),
           ("recover_s", "recover s"), ("outcome", "outcome")]


def rows(folder: Path) -> list[dict]:
    """One row per ``*.json`` of ``folder``, named after its file, sorted by stage then test."""
    found = [{"test": path.stem, **json.loads(path.read_text())} for path in sorted(folder.glob("*.json"))]
    return sorted(found, key=lambda row: (str(row.get("stage")), row["test"]))


def table(found: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row.get(key, "")) for key, _ in COLUMNS) + " |" for row in found]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the RODIN_CHAOS_REPORT folder of a chaos run")
    args = parser.parse_args(argv)
    found = rows(args.folder) if args.folder.is_dir() else []
    if not found:
        print(f"chaos_table: no figures in {args.folder}; run the chaos tests with RODIN_CHAOS_REPORT={args.folder}",
              file=sys.stderr)
        return 1
    print(table(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
