"""benchmarks/chaos_table.py: the chaos suite's JSON figures as one markdown row each."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.chaos.harness import Figures, record

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load():
    spec = importlib.util.spec_from_file_location("chaos_table", BENCHMARKS / "chaos_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recorded_figures_become_one_row_each_sorted_by_stage(tmp_path: Path, monkeypatch, capsys) -> None:
    chaos_table = load()
    monkeypatch.setenv("RODIN_CHAOS_REPORT", str(tmp_path))
    record("enospc_render", Figures("ENOSPC at commit", "render", 3, 0, 0, 0, 41.5, "re-run finishes"))
    record("corrupted_triplanes", Figures("corrupted file", "fit", 3, 0, 0, 0, 12.0, "re-fit 1 shard"))
    assert chaos_table.main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| test | fault | stage | committed | lost | duplicated | retries | recover s | outcome |"
    assert lines[2:] == ["| corrupted_triplanes | corrupted file | fit | 3 | 0 | 0 | 0 | 12.0 | re-fit 1 shard |",
                         "| enospc_render | ENOSPC at commit | render | 3 | 0 | 0 | 0 | 41.5 | re-run finishes |"]


def test_nothing_recorded_without_the_variable_and_an_empty_folder_is_one_line(tmp_path: Path, monkeypatch,
                                                                               capsys) -> None:
    monkeypatch.delenv("RODIN_CHAOS_REPORT", raising=False)
    record("enospc_render", Figures("ENOSPC at commit", "render", 3, 0, 0, 0, 41.5, "re-run finishes"))
    assert list(tmp_path.iterdir()) == []
    assert load().main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RODIN_CHAOS_REPORT" in err
