"""What each diffusion stage is: its config section, its network and the JSON saved with its weights.

Rodin has three diffusion models (paper §3.2, §3.3, appendix B.1, B.4): the latent-conditioned base
model on tri-planes at the base resolution, the tri-plane upsampler and the latent prior over z;
the text prior (appendix B.5), z from a text embedding, is a fourth stage trained on its own.
Each has a section of :class:`~rodin_core.config.RodinConfig` holding its network config, its
diffusion process and its optimisation. Training builds them from here and generation rebuilds
them from a checkpoint's JSON through :func:`model_from_config`, so loading a model to sample
never needs the training code.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from rodin_core.config import (
    BaseStageConfig,
    LatentMLPConfig,
    PriorStageConfig,
    RodinConfig,
    TrainConfig,
    UNetConfig,
    UpsamplerStageConfig,
)
from rodin_core.config.text_prior import TextPriorSection
from rodin_core.networks import LatentMLP, TextLatentMLPConfig, TriplaneUNet

STAGE_NAMES = ("base", "upsampler", "prior")
"""The stages of one generator (``rodin train all``, what ``rodin sample`` reads)."""
TEXT_PRIOR = "text_prior"
"""The text prior's stage (appendix B.5): trained after the others, read by ``rodin text``."""
TRAINED_STAGES = (*STAGE_NAMES, TEXT_PRIOR)
"""Every diffusion stage trained on Ray Train."""


def check_stage_name(name: str) -> None:
    """Raise ValueError unless ``name`` is one of :data:`TRAINED_STAGES`."""
    if name not in TRAINED_STAGES:
        raise ValueError(f"unknown training stage {name!r}; choose one of {TRAINED_STAGES}")


def stage_section(name: str, cfg: RodinConfig
                  ) -> BaseStageConfig | UpsamplerStageConfig | PriorStageConfig | TextPriorSection:
    """The config section of stage ``name``: ``cfg.base``, ``cfg.upsampler``, ``cfg.prior`` or ``cfg.text_prior``."""
    check_stage_name(name)
    return {"base": cfg.base, "upsampler": cfg.upsampler, "prior": cfg.prior, TEXT_PRIOR: cfg.text_prior}[name]


def network_config(name: str, cfg: RodinConfig) -> UNetConfig | LatentMLPConfig:
    """The network of stage ``name``: the U-Net of the base (§3.2) or upsampler (§3.3), the MLP of the prior (B.4)
    or of the text prior (B.5)."""
    section = stage_section(name, cfg)
    return section.mlp if isinstance(section, (PriorStageConfig, TextPriorSection)) else section.unet


def train_config_for(name: str, cfg: RodinConfig) -> TrainConfig:
    """The optimisation settings of stage ``name``."""
    return stage_section(name, cfg).train


def stage_config(name: str, cfg: RodinConfig) -> dict[str, Any]:
    """The JSON a stage saves beside its weights: enough to rebuild its networks (:func:`model_from_config`)."""
    return {"stage": name, "rodin": cfg.to_dict(), "network": network_config(name, cfg).to_dict(),
            "diffusion": stage_section(name, cfg).diffusion.to_dict()}


def model_from_config(config: dict[str, Any]) -> nn.Module:
    """The untrained network described by a :func:`stage_config` dict (load weights with strict keys after)."""
    try:
        name, network = config["stage"], config["network"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a stage config (needs 'stage' and 'network' keys): {str(config)[:200]}") from exc
    check_stage_name(name)
    if name == TEXT_PRIOR:
        return LatentMLP(TextLatentMLPConfig.from_dict(network))
    return LatentMLP(LatentMLPConfig.from_dict(network)) if name == "prior" else TriplaneUNet(
        UNetConfig.from_dict(network))
