"""Respacing (appendix B.1: train on 1,000 steps, sample in 100; Nichol & Dhariwal 2021 §4)."""

import numpy as np
import pytest
import torch

from rodin_core.diffusion.gaussian import (
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
)
from rodin_core.diffusion.respace import respace_diffusion, space_timesteps
from rodin_core.diffusion.schedules import get_beta_schedule


def test_ddim_spacing_uses_one_integer_stride():
    assert space_timesteps(1000, "ddim10") == set(range(0, 1000, 100))
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert space_timesteps(100, "ddim3") == {0, 34, 68}  # stride 34 is the first giving 3 steps
    with pytest.raises(ValueError, match="exactly 999 steps out of 1000"):
        space_timesteps(1000, "ddim999")


def test_even_spacing_includes_both_ends():
    assert space_timesteps(100, 10) == set(range(0, 100, 11))  # stride (100 - 1) / (10 - 1) = 11
    assert space_timesteps(100, "10") == space_timesteps(100, 10)
    assert space_timesteps(1000, 1000) == set(range(1000))
    assert space_timesteps(1000, "100") == {round(k * 999 / 99) for k in range(100)}


def test_sections_are_spaced_independently():
    # 300 steps in three sections of 100: 10 of [0, 99], 15 of [100, 199], 20 of [200, 299]
    kept = space_timesteps(300, [10, 15, 20])
    assert kept == space_timesteps(300, "10,15,20")
    assert len(kept) == 45
    assert sorted(kept)[:2] == [0, 11] and {99, 100, 199, 200, 299} <= kept
    assert len([s for s in kept if 100 <= s < 200]) == 15


def test_bad_section_counts_raise():
    with pytest.raises(ValueError, match="keep 20 steps from a section of 10"):
        space_timesteps(30, "5,20,5")
    with pytest.raises(ValueError, match="bad step count 'x'"):
        space_timesteps(100, "10,x")
    with pytest.raises(ValueError, match="bad step count '0'"):
        space_timesteps(100, 0)
    with pytest.raises(TypeError, match="got 2.5"):
        space_timesteps(100, 2.5)


def test_respaced_process_keeps_alphas_cumprod_and_types():
    base = GaussianDiffusion(
        get_beta_schedule("linear", 1000),
        mean_type=ModelMeanType.START_X,
        var_type=ModelVarType.LEARNED_RANGE,
        loss_type=LossType.HYBRID,
        vlb_weight=0.01,
    )
    kept = sorted(space_timesteps(1000, "ddim10"))
    spaced = respace_diffusion(base, kept)
    assert spaced.num_timesteps == 10
    assert np.allclose(spaced.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-12, atol=0)
    assert np.array_equal(spaced.timestep_map, kept)
    assert (spaced.mean_type, spaced.var_type, spaced.loss_type, spaced.vlb_weight) == (
        ModelMeanType.START_X, ModelVarType.LEARNED_RANGE, LossType.HYBRID, 0.01
    )
    twice = respace_diffusion(spaced, [0, 5, 9])  # respacing composes: the model still sees base steps
    assert np.array_equal(twice.timestep_map, [0, 500, 900])
    assert np.allclose(twice.alphas_cumprod, base.alphas_cumprod[[0, 500, 900]], rtol=1e-12, atol=0)


def test_model_sees_original_timesteps():
    spaced = respace_diffusion(GaussianDiffusion(get_beta_schedule("linear", 1000)), space_timesteps(1000, "ddim10"))
    seen: list[list[int]] = []

    def recorder(x, t):
        seen.append(t.tolist())
        return torch.zeros_like(x)

    x = torch.zeros(3, 1, 2, 2)
    t = torch.tensor([0, 4, 9])
    spaced.p_mean_variance(recorder, x, t)
    spaced.training_losses(recorder, x, t)
    assert seen == [[0, 400, 900], [0, 400, 900]]


def test_respacing_validates_the_kept_steps():
    base = GaussianDiffusion(get_beta_schedule("linear", 100))
    with pytest.raises(ValueError, match="at least 2 kept steps"):
        respace_diffusion(base, [5])
    with pytest.raises(ValueError, match=r"\[0, 100\), got min 0, max 100"):
        respace_diffusion(base, [0, 100])
