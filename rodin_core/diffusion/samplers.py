"""Samplers: the ancestral sampler (paper §3.2 and appendix A, Eq. 7) and DDIM.

:func:`ancestral_sample` is the stochastic sampler Rodin uses (§3.2, after Ho et al. 2020, "Denoising
Diffusion Probabilistic Models", Algorithm 2): x_{t-1} ~ N(μ_θ(x_t, t), σ_t²), with no noise at the
last step. :func:`ddim_sample` is the generalised step of Song et al. 2021 ("Denoising Diffusion
Implicit Models", Eq. 12, σ_t(η) from Eq. 16): η = 0 is the deterministic DDIM, η = 1 matches the
ancestral sampler's marginals. Both take the process and the network as arguments and run over all
indices of the process given, so a respaced process (:mod:`rodin_core.diffusion.respace`) samples
in fewer steps.

Every random draw comes from ``generator`` (or the global RNG when it is None), so a fixed seed
gives a fixed sample. ``callback(step, t, x_t, pred_xstart)`` sees each state x_t before it is
denoised, its original timestep t and the model's x̂_0 from it: the hook for progress reports and
for x̂_0 renders along the chain (paper Fig. 15).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from rodin_core.diffusion.gaussian import DiffusionModel, GaussianDiffusion

SampleCallback = Callable[[int, int, Tensor, Tensor], None]
"""``callback(step, t, x_t, pred_xstart)``: loop step (0 first), original timestep, state, x̂_0."""
StepFunction = Callable[[GaussianDiffusion, dict[str, Tensor], Tensor, Tensor, bool, torch.Generator | None], Tensor]
"""``step(diffusion, p_mean_variance output, x_t, t (B,), is_last, generator) -> x_{t-1}``."""


def ancestral_sample(
    diffusion: GaussianDiffusion,
    model: DiffusionModel,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    model_kwargs: dict[str, Any] | None = None,
    clip_denoised: bool | float = False,
    progress: bool = False,
    callback: SampleCallback | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """A sample (shape) from x_T ~ N(0, I) by x_{t-1} = μ_θ + σ_t z, z ~ N(0, I), and x_0 = μ_θ at the end.

    ``noise`` replaces the initial x_T (then ``shape`` must match it); ``device`` defaults to that of
    ``noise``, else of ``generator``, else the CPU; ``generator`` must live on that device.
    """
    return _sample_loop(
        diffusion, model, shape, _ancestral_step,
        generator=generator, noise=noise, model_kwargs=model_kwargs, clip_denoised=clip_denoised,
        progress=progress, callback=callback, device=device,
    )


def ddim_sample(
    diffusion: GaussianDiffusion,
    model: DiffusionModel,
    shape: Sequence[int],
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    model_kwargs: dict[str, Any] | None = None,
    clip_denoised: bool | float = False,
    progress: bool = False,
    callback: SampleCallback | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """A sample by the DDIM update (Song et al. 2021, Eq. 12):

    x_{t-1} = sqrt(ᾱ_{t-1}) x̂_0 + sqrt(1 - ᾱ_{t-1} - σ_t²) ε̂ + σ_t z, with
    σ_t = η · sqrt((1 - ᾱ_{t-1}) / (1 - ᾱ_t)) · sqrt(1 - ᾱ_t / ᾱ_{t-1}) (Eq. 16). η = 0 draws no noise
    after x_T, so the sample is a deterministic function of x_T. Other arguments as
    :func:`ancestral_sample`; the model's variance channels, if any, are ignored.
    """
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    return _sample_loop(
        diffusion, model, shape, functools.partial(_ddim_step, eta=eta),
        generator=generator, noise=noise, model_kwargs=model_kwargs, clip_denoised=clip_denoised,
        progress=progress, callback=callback, device=device,
    )


def _ancestral_step(
    diffusion: GaussianDiffusion,
    out: dict[str, Tensor],
    x: Tensor,
    t: Tensor,
    is_last: bool,
    generator: torch.Generator | None,
) -> Tensor:
    if is_last:
        return out["mean"]
    return out["mean"] + torch.exp(0.5 * out["log_variance"]) * _randn_like(x, generator)


def _ddim_step(
    diffusion: GaussianDiffusion,
    out: dict[str, Tensor],
    x: Tensor,
    t: Tensor,
    is_last: bool,
    generator: torch.Generator | None,
    *,
    eta: float,
) -> Tensor:
    alpha_bar = diffusion.extract(diffusion.alphas_cumprod, t, x)  # (B, 1, ...)
    alpha_bar_prev = diffusion.extract(diffusion.alphas_cumprod_prev, t, x)  # (B, 1, ...)
    sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev))
    direction = torch.sqrt((1 - alpha_bar_prev - sigma**2).clamp(min=0.0)) * out["eps"]
    x_prev = torch.sqrt(alpha_bar_prev) * out["pred_xstart"] + direction
    if eta == 0 or is_last:
        return x_prev
    return x_prev + sigma * _randn_like(x, generator)


@torch.no_grad()
def _sample_loop(
    diffusion: GaussianDiffusion,
    model: DiffusionModel,
    shape: Sequence[int],
    step: StepFunction,
    *,
    generator: torch.Generator | None,
    noise: Tensor | None,
    model_kwargs: dict[str, Any] | None,
    clip_denoised: bool | float,
    progress: bool,
    callback: SampleCallback | None,
    device: torch.device | str | None,
) -> Tensor:
    shape = tuple(shape)
    if noise is not None:
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} differs from the requested shape {shape}")
        x = noise.to(device) if device is not None else noise
    else:
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        x = torch.randn(shape, generator=generator, device=device)
    indices = list(range(diffusion.num_timesteps))[::-1]
    for loop_step, index in enumerate(tqdm(indices, desc="sampling", disable=not progress, leave=False)):
        t = torch.full((shape[0],), index, dtype=torch.long, device=x.device)  # (B,)
        out = diffusion.p_mean_variance(model, x, t, model_kwargs, clip_denoised)
        if callback is not None:
            callback(loop_step, int(diffusion.timestep_map[index]), x, out["pred_xstart"])
        x = step(diffusion, out, x, t, index == 0, generator)
    return x


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
