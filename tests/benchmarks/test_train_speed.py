"""benchmarks/train_speed.py on a network of a few thousand parameters: store, FLOPs, plain loop, JSON.

Ray is not started: ``run_training`` is replaced by one returning a worker summary as rank 0 writes it,
so that the Ray Train numbers are checked as arithmetic on its logged windows (no timing is asserted).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from rodin_core.fitting.shard_job import torch_threads

from ..training_corpus import TINY

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script():
    spec = importlib.util.spec_from_file_location("train_speed", BENCHMARKS / "train_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WORKER_HISTORY = [{"step": 2.0, "steps_per_s": 1.0, "loss": 1.0}, {"step": 4.0, "steps_per_s": 2.0, "loss": 0.5}]
"""Two logged windows of two steps: 2 s (start-up of the stream included), then 1 s."""


def test_script_counts_flops_and_times_both_paths_on_a_synthetic_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports aware_conv_overhead next to it
    script = load_script()
    calls: list[dict[str, Any]] = []

    def run_training(stage: str, cfg: Any, out: str, **kwargs: Any) -> dict[str, Any]:
        calls.append({"stage": stage, "steps": cfg.base.train.steps, "out": out, **kwargs})
        return {"workers": 1, "start_step": 0, "seconds": 5.0, "history": WORKER_HISTORY,
                "first": WORKER_HISTORY[0], "last": WORKER_HISTORY[-1]}

    monkeypatch.setattr(script, "ray_session", lambda address: contextlib.nullcontext())
    monkeypatch.setattr(script, "run_training", run_training)
    monkeypatch.setattr(script, "ray_worker_niceness", lambda: 7)
    report = tmp_path / "speed.json"
    overrides = [arg for item in TINY for arg in ("--set", item)]
    with torch_threads(1):  # the script sets torch's process-wide thread count; restored after
        result = script.main([*overrides, "--subjects", "6", "--steps", "4", "--cpus-per-worker", "1",
                              "--log-every", "2", "--json", str(report)])
    printed = capsys.readouterr().out
    assert len(calls) == 1 and calls[0]["stage"] == "base" and calls[0]["steps"] == 4
    assert (calls[0]["cpus_per_worker"], calls[0]["resume"]) == (1, False)
    assert not Path(calls[0]["out"]).exists()  # the temporary store is gone
    data = json.loads(report.read_text())
    assert data == json.loads(json.dumps(result))
    ray = data["ray"]
    assert ray["windows"] == [[2, 2.0], [2, 1.0]] and ray["logged_steps_s"] == 3.0
    assert (ray["steps_per_s_all"], ray["steps_per_s_steady"]) == (4 / 3, 2.0)
    assert result["overhead"]["steady"] == result["plain"]["steps_per_s_steady"] / 2.0
    assert ray["worker_niceness"] == 7 and "workers at nice 7" in printed
    assert "Ray Train, 1 worker(s) x 1 thr." in printed and "overhead, Ray Train s/step over plain s/step" in printed
    assert "store: synthetic, 6 subjects, 4 training subjects (2 held out)" in printed
    assert "old (3D-aware conv in context form)" in printed and "plain loop, 1 thread(s)" in printed
    assert (result["steps"], result["log_every"], result["batch_size"]) == (4, 2, 4)
    flops = result["flops"]
    for form in ("current", "old_context_form"):
        counts = flops[form]
        assert counts["unet_training"] == counts["unet_forward"] + counts["unet_backward"]
        assert counts["train_step"] > counts["unet_training"]  # the learned encoder trains in the same step
    assert flops["old_context_form"]["unet_forward"] > flops["current"]["unet_forward"]
    assert flops["unet_parameters"] > 0 and flops["encoder_trainable_parameters"] > 0
    assert [steps for steps, _ in data["plain"]["windows"]] == [2, 2]
