"""Diffusion on rolled-out tri-planes (paper §3.2-3.3, appendix A): schedules, the Gaussian process and
its losses, respacing, the ancestral and DDIM samplers, and classifier-free guidance (Eq. 3)."""

from rodin_core.diffusion.config import DiffusionConfig, build_diffusion
from rodin_core.diffusion.gaussian import (
    DiffusionModel,
    GaussianDiffusion,
    LossType,
    LossWeighting,
    ModelMeanType,
    ModelVarType,
)
from rodin_core.diffusion.guidance import classifier_free_guidance
from rodin_core.diffusion.respace import respace_diffusion, space_timesteps
from rodin_core.diffusion.samplers import ancestral_sample, ddim_sample
from rodin_core.diffusion.schedules import SCHEDULES, get_beta_schedule

__all__ = [
    "SCHEDULES",
    "DiffusionConfig",
    "DiffusionModel",
    "GaussianDiffusion",
    "LossType",
    "LossWeighting",
    "ModelMeanType",
    "ModelVarType",
    "ancestral_sample",
    "build_diffusion",
    "classifier_free_guidance",
    "ddim_sample",
    "get_beta_schedule",
    "respace_diffusion",
    "space_timesteps",
]
