"""benchmarks/reconstruction_metrics.py end to end on a tiny dataset root (paper appendix C.5, Table 4)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from rodin_core.fitting.shard_job import torch_threads
from rodin_core.imaging import LABEL_HEIGHT, decode_png

from ..evaluation_data import HOLDOUT, SIZE, make_reconstruction_root
from ..generation_data import generation_config

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reconstruction_metrics.py"


def load_script():
    spec = importlib.util.spec_from_file_location("reconstruction_metrics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_prints_the_table_and_writes_the_json_and_the_sheet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with torch_threads(1):
        root = make_reconstruction_root(tmp_path / "data", generation_config(*HOLDOUT))
    report, sheet = tmp_path / "report" / "metrics.json", tmp_path / "sheet.png"
    monkeypatch.setattr(sys, "argv", ["reconstruction_metrics.py", "--out", root, "--json", str(report), "--sheet",
                                      str(sheet), "--lpips", "stlpips-vgg", "--sampler", "ddim", "--steps", "2",
                                      "--cfg", "1.5", "--other-views", "1", "--seed", "7"])
    with torch_threads(1):  # the script sets torch's process-wide thread count; restored after
        load_script().main()
    printed = capsys.readouterr().out
    assert "subjects [2, 3], all held out of diffusion training" in printed
    assert "LPIPS: stlpips-vgg, shift-tolerant LPIPS VGG16" in printed and "sampler ddim, steps 2, CFG scale 1.5" in printed
    assert "held-out views (2)" in printed and "other views (1)" in printed and "input view (1)" in printed
    data = json.loads(report.read_text())
    assert data["options"] == {"guidance_scale": 1.5, "sampler": "ddim", "steps": 2} and data["seed"] == 7
    assert [s["subject_id"] for s in data["subjects"]] == [2, 3] and data["held_out_subjects"] == [2, 3]
    assert set(data["mean"]) == {"inverted", "fitted"}
    assert set(data["mean"]["inverted"]) == {"held_out", "other", "input"}
    image = decode_png(sheet.read_bytes())  # 2 subjects x (input + 2 held-out views x truth/inverted/fitted)
    assert image.shape == (2 * (SIZE + LABEL_HEIGHT), 10 * SIZE, 3)
