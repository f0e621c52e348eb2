"""The x̂0 recorder behind ``rodin render-avatar --x0`` (workflows.avatar_commands; appendix C.2 Fig. 15).

The commands themselves run end to end through ``rodin`` in tests/rodin_core/test_cli.py.
"""

from __future__ import annotations

import pytest
import torch

from rodin_core.generation.job import GenerateInputError
from workflows.avatar_commands import X0Recorder


def _feed(recorder: X0Recorder, stage: str, steps: int) -> None:
    for step in range(steps):
        recorder(stage, step, torch.full((3, 1, 2, 2), float(step)))  # x̂0 tagged with its step


def test_recorder_spreads_its_tiles_over_the_reverse_process_with_bounded_memory() -> None:
    recorder = X0Recorder(tiles=4)
    _feed(recorder, "base", 50)
    _feed(recorder, "upsampler", 7)
    assert len(recorder.kept["base"]) <= 2 * 4 + 1 and recorder.calls == {"base": 50, "upsampler": 7}
    chosen = recorder.selection()
    assert [(stage, step) for stage, step, _ in chosen] == [
        ("base", 0), ("base", 16), ("base", 32), ("base", 49),
        ("upsampler", 0), ("upsampler", 2), ("upsampler", 4), ("upsampler", 6)]
    assert all(float(planes[0, 0, 0, 0]) == step for _, step, planes in chosen)


def test_recorder_with_fewer_steps_than_tiles_keeps_every_step() -> None:
    recorder = X0Recorder(tiles=6)
    _feed(recorder, "base", 3)
    assert [step for _, step, _ in recorder.selection()] == [0, 1, 2]
    only_last = X0Recorder(tiles=1)
    _feed(only_last, "base", 5)
    assert [step for _, step, _ in only_last.selection()] == [4]
    with pytest.raises(GenerateInputError, match="positive integer, got 0"):
        X0Recorder(tiles=0)
