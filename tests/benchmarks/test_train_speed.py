"""benchmarks/train_speed.py without Ray on a network of a few thousand parameters: store, FLOPs, plain loop, JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from rodin_core.fitting.shard_job import torch_threads

from ..training_corpus import TINY

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script():
    spec = importlib.util.spec_from_file_location("train_speed", BENCHMARKS / "train_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_counts_flops_and_times_the_plain_loop_on_a_synthetic_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports aware_conv_overhead next to it
    report = tmp_path / "speed.json"
    overrides = [arg for item in TINY for arg in ("--set", item)]
    with torch_threads(1):  # the script sets torch's process-wide thread count; restored after
        result = load_script().main([*overrides, "--subjects", "6", "--steps", "4", "--cpus-per-worker", "1",
                                     "--no-ray", "--json", str(report)])
    printed = capsys.readouterr().out
    assert "store: synthetic, 6 subjects, 4 training subjects (2 held out)" in printed
    assert "old (3D-aware conv in context form)" in printed and "plain loop, 1 thread(s)" in printed
    assert json.loads(report.read_text()) == json.loads(json.dumps(result))
    assert (result["steps"], result["log_every"], result["batch_size"], result["ray"]) == (4, 1, 4, None)
    flops = result["flops"]
    for form in ("current", "old_context_form"):
        counts = flops[form]
        assert counts["unet_training"] == counts["unet_forward"] + counts["unet_backward"]
        assert counts["train_step"] > counts["unet_training"]  # the learned encoder trains in the same step
    assert flops["old_context_form"]["unet_forward"] > flops["current"]["unet_forward"]
    assert flops["unet_parameters"] > 0 and flops["encoder_trainable_parameters"] > 0
    assert [steps for steps, _ in result["plain"]["windows"]] == [1, 1, 1, 1]
