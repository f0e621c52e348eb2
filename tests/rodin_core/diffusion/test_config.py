"""DiffusionConfig (paper appendix B.1 defaults) and build_diffusion."""

import json

import numpy as np
import pytest

from rodin_core.diffusion.config import DiffusionConfig, build_diffusion
from rodin_core.diffusion.gaussian import LossType, ModelMeanType, ModelVarType
from rodin_core.diffusion.schedules import get_beta_schedule


def test_defaults_are_the_papers_base_model():
    diffusion = build_diffusion(DiffusionConfig())
    assert diffusion.num_timesteps == 1000
    assert np.array_equal(diffusion.betas, get_beta_schedule("linear", 1000))
    assert (diffusion.mean_type, diffusion.var_type, diffusion.loss_type) == (
        ModelMeanType.EPSILON,
        ModelVarType.LEARNED_RANGE,
        LossType.HYBRID,
    )
    assert diffusion.vlb_weight == 0.001


def test_respacing_for_sampling():
    cfg = DiffusionConfig(mean_type="x0", sampling_steps="ddim25")
    sampler = build_diffusion(cfg, cfg.sampling_steps)
    assert sampler.num_timesteps == 25 and sampler.mean_type is ModelMeanType.START_X
    assert np.array_equal(sampler.timestep_map, np.arange(0, 1000, 40))
    assert build_diffusion(cfg, 100).num_timesteps == 100


def test_dict_round_trip_through_json():
    cfg = DiffusionConfig(schedule="cosine", steps=500, var_type="fixed_large", loss="simple", sampling_steps="50")
    again = DiffusionConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert np.array_equal(build_diffusion(again).betas, build_diffusion(cfg).betas)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("schedule", "sigmoid", r"diffusion.schedule: 'sigmoid'; choices: 'linear', 'cosine'"),
        ("mean_type", "w", r"diffusion.mean_type: 'w'; choices: 'eps', 'x0', 'v'"),
        ("var_type", "learned", r"diffusion.var_type: 'learned'; choices: 'fixed_small', 'fixed_large', 'learned"),
        ("loss", "simple", r"diffusion.loss: 'simple' with var_type 'learned_range'"),
        ("vlb_weight", 0.0, r"diffusion.vlb_weight: 0.0"),
        ("steps", 10, r"diffusion.steps: 10 \(the linear schedule needs num_steps > 20"),
        ("sampling_steps", "ddim7x", r"diffusion.sampling_steps: 'ddim7x'"),
        ("sampling_steps", "2000", r"diffusion.sampling_steps: '2000' \(cannot keep 2000 steps"),
    ],
)
def test_validate_names_the_field_the_value_and_the_choices(field, value, message):
    cfg = DiffusionConfig(**{field: value})
    with pytest.raises(ValueError, match=message):
        cfg.validate()


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError, match=r"unknown DiffusionConfig keys \['stepz'\]; valid keys: schedule, steps"):
        DiffusionConfig.from_dict({"stepz": 10})
