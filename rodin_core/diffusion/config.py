"""The diffusion formulation's config and its builder (paper §3.2-3.3, appendix B.1).

Defaults are the paper's base model: 1,000 steps of the linear schedule (appendix B.1), ε
prediction (§3.2, Eq. 2) with the hybrid loss L_simple + λ·L_vlb and a learned-range variance
(§3.2, "as suggested in [41]", Nichol & Dhariwal 2021 with λ = 0.001), sampled in 100 steps
(appendix B.1). The upsampler (§3.3) sets ``mean_type="x0"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rodin_core.config_dict import DictConfig
from rodin_core.diffusion.gaussian import (
    GaussianDiffusion,
    LossType,
    LossWeighting,
    ModelMeanType,
    ModelVarType,
)
from rodin_core.diffusion.respace import respace_diffusion, space_timesteps
from rodin_core.diffusion.schedules import SCHEDULES, get_beta_schedule


@dataclass
class DiffusionConfig(DictConfig):
    """How one diffusion stage noises its data, what its network predicts and how it is sampled."""

    schedule: str = "linear"
    """Beta schedule name: "linear" (Ho et al. 2020; the paper's) or "cosine" (Nichol & Dhariwal 2021)."""
    steps: int = 1000
    """Training diffusion steps T (paper: 1,000)."""
    mean_type: str = "eps"
    """What the network predicts: "eps" (the paper's base model, §3.2), "x0" (the upsampler, §3.3) or "v"
    (sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x_0, Salimans & Ho 2022)."""
    var_type: str = "learned_range"
    """Reverse variance: "fixed_small" (β̃_t), "fixed_large" (β_t) or "learned_range" (Nichol & Dhariwal Eq. 15)."""
    loss: str = "hybrid"
    """Training loss: "simple" (Eq. 2) or "hybrid" (+ λ·L_vlb; requires var_type "learned_range")."""
    vlb_weight: float = 0.001
    """λ of the hybrid loss (Nichol & Dhariwal 2021: 0.001)."""
    loss_weighting: str = "uniform"
    """Per-timestep weight of L_simple: "uniform" (the paper's, Eq. 2) or "min_snr" (min-SNR-γ, Hang et al.
    2023: the x_0 error weighted by min(SNR_t, γ), whatever the network predicts)."""
    min_snr_gamma: float = 5.0
    """γ of the min-SNR weighting (Hang et al. 2023: 5)."""
    sampling_steps: str = "100"
    """Respacing used for sampling: "N" steps, "ddimN", or section counts "a,b,c" (paper: 100)."""
    clip_x0: float = 4.0
    """Bound on the predicted clean sample at every reverse step while sampling: x̂0 is clamped to
    [-clip_x0, clip_x0] in the data's normalised units (tri-planes standardised per channel, latents by their
    RMS), so that an ε error amplified by 1/sqrt(ᾱ_t) cannot blow a sample up; 0 keeps x̂0 as predicted."""

    def validate(self) -> DiffusionConfig:
        """Raise ValueError naming the first bad field, its value and the valid choices; return self."""
        _check_choice("schedule", self.schedule, SCHEDULES)
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 2:
            raise ValueError(f"bad value for diffusion.steps: {self.steps!r}; expected an int >= 2")
        _check_choice("mean_type", self.mean_type, [member.value for member in ModelMeanType])
        _check_choice("var_type", self.var_type, [member.value for member in ModelVarType])
        _check_choice("loss", self.loss, [member.value for member in LossType])
        if (self.var_type == ModelVarType.LEARNED_RANGE.value) != (self.loss == LossType.HYBRID.value):
            raise ValueError(
                f"bad value for diffusion.loss: {self.loss!r} with var_type {self.var_type!r}; "
                "choices: loss 'hybrid' with var_type 'learned_range', or loss 'simple' with a fixed var_type"
            )
        _check_choice("loss_weighting", self.loss_weighting, [member.value for member in LossWeighting])
        if not isinstance(self.min_snr_gamma, (int, float)) or isinstance(self.min_snr_gamma, bool) or not (
                0.0 < self.min_snr_gamma < float("inf")):
            raise ValueError(f"bad value for diffusion.min_snr_gamma: {self.min_snr_gamma!r}; expected a finite "
                             "number > 0")
        if not isinstance(self.vlb_weight, (int, float)) or not self.vlb_weight > 0:
            raise ValueError(f"bad value for diffusion.vlb_weight: {self.vlb_weight!r}; expected a number > 0")
        if not isinstance(self.clip_x0, (int, float)) or isinstance(self.clip_x0, bool) or not (
                0.0 <= self.clip_x0 < float("inf")):
            raise ValueError(f"bad value for diffusion.clip_x0: {self.clip_x0!r}; expected a finite number >= 0 "
                             "(0 turns clipping off)")
        try:
            get_beta_schedule(self.schedule, self.steps)
        except ValueError as error:
            raise ValueError(f"bad value for diffusion.steps: {self.steps!r} ({error})") from error
        try:
            space_timesteps(self.steps, str(self.sampling_steps))
        except ValueError as error:
            raise ValueError(f"bad value for diffusion.sampling_steps: {self.sampling_steps!r} ({error})") from error
        return self


def build_diffusion(cfg: DiffusionConfig, respacing: str | int | None = None) -> GaussianDiffusion:
    """The process ``cfg`` describes: all ``cfg.steps`` steps (for training) when ``respacing`` is None,
    else the steps :func:`~rodin_core.diffusion.respace.space_timesteps` keeps for it (for sampling,
    typically ``cfg.sampling_steps``)."""
    cfg.validate()
    diffusion = GaussianDiffusion(
        get_beta_schedule(cfg.schedule, cfg.steps),
        mean_type=ModelMeanType(cfg.mean_type),
        var_type=ModelVarType(cfg.var_type),
        loss_type=LossType(cfg.loss),
        vlb_weight=cfg.vlb_weight,
        loss_weighting=LossWeighting(cfg.loss_weighting),
        min_snr_gamma=float(cfg.min_snr_gamma),
    )
    if respacing is None:
        return diffusion
    return respace_diffusion(diffusion, space_timesteps(cfg.steps, respacing))


def _check_choice(name: str, value: Any, choices: list[str] | tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"bad value for diffusion.{name}: {value!r}; choices: {', '.join(map(repr, choices))}")
