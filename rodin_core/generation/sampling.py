"""Sampling the trained stages: base tri-planes, upsampled tri-planes, prior latents (paper §3.2-3.3, B.1, B.4).

Each helper takes a trained network (usually a stage's EMA shadow, ``stage.modules["ema"]``, or a
network rebuilt with :func:`~.stages.model_from_config` and loaded from a checkpoint), the
:class:`~rodin_core.config.RodinConfig` it was trained with, and returns data in *raw* units: tri-planes
the decoder reads (denormalised with the corpus statistics) and latents in the encoder's scale.

- :func:`sample_base` (§3.2): rolled tri-planes at the base resolution, conditioned on z with
  classifier-free guidance ε̂ = λ ε(y, z) + (1 − λ) ε(y) (Eq. 3), or unconditional with z = None.
- :func:`sample_upsampler` (§3.3): full-resolution tri-planes from low-resolution ones (x_0 prediction).
- :func:`sample_prior` (appendix B.4): latents z for unconditional generation.

Sampling uses the stage's respacing (``diffusion.sampling_steps``, paper: 100 steps) unless ``respacing``
overrides it: ``"ddimN"`` runs deterministic DDIM (η = 0), anything else the ancestral sampler,
unless ``sampler`` (``"ancestral"`` or ``"ddim"``) names the update rule. ``on_x0(step, x̂0)`` sees
the predicted clean sample in raw units at every reverse step (Fig. 15). Every draw comes from
``generator``, so the same inputs and seed give the same output.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from rodin_core.config import RodinConfig
from rodin_core.diffusion import (
    DiffusionConfig,
    DiffusionModel,
    ancestral_sample,
    build_diffusion,
    classifier_free_guidance,
    ddim_sample,
)
from rodin_core.diffusion.guidance import switch_latent
from rodin_core.diffusion.samplers import SampleCallback
from rodin_core.networks.latent_normalizer import LatentNormalizer
from rodin_core.networks.unet import UNetConfig
from rodin_core.triplane.residual import ResidualTarget
from rodin_core.triplane.rollout import roll_in, roll_out
from rodin_core.triplane.stats import PlaneStats


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block, its previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


SAMPLERS = ("ancestral", "ddim")
"""Reverse-process update rules: the ancestral sampler (§3.2, Ho et al. 2020) and deterministic DDIM (η = 0)."""
X0Callback = Callable[[int, Tensor], None]
"""``on_x0(step, x0)``: loop step (0 first) and the predicted clean sample x̂0 in raw units (Fig. 15)."""


def implied_sampler(spacing: str) -> str:
    """The update rule a respacing string implies: DDIM (η = 0) for ``"ddimN"``, ancestral otherwise."""
    return "ddim" if str(spacing).startswith("ddim") else "ancestral"


def run_sampler(
    diffusion_cfg: DiffusionConfig,
    model: DiffusionModel,
    shape: tuple[int, ...],
    device: torch.device,
    generator: torch.Generator | None = None,
    model_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
    *,
    sampler: str | None = None,
    respacing: str | None = None,
    callback: SampleCallback | None = None,
) -> Tensor:
    """A sample of ``shape`` from the respaced process of ``diffusion_cfg``.

    ``respacing`` (default ``diffusion_cfg.sampling_steps``) picks the kept steps; ``sampler`` the update
    rule, by default DDIM η = 0 for a ``"ddimN"`` respacing and ancestral otherwise. x̂0 is clamped to
    ``±diffusion_cfg.clip_x0`` at every step (0: not clamped). ``callback`` goes to the sampler
    (:data:`~rodin_core.diffusion.samplers.SampleCallback`).
    """
    spacing = str(diffusion_cfg.sampling_steps if respacing is None else respacing)
    if sampler is None:
        sampler = implied_sampler(spacing)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    diffusion = build_diffusion(diffusion_cfg, spacing)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"the generator lives on {generator.device} but the model on {device}; "
                         f"create it with torch.Generator(device={str(device)!r})")
    kwargs: dict[str, Any] = {"generator": generator, "model_kwargs": model_kwargs, "progress": progress,
                              "device": device, "callback": callback,
                              "clip_denoised": float(diffusion_cfg.clip_x0) if diffusion_cfg.clip_x0 > 0 else False}
    if sampler == "ddim":
        return ddim_sample(diffusion, model, shape, eta=0.0, **kwargs)
    return ancestral_sample(diffusion, model, shape, **kwargs)


def _raw_x0_callback(on_x0: X0Callback | None, stats: PlaneStats,
                     to_planes: Callable[[Tensor], Tensor]) -> SampleCallback | None:
    """The sampler callback that hands ``on_x0`` the step's x̂0 as raw planes (n, 3, C, h, h)."""
    if on_x0 is None:
        return None

    def callback(step: int, t: int, x_t: Tensor, pred_xstart: Tensor) -> None:
        on_x0(step, stats.denormalize(roll_in(to_planes(pred_xstart))))  # (n, C, h, 3h) -> (n, 3, C, h, h)

    return callback


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _sample_planes(model: nn.Module, denoiser: DiffusionModel, diffusion: DiffusionConfig, unet: UNetConfig,
                   count: int, stats: PlaneStats, generator: torch.Generator | None,
                   model_kwargs: dict[str, Tensor] | None, progress: bool, sampler: str | None,
                   respacing: str | None, on_x0: X0Callback | None,
                   to_planes: Callable[[Tensor], Tensor] = lambda rolled: rolled) -> Tensor:
    """Raw tri-planes (count, 3, C, s, s) of the U-Net's size s: ``denoiser`` (``model`` or its guided wrapper)
    sampled with ``model`` in eval mode, mapped by ``to_planes`` from the diffused quantity to rolled
    normalised planes (the upsampler's residual), then rolled in and denormalised."""
    size = unet.image_size
    with evaluating(model):
        rolled = run_sampler(diffusion, denoiser, (count, unet.in_channels, size, 3 * size), _device(model),
                             generator, model_kwargs, progress, sampler=sampler, respacing=respacing,
                             callback=_raw_x0_callback(on_x0, stats, to_planes))  # (count, C, s, 3s)
    return stats.denormalize(roll_in(to_planes(rolled)))  # (count, 3, C, s, s)


