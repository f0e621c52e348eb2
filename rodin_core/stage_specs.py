"""What each diffusion stage is: its network, its diffusion process and the JSON saved with its weights.

Rodin has three diffusion models (paper §3.2, §3.3, appendix B.1, B.4): the latent-conditioned base
model on tri-planes at the base resolution, the tri-plane upsampler and the latent prior over z.
Training builds them from here and generation rebuilds them from a checkpoint's JSON through
:func:`model_from_config`, so loading a model to sample never needs the training code.

- base: ε prediction with the hybrid loss and a learned-range variance (§3.2, Nichol & Dhariwal 2021);
- upsampler: x_0 prediction with the simple loss (§3.3);
- prior: ε prediction with the simple loss over z (appendix B.4).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from rodin_core.config import RodinConfig, TrainConfig
from rodin_core.diffusion import DiffusionConfig
from rodin_core.networks import LatentMLP, LatentMLPConfig, TriplaneUNet, UNetConfig

STAGE_NAMES = ("base", "upsampler", "prior")


def check_stage_name(name: str) -> None:
    """Raise ValueError unless ``name`` is one of :data:`STAGE_NAMES`."""
    if name not in STAGE_NAMES:
        raise ValueError(f"unknown training stage {name!r}; choose one of {STAGE_NAMES}")


def unet_config_for(name: str, cfg: RodinConfig) -> UNetConfig:
    """The :class:`UNetConfig` of the ``base`` (§3.2) or ``upsampler`` (§3.3) stage of ``cfg``."""
    check_stage_name(name)
    if name == "prior":
        raise ValueError("the prior stage is a residual MLP, not a U-Net; use latent_mlp_config_for(cfg)")
    section = cfg.base if name == "base" else cfg.upsampler
    channels = cfg.triplane.channels
    return UNetConfig(
        in_channels=channels,
        out_channels=channels,
        model_channels=section.model_channels,
        channel_mult=tuple(section.channel_mult),
        num_res_blocks=section.num_res_blocks,
        attention_resolutions=tuple(section.attention_resolutions),
        aware_resolutions=tuple(section.aware_resolutions),
        num_head_channels=section.num_head_channels,
        dropout=section.dropout,
        latent_dim=cfg.encoder.latent_dim if name == "base" else 0,
        cond_channels=0 if name == "base" else channels,
        learn_sigma=name == "base",
        image_size=cfg.triplane.rescale_min if name == "base" else cfg.triplane.resolution,
    )


def latent_mlp_config_for(cfg: RodinConfig) -> LatentMLPConfig:
    """The residual-MLP denoiser of the latent prior (appendix B.4)."""
    return LatentMLPConfig(latent_dim=cfg.encoder.latent_dim, width=cfg.prior.width, depth=cfg.prior.depth)


def diffusion_config_for(name: str, cfg: RodinConfig) -> DiffusionConfig:
    """Base: ε, learned-range variance, hybrid loss (§3.2); upsampler: x_0, fixed-small, simple (§3.3);
    prior: ε, fixed-small, simple (appendix B.4). Steps, schedule and sampling respacing from ``cfg``."""
    check_stage_name(name)
    section = {"base": cfg.base, "upsampler": cfg.upsampler, "prior": cfg.prior}[name]
    hybrid = name == "base"
    return DiffusionConfig(
        schedule=section.schedule,
        steps=section.diffusion_steps,
        mean_type="x0" if name == "upsampler" else "eps",
        var_type="learned_range" if hybrid else "fixed_small",
        loss="hybrid" if hybrid else "simple",
        sampling_steps=str(section.sampling_steps),
    ).validate()


def train_config_for(name: str, cfg: RodinConfig) -> TrainConfig:
    """The optimisation settings of stage ``name``."""
    check_stage_name(name)
    return {"base": cfg.base, "upsampler": cfg.upsampler, "prior": cfg.prior}[name].train


def stage_config(name: str, cfg: RodinConfig) -> dict[str, Any]:
    """The JSON a stage saves beside its weights: enough to rebuild its networks (:func:`model_from_config`)."""
    network = latent_mlp_config_for(cfg).to_dict() if name == "prior" else unet_config_for(name, cfg).to_dict()
    return {"stage": name, "rodin": cfg.to_dict(), "network": network,
            "diffusion": diffusion_config_for(name, cfg).to_dict()}


def model_from_config(config: dict[str, Any]) -> nn.Module:
    """The untrained network described by a :func:`stage_config` dict (load weights with strict keys after)."""
    try:
        name, network = config["stage"], config["network"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a stage config (needs 'stage' and 'network' keys): {str(config)[:200]}") from exc
    check_stage_name(name)
    return LatentMLP(LatentMLPConfig.from_dict(network)) if name == "prior" else TriplaneUNet(
        UNetConfig.from_dict(network))

