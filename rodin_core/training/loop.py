"""The plain training loop every stage runs (paper appendix B.1, B.4: long AdamW runs with EMA).

:func:`run_stage` is what a data-parallel training worker or a test calls: it pulls batches,
calls :meth:`Stage.train_step` for the 0-based step indices ``start_step .. total_steps - 1``, reports
averaged metrics every ``log_every`` steps and asks for a checkpoint every ``checkpoint_every`` steps
and after the last one. Step counts passed to the callbacks are *completed* steps: after step index
``s`` the count is ``s + 1``, so a checkpoint saved at count ``n`` resumes with ``start_step = n``.
Because each step's random draws depend only on (seed, rank, step) (:func:`~.stages.step_generator`),
a resumed run repeats what the uninterrupted run would have done, given the same batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from torch import Tensor

from rodin_core.datasets.triplanes import TriplaneBatch
from rodin_core.training.stage import Stage

LogCallback = Callable[[int, dict[str, float]], None]
"""``on_log(completed_steps, metrics)``: the mean of each metric over the steps since the last log,
plus ``steps_per_s`` and ``step``."""
CheckpointCallback = Callable[[int], None]
"""``on_checkpoint(completed_steps)``: save the stage now (it has done that many steps)."""


def run_stage(
    stage: Stage,
    batches: Iterator[TriplaneBatch | Tensor],
    start_step: int,
    total_steps: int,
    on_log: LogCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    log_every: int = 100,
    checkpoint_every: int = 5000,
) -> dict[str, float]:
    """Train ``stage`` from ``start_step`` completed steps up to ``total_steps``; returns the last log's metrics.

    ``on_log`` runs every ``log_every`` completed steps and after the last step; ``on_checkpoint``
    every ``checkpoint_every`` completed steps and after the last step (once per count). Running out of
    batches raises ``RuntimeError`` naming the step.
    """
    for name, value, low in (("start_step", start_step, 0), ("total_steps", total_steps, start_step),
                             ("log_every", log_every, 1), ("checkpoint_every", checkpoint_every, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"run_stage: {name} must be an int >= {low}, got {value!r}")
    window: dict[str, list[float]] = {}
    last: dict[str, float] = {}
    started, paused = time.perf_counter(), 0.0  # checkpoint time is left out of steps_per_s
    steps_in_window = 0
    for step in range(start_step, total_steps):
        try:
            batch = next(batches)
        except StopIteration as exc:
            raise RuntimeError(f"{stage.name}: the batch iterator ran out at step {step} of {total_steps}; "
                               "pass an endless iterator (TriplaneDataset repeats its epochs)") from exc
        for key, value in stage.train_step(batch, step).items():
            window.setdefault(key, []).append(float(value))
        steps_in_window += 1
        done = step + 1
        if done % log_every == 0 or done == total_steps:
            elapsed = max(time.perf_counter() - started - paused, 1e-9)
            last = _average(window) | {"steps_per_s": steps_in_window / elapsed, "step": float(done)}
            if on_log is not None:
                on_log(done, last)
            window, steps_in_window, started, paused = {}, 0, time.perf_counter(), 0.0
        if on_checkpoint is not None and (done % checkpoint_every == 0 or done == total_steps):
            before = time.perf_counter()
            on_checkpoint(done)
            paused += time.perf_counter() - before
    return last


def _average(window: dict[str, list[float]]) -> dict[str, Any]:
    return {key: sum(values) / len(values) for key, values in window.items()}
