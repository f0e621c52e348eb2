"""Stage specs (paper §3.2, §3.3, appendix B.1, B.4): the networks and diffusion of each stage, rebuilt from JSON."""

from __future__ import annotations

import json

import pytest
import torch

from rodin_core.checkpoint import load_checkpoint, save_checkpoint
from rodin_core.config import LatentMLPConfig, load_config
from rodin_core.stage_specs import model_from_config, network_config, stage_section, train_config_for
from rodin_core.training.registry import build_stage

from ..stage_data import plane_stats, small_config, synthetic_batch


def test_network_and_diffusion_configs_follow_the_paper():
    paper = load_config("paper")
    assert network_config("base", paper).learn_sigma is True
    assert (stage_section("base", paper).diffusion.mean_type, stage_section("base", paper).diffusion.loss,
            stage_section("base", paper).diffusion.var_type) == ("eps", "hybrid", "learned_range")
    cfg = load_config("tiny")  # x0 with a fixed variance for the base model: nothing to learn in the variance
    base, up = network_config("base", cfg), network_config("upsampler", cfg)
    assert (base.image_size, base.latent_dim, base.cond_channels, base.learn_sigma) == (32, 512, 0, False)
    assert (up.image_size, up.latent_dim, up.cond_channels, up.learn_sigma) == (64, 0, 8, False)
    assert (stage_section("base", cfg).diffusion.mean_type, stage_section("base", cfg).diffusion.loss) == (
        "x0", "simple")
    assert (stage_section("upsampler", cfg).diffusion.mean_type, stage_section("upsampler", cfg).diffusion.loss) == (
        "x0", "simple")
    # the tiny prior predicts z itself (appendix B.4); the paper's and the small preset's keep ε
    assert (stage_section("prior", cfg).diffusion.mean_type, stage_section("prior", cfg).diffusion.loss) == (
        "x0", "simple")
    assert stage_section("prior", paper).diffusion.mean_type == "eps"
    assert stage_section("prior", load_config("small")).diffusion.mean_type == "eps"
    prior = network_config("prior", cfg)
    assert isinstance(prior, LatentMLPConfig) and prior.depth == cfg.prior.mlp.depth
    assert train_config_for("upsampler", cfg) is cfg.upsampler.train
    with pytest.raises(ValueError, match="unknown training stage 'refiner'"):
        stage_section("refiner", cfg)


def test_stage_config_rebuilds_the_model_from_a_checkpoint(tmp_path):
    cfg = small_config()
    stage = build_stage("base", cfg, plane_stats(cfg))
    stage.train_step(synthetic_batch(cfg, 2), 0)
    save_checkpoint(tmp_path, modules=stage.modules, optimizers=stage.optimizers, step=1, config=stage.config())
    checkpoint = load_checkpoint(tmp_path)
    resumed = build_stage("base", small_config("base.train.seed=7"), plane_stats(cfg))
    checkpoint.restore(resumed.modules, resumed.optimizers)  # strict: every key and shape must match
    rebuilt = model_from_config(json.loads(json.dumps(checkpoint.config)))
    rebuilt.load_state_dict(checkpoint.module_state("ema"), strict=True)
    x = torch.randn(2, 4, 8, 24)
    t, z = torch.tensor([3, 40]), torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(resumed.modules["model"].eval()(x, t, z), stage.modules["model"].eval()(x, t, z))
        assert torch.equal(rebuilt.eval()(x, t, z), stage.modules["ema"](x, t, z))
    with pytest.raises(ValueError, match="not a stage config"):
        model_from_config({"network": {}})
