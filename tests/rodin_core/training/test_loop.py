"""The training loop: logging and checkpoint cadence, resume equivalence, clear failures."""

from __future__ import annotations

import math

import pytest
import torch

from rodin_core.checkpoint import load_checkpoint, save_checkpoint
from rodin_core.training.loop import run_stage
from rodin_core.training.prior import latent_batches
from rodin_core.training.registry import build_stage

from ...stage_data import clustered_latents, small_config

LATENTS = clustered_latents()


def prior_stage():
    return build_stage("prior", small_config("prior.train.batch_size=4"), None, latents=LATENTS)


def batches_from(step: int):
    """The batch stream a run sees, positioned at ``step`` (one batch per step)."""
    stream = latent_batches(LATENTS, 4, seed=0)
    for _ in range(step):
        next(stream)
    return stream


def test_logs_and_checkpoints_on_schedule():
    logs, checkpoints = [], []
    last = run_stage(prior_stage(), batches_from(0), 0, 7, on_log=lambda s, m: logs.append((s, m)),
                     on_checkpoint=checkpoints.append, log_every=3, checkpoint_every=4)
    assert [s for s, _ in logs] == [3, 6, 7]
    assert checkpoints == [4, 7]
    assert last == logs[-1][1]
    assert {"loss", "mse", "lr", "grad_norm", "steps_per_s", "step"} <= set(last)
    assert last["step"] == 7 and last["steps_per_s"] > 0 and math.isfinite(last["loss"])


def test_resumed_run_matches_the_uninterrupted_one(tmp_path):
    straight = prior_stage()
    run_stage(straight, batches_from(0), 0, 6)

    first = prior_stage()
    run_stage(first, batches_from(0), 0, 3, on_checkpoint=lambda step: save_checkpoint(
        tmp_path, modules=first.modules, optimizers=first.optimizers, step=step, config=first.config()))
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint.step == 3
    resumed = build_stage("prior", small_config("prior.train.batch_size=4"), None, latents=LATENTS[:8])
    with torch.no_grad():  # other weights and latent statistics: everything must come from the checkpoint
        for parameter in resumed.modules["model"].parameters():
            parameter.add_(0.1)
    checkpoint.restore(resumed.modules, resumed.optimizers)
    run_stage(resumed, batches_from(checkpoint.step), checkpoint.step, 6)
    for name in ("model", "ema", "latent_norm"):
        for (key, a), b in zip(straight.modules[name].state_dict().items(),
                               resumed.modules[name].state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"{name}.{key} differs after resume")


def test_failures_are_clear():
    stage = prior_stage()
    with pytest.raises(RuntimeError, match="ran out at step 2"):
        run_stage(stage, iter([LATENTS[:4], LATENTS[4:8]]), 0, 5)
    with pytest.raises(ValueError, match="total_steps must be an int >= 4"):
        run_stage(stage, batches_from(0), 4, 2)
    with pytest.raises(FloatingPointError, match="prior step 0: the loss is nan"):
        run_stage(stage, iter([torch.full((4, 32), float("nan"))]), 0, 1)
