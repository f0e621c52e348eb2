"""Classifier-free guidance (paper §3.2, Eq. 3; Ho & Salimans 2022, "Classifier-Free Diffusion Guidance").

Rodin's base model is trained with its latent z zeroed 20% of the time, so the same network gives a
conditional prediction ε_θ(y, z) and an unconditional one ε_θ(y) = ε_θ(y, 0). Sampling then uses

    ε̂_θ(y, z) = λ ε_θ(y, z) + (1 - λ) ε_θ(y)                                   (Eq. 3)

with guidance strength λ (λ = 1: conditional, λ = 0: unconditional, λ > 1: stronger guidance).
For a model predicting x_0 (the upsampler, §3.3) the same combination is applied to its x̂_0
prediction. With a learned variance only the first C channels (the ε or x_0 prediction) are
guided; the variance channels are taken from the conditional branch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from rodin_core.diffusion.gaussian import DiffusionModel


def classifier_free_guidance(model: DiffusionModel, scale: float, latent_key: str = "z") -> DiffusionModel:
    """Wrap ``model`` so that it returns the guided prediction of Eq. 3 with λ = ``scale``.

    The wrapper is called like the model, ``(x (B, C, ...), t (B,), **model_kwargs)``. When
    ``model_kwargs[latent_key]`` is a tensor, both branches run in one forward pass over a batch of
    2B: the first half with z, the second with z zeroed; every other tensor in ``model_kwargs``
    must be batch-first and is repeated. Without a latent (absent or None) the two branches agree
    and the model is called once. λ = 1 calls the model once with z, returning exactly its output.
    """
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"guidance scale must be a finite number >= 0 (paper Eq. 3: λ > 0), got {scale!r}")

    def guided(x: Tensor, t: Tensor, **model_kwargs: Any) -> Tensor:
        latent = model_kwargs.get(latent_key)
        if scale == 1.0 or latent is None:
            return model(x, t, **model_kwargs)
        batch, channels = x.shape[:2]
        doubled = {key: _repeat_batch(key, value, batch) for key, value in model_kwargs.items()}
        doubled[latent_key] = torch.cat([latent, torch.zeros_like(latent)], dim=0)  # (2B, ...)
        output = model(torch.cat([x, x], dim=0), torch.cat([t, t], dim=0), **doubled)  # (2B, C or 2C, ...)
        conditional, unconditional = output.chunk(2, dim=0)  # (B, C or 2C, ...) each
        prediction = scale * conditional[:, :channels] + (1.0 - scale) * unconditional[:, :channels]
        return torch.cat([prediction, conditional[:, channels:]], dim=1)

    return guided


def switch_latent(model: DiffusionModel, early: Tensor, from_t: int, latent_key: str = "z") -> DiffusionModel:
    """Wrap ``model`` so that every reverse step at an original timestep t >= ``from_t`` sees ``early`` (B, ...)
    in place of ``model_kwargs[latent_key]``, and the later steps (t < ``from_t``) the latent given.

    The early, noisy steps lay out the coarse sample and the late ones its details (Meng et al. 2022,
    "SDEdit", §3), so a sample conditioned on one latent first and another afterwards keeps the first
    one's layout. ``from_t`` <= 0 never switches to ``early``; ``from_t`` above the last timestep
    always uses the latent given. Called like the model, ``(x (B, ...), t (B,), **model_kwargs)``.
    """

    def switched(x: Tensor, t: Tensor, **model_kwargs: Any) -> Tensor:
        latent = model_kwargs.get(latent_key)
        if latent is None:
            return model(x, t, **model_kwargs)
        if early.shape != latent.shape:
            raise ValueError(f"the early latent has shape {tuple(early.shape)}, the model's {latent_key!r} "
                             f"{tuple(latent.shape)}; give one row per sample")
        before = (t >= from_t).reshape(-1, *([1] * (latent.dim() - 1)))  # (B, 1, ...)
        chosen = torch.where(before, early.to(latent), latent)
        return model(x, t, **{**model_kwargs, latent_key: chosen})

    return switched


def _repeat_batch(key: str, value: Any, batch: int) -> Any:
    """A batch-first tensor (B, ...) repeated to (2B, ...); anything else passes unchanged."""
    if not isinstance(value, Tensor):
        return value
    if value.dim() == 0 or value.shape[0] != batch:
        raise ValueError(
            f"model_kwargs[{key!r}] must be batch-first with {batch} rows for guidance, got shape {tuple(value.shape)}"
        )
    return torch.cat([value, value], dim=0)