def sample_base(
    model: nn.Module,
    cfg: RodinConfig,
    stats: PlaneStats,
    z: Tensor | None = None,
    *,
    n: int | None = None,
    generator: torch.Generator | None = None,
    guidance_scale: float | None = None,
    progress: bool = False,
    sampler: str | None = None,
    respacing: str | None = None,
    on_x0: X0Callback | None = None,
    early_z: Tensor | None = None,
    keep: float = 0.0,
) -> Tensor:
    """Raw tri-planes (n, 3, C, h, h) at the base resolution from the base U-Net.

    ``z`` (n, D): conditional sampling with CFG scale ``guidance_scale`` (default ``base.guidance_scale``);
    ``z=None``: unconditional (z = 0), ``n`` samples. ``sampler``, ``respacing``: see :func:`run_sampler`;
    ``on_x0(step, x̂0 (n, 3, C, h, h))`` at every reverse step. ``early_z`` (n, D) with ``keep`` in [0, 1]:
    the reverse steps at timesteps t >= (1 - keep) · T are conditioned on ``early_z`` instead of ``z``
    (:func:`~rodin_core.diffusion.guidance.switch_latent`): keep = 0 is plain sampling from ``z``, keep = 1
    sampling from ``early_z``.
    """
    unet = cfg.base.unet
    if z is None:
        if n is None or n < 1:
            raise ValueError(f"unconditional base sampling needs n >= 1 (no z given), got n={n!r}")
        count = n
    else:
        if z.dim() != 2 or z.shape[1] != unet.latent_dim or (n is not None and n != z.shape[0]):
            raise ValueError(f"z must be (n, {unet.latent_dim}) with n={n}, got {tuple(z.shape)}")
        count = z.shape[0]
    scale = cfg.base.guidance_scale if guidance_scale is None else guidance_scale
    if z is None:
        return _sample_planes(model, model, cfg.base.diffusion, unet, count, stats, generator, None, progress,
                              sampler, respacing, on_x0)
    kwargs = {"z": z.to(_device(model), torch.float32)}
    denoiser = classifier_free_guidance(model, scale)
    if early_z is not None and not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must lie in [0, 1] (the share of reverse steps conditioned on early_z), got {keep!r}")
    if early_z is not None and keep > 0:
        from_t = math.ceil((1.0 - keep) * cfg.base.diffusion.steps)
        denoiser = switch_latent(denoiser, early_z.to(_device(model), torch.float32), from_t)
    return _sample_planes(model, denoiser, cfg.base.diffusion, unet, count, stats,
                          generator, kwargs, progress, sampler, respacing, on_x0)


def sample_upsampler(
    model: nn.Module,
    cfg: RodinConfig,
    stats: PlaneStats,
    low_res: Tensor,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    sampler: str | None = None,
    respacing: str | None = None,
    on_x0: X0Callback | None = None,
) -> Tensor:
    """Raw full-resolution tri-planes (n, 3, C, H, H) from raw low-resolution ones (n, 3, C, h, h).

    With ``upsampler.residual`` the sample is the bilinear up-sample of ``low_res`` plus the sampled
    residual (:mod:`rodin_core.triplane.residual`). ``sampler``, ``respacing``: see :func:`run_sampler`; ``on_x0(step, x̂0 (n, 3, C, H, H))`` at every reverse step.
    """
    unet = cfg.upsampler.unet
    h = cfg.triplane.rescale_min
    if low_res.dim() != 5 or tuple(low_res.shape[1:]) != (3, unet.in_channels, h, h):
        raise ValueError(f"low_res must be raw tri-planes (n, 3, {unet.in_channels}, {h}, {h}), got {tuple(low_res.shape)}")
    condition = roll_out(stats.normalize(low_res.to(_device(model), torch.float32)))  # (n, C, h, 3h)
    section = cfg.upsampler
    target = ResidualTarget.of(condition, unet.image_size, section.residual_scale, section.residual)
    return _sample_planes(model, model, section.diffusion, unet, low_res.shape[0], stats, generator,
                          {"low_res": condition}, progress, sampler, respacing, on_x0, target.decode)


def sample_prior(
    model: nn.Module,
    latent_norm: LatentNormalizer,
    cfg: RodinConfig,
    n: int,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Raw latents z (n, D) from the latent prior (appendix B.4), in the encoder's scale.

    The draws are not brought back to the encoder's sphere of radius sqrt(D), although every encoder's z
    lies on it: a short-trained prior's draws land further out (norm 25-34 for D = 128 on the small run),
    and projecting them shrinks what they add to the prior's mean direction. Measured on the same
    checkpoints, the samples' Fréchet distance rose from 25.4 to 82.1 (small run, 64 samples) and from
    68.5 to 93.8 (tiny demo, 16 samples) with the projection.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    latent_dim = cfg.prior.mlp.latent_dim
    device = _device(model)
    with evaluating(model):
        z = run_sampler(cfg.prior.diffusion, model, (n, latent_dim), device, generator,
                        None, progress)  # (n, D)
    return latent_norm.to(device).denormalize(z)  # (n, D)
