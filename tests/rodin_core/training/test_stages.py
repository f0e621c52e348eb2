"""The stages' shared interface: configs per stage, rebuild from JSON, seeding, warm-up, gradient averaging."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from rodin_core.config import RodinConfig, load_config
from rodin_core.training.checkpoint import load_checkpoint, save_checkpoint
from rodin_core.training.dataset import TriplaneBatch
from rodin_core.training.stages import (
    average_gradients,
    build_stage,
    diffusion_config_for,
    latent_mlp_config_for,
    model_from_config,
    step_generator,
    unet_config_for,
    warmup_lr,
)
from rodin_core.training.stats import PlaneStats
from rodin_core.triplane.field import DecoderConfig, TriplaneDecoder

SMALL_OVERRIDES = (
    "triplane.channels=4", "triplane.resolution=16", "triplane.rescale_min=8",
    "render.resolution=32", "render.views=4", "fit.coarse_samples=8", "fit.fine_samples=8",
    "encoder.latent_dim=32", "encoder.image_size=16", "encoder.learned_channels=8",
    "base.model_channels=16", "base.attention_resolutions=[4]", "base.aware_resolutions=[8]",
    "base.num_head_channels=16", "base.diffusion_steps=100", "base.sampling_steps=10",
    "upsampler.model_channels=8", "upsampler.aware_resolutions=[16]", "upsampler.num_head_channels=8",
    "upsampler.diffusion_steps=100", "upsampler.sampling_steps=10", "upsampler.patch_size=18",
    "prior.width=64", "prior.depth=2", "prior.diffusion_steps=100", "prior.sampling_steps=10",
)


def small_config(*overrides: str) -> RodinConfig:
    """The tiny preset shrunk further (C=4, 16^2 planes, base 8^2) so that a step takes milliseconds."""
    return load_config("tiny", overrides=SMALL_OVERRIDES + overrides)


def plane_stats(cfg: RodinConfig) -> PlaneStats:
    channels = cfg.triplane.channels
    return PlaneStats(torch.linspace(-0.2, 0.2, channels), torch.full((channels,), 0.5))


def synthetic_batch(cfg: RodinConfig, size: int, seed: int = 0) -> TriplaneBatch:
    """Smooth random raw tri-planes and RGBA frontal views."""
    generator = torch.Generator().manual_seed(seed)
    channels, res = cfg.triplane.channels, cfg.triplane.resolution
    coarse = torch.randn(size * 3, channels, 4, 4, generator=generator)
    planes = torch.nn.functional.interpolate(coarse, size=(res, res), mode="bicubic", align_corners=True)
    image = cfg.render.resolution
    return TriplaneBatch(torch.arange(size, dtype=torch.int64) + 100,
                         0.5 * planes.reshape(size, 3, channels, res, res),  # (B, 3, C, H, W)
                         torch.rand(size, 4, image, image, generator=generator))  # (B, 4, Hi, Wi)


def decoder_for(cfg: RodinConfig, density_bias: float = 0.0) -> TriplaneDecoder:
    """A random decoder whose field is visible (density bias raised from the near-empty default)."""
    torch.manual_seed(0)
    decoder = TriplaneDecoder(DecoderConfig.from_triplane_config(cfg.triplane))
    with torch.no_grad():
        decoder.density_and_features.bias[0] = density_bias
    return decoder


def test_network_and_diffusion_configs_follow_the_paper():
    cfg = load_config("tiny")
    base, up = unet_config_for("base", cfg), unet_config_for("upsampler", cfg)
    assert (base.image_size, base.latent_dim, base.cond_channels, base.learn_sigma) == (32, 512, 0, True)
    assert (up.image_size, up.latent_dim, up.cond_channels, up.learn_sigma) == (64, 0, 8, False)
    assert (diffusion_config_for("base", cfg).mean_type, diffusion_config_for("base", cfg).loss) == ("eps", "hybrid")
    assert diffusion_config_for("base", cfg).var_type == "learned_range"
    assert (diffusion_config_for("upsampler", cfg).mean_type, diffusion_config_for("upsampler", cfg).loss) == (
        "x0", "simple")
    assert (diffusion_config_for("prior", cfg).mean_type, diffusion_config_for("prior", cfg).loss) == ("eps", "simple")
    assert latent_mlp_config_for(cfg).depth == cfg.prior.depth
    with pytest.raises(ValueError, match="unknown training stage 'refiner'"):
        diffusion_config_for("refiner", cfg)
    with pytest.raises(ValueError, match="latent_mlp_config_for"):
        unet_config_for("prior", cfg)


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


def test_step_generator_depends_on_seed_rank_and_step():
    def draw(seed: int, rank: int, step: int) -> torch.Tensor:
        return torch.randn(4, generator=step_generator(seed, rank, step))

    assert torch.equal(draw(0, 0, 5), draw(0, 0, 5))
    assert not torch.equal(draw(0, 0, 5), draw(0, 0, 6))
    assert not torch.equal(draw(0, 0, 5), draw(0, 1, 5))
    assert not torch.equal(draw(0, 0, 5), draw(1, 0, 5))


def test_warmup_is_linear_then_constant():
    train = load_config("tiny", overrides=["base.train.warmup_steps=4", "base.train.lr=1e-3"]).base.train
    assert [round(warmup_lr(s, train), 8) for s in range(6)] == [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3]


def test_cpu_training_stays_fp32():
    cfg = small_config("base.train.precision=bf16")
    stage = build_stage("prior", cfg, None, latents=torch.randn(8, 32))
    assert stage._forward(torch.randn(2, 32), torch.tensor([1, 2])).dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in stage.modules["model"].parameters())


def _average_worker(rank: int, port: int, results: dict) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        first, second = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))
        first.grad = torch.full((3,), float(rank + 1))
        if rank == 0:  # a parameter without a gradient on one rank counts as zeros
            second.grad = torch.full((2, 2), 4.0)
        average_gradients([first, second])
        results[rank] = (first.grad.tolist(), second.grad.tolist())
    finally:
        torch.distributed.destroy_process_group()


def test_gradients_are_averaged_over_ranks():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_average_worker, args=(port, results), nprocs=2, join=True, start_method="fork")
        assert results[0] == results[1] == ([1.5, 1.5, 1.5], [[2.0, 2.0], [2.0, 2.0]])


def test_build_stage_names_what_is_missing():
    cfg = small_config()
    with pytest.raises(ValueError, match="PlaneStats"):
        build_stage("base", cfg, None)
    with pytest.raises(ValueError, match="latents"):
        build_stage("prior", cfg, None)
    with pytest.raises(ValueError, match="decoder="):
        build_stage("upsampler", cfg, plane_stats(cfg))
