"""The orchestration package holds orchestration only: flows, tasks, Ray glue and the command line.

Library code (maths, models, the data layer, per-shard jobs) lives in ``rodin_core``; a module of
``workflows`` that imports neither Prefect nor Ray belongs there (docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
COMMAND_LINE = {"cli.py", "cli_parser.py", "avatar_commands.py", "text_edit.py", "text_commands.py",
                "store_commands.py", "flow_config.py"}
"""The ``rodin`` command and its argument parser, the plain functions behind its avatar (``rodin edit`` included),
text and store commands, and the mapping from its flags to a config that the command line and the flows share."""


def orchestration_imports(source: str) -> set[str]:
    """The top-level packages among ``prefect``, ``prefect_ray`` and ``ray`` that ``source`` imports."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in ("prefect", "prefect_ray", "ray"))
    return found


def test_orchestration_imports_reads_import_forms():
    assert orchestration_imports("import ray\nfrom prefect.artifacts import x\nimport numpy") == {"ray", "prefect"}
    assert orchestration_imports("from rodin_core.storage import open_store\nimport rayleigh") == set()


@pytest.mark.parametrize("path", sorted(p for p in WORKFLOWS.glob("*.py") if p.name not in COMMAND_LINE | {"__init__.py"}),
                         ids=lambda p: p.name)
def test_every_workflows_module_orchestrates_or_is_the_command_line(path: Path):
    assert orchestration_imports(path.read_text()), (
        f"workflows/{path.name} imports neither Prefect nor Ray: move it into rodin_core (the library)")
