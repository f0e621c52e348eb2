"""Gaussian diffusion on tri-planes: forward process, reverse-process parameterisations, training loss.

Paper appendix A: the forward process q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I) (Eq. 5) and the
reverse step x_{t-1} = μ_θ(x_t, t) + σ_t z (Eq. 7), after Ho et al. 2020 ("Denoising Diffusion
Probabilistic Models", Eq. 4, 6-7, 11). §3.2: the base model predicts ε and is trained with
L_simple (Eq. 2) plus λ·L_vlb, the hybrid objective of Nichol & Dhariwal 2021 ("Improved Denoising
Diffusion Probabilistic Models", Eq. 16) with its learned-range variance (Eq. 15). §3.3: the
upsampler predicts x_0 instead of ε (:attr:`ModelMeanType.START_X`).

The process never owns the network: every method that needs it takes ``model`` as an argument and
calls ``model(x_t, t_model, **model_kwargs)``, where ``t_model`` is the timestep of the original
(un-respaced) process (see :mod:`rodin_core.diffusion.respace`). Schedule-derived arrays are kept in
float64 numpy and cast to the device and dtype of the data when gathered.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from rodin_core.diffusion.losses import (
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
)


class ModelMeanType(enum.Enum):
    """What the network's first C output channels predict."""

    EPSILON = "eps"
    """The added noise ε (Ho et al. 2020; Rodin's base model, §3.2 Eq. 2)."""
    START_X = "x0"
    """The clean sample x_0 (Rodin's upsampler, §3.3)."""
    VELOCITY = "v"
    """The velocity v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x_0 (Salimans & Ho 2022, "Progressive Distillation for
    Fast Sampling of Diffusion Models", §4 and appendix D)."""


class LossWeighting(enum.Enum):
    """How the per-timestep squared errors of L_simple are weighted."""

    UNIFORM = "uniform"
    """Every timestep counts the same on the predicted quantity (Ho et al. 2020, Eq. 14; Rodin Eq. 2)."""
    MIN_SNR = "min_snr"
    """Min-SNR-γ (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", Eq. 7):
    the x_0 error weighted by min(SNR_t, γ), SNR_t = ᾱ_t / (1 − ᾱ_t), i.e. a weight of min(SNR_t, γ) / SNR_t
    on the ε error, min(SNR_t, γ) on the x_0 error and min(SNR_t, γ) / (SNR_t + 1) on the v error."""


class ModelVarType(enum.Enum):
    """How the reverse-step variance σ_t² is chosen."""

    FIXED_SMALL = "fixed_small"
    """σ_t² = β̃_t, the posterior variance (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t (Ho et al. 2020, §3.2)."""
    FIXED_LARGE = "fixed_large"
    """σ_t² = β_t (with β̃_1 at t = 0 for a usable decoder likelihood, as improved-diffusion does)."""
    LEARNED_RANGE = "learned_range"
    """σ_t² = exp(u log β_t + (1 - u) log β̃_t), u = (v + 1) / 2 from C extra channels v in [-1, 1]
    (Nichol & Dhariwal 2021, Eq. 15)."""


class LossType(enum.Enum):
    """The training objective."""

    SIMPLE = "simple"
    """L_simple: mean squared error on the mean target (Ho et al. 2020, Eq. 14; Rodin Eq. 2)."""
    HYBRID = "hybrid"
    """L_simple + λ·L_vlb, L_vlb training only the variance (Nichol & Dhariwal 2021, Eq. 16)."""


class DiffusionModel(Protocol):
    """A denoiser: ``(x_t (B, C, ...), t (B,) original timesteps, **kwargs) -> (B, C or 2C, ...)``."""

    def __call__(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor: ...


class GaussianDiffusion:
    """A discrete-time Gaussian diffusion process with T = len(betas) steps (indices 0..T-1).

    ``timestep_map[i]`` is the original timestep the model is shown for index ``i`` (the identity
    unless the process was respaced). ``vlb_weight`` is λ of the hybrid loss (0.001 in Nichol &
    Dhariwal 2021).
    """

    def __init__(
        self,
        betas: np.ndarray,
        mean_type: ModelMeanType = ModelMeanType.EPSILON,
        var_type: ModelVarType = ModelVarType.FIXED_SMALL,
        loss_type: LossType = LossType.SIMPLE,
        vlb_weight: float = 0.001,
        timestep_map: Sequence[int] | np.ndarray | None = None,
        loss_weighting: LossWeighting | str = LossWeighting.UNIFORM,
        min_snr_gamma: float = 5.0,
    ) -> None:
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.shape[0] < 2:
            raise ValueError(f"betas must be a 1-D array of at least 2 steps, got shape {betas.shape}")
        if not np.all((betas > 0) & (betas < 1)):
            raise ValueError(f"every beta must lie in (0, 1); got min {betas.min()!r}, max {betas.max()!r}")
        self.mean_type = ModelMeanType(mean_type)
        self.var_type = ModelVarType(var_type)
        self.loss_type = LossType(loss_type)
        learned = self.var_type is ModelVarType.LEARNED_RANGE
        if learned != (self.loss_type is LossType.HYBRID):
            raise ValueError(
                f"var_type {self.var_type.value!r} with loss {self.loss_type.value!r}: a learned variance is "
                "trained only by the hybrid loss and the hybrid loss trains only a learned variance; "
                "use learned_range with hybrid, or a fixed variance with simple"
            )
        if not vlb_weight > 0:
            raise ValueError(f"vlb_weight must be positive, got {vlb_weight!r}")
        self.vlb_weight = float(vlb_weight)
        self.loss_weighting = LossWeighting(loss_weighting)
        if not (math.isfinite(min_snr_gamma) and min_snr_gamma > 0):
            raise ValueError(f"min_snr_gamma must be a finite number > 0, got {min_snr_gamma!r}")
        self.min_snr_gamma = float(min_snr_gamma)
        self.num_timesteps = int(betas.shape[0])
        self.timestep_map = np.arange(self.num_timesteps) if timestep_map is None else np.asarray(timestep_map)
        if self.timestep_map.shape != betas.shape or self.timestep_map.dtype.kind not in "iu":
            raise ValueError(
                f"timestep_map must hold {self.num_timesteps} ints, got {self.timestep_map.dtype} "
                f"of shape {self.timestep_map.shape}"
            )
        self.timestep_map = self.timestep_map.astype(np.int64)

        self.betas = betas
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)  # ᾱ_t
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])  # ᾱ_{t-1}, ᾱ_{-1} = 1
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)  # SNR_t = ᾱ_t / (1 - ᾱ_t)
        # q(x_{t-1} | x_t, x_0) (Ho et al. 2020, Eq. 6-7); β̃_0 = 0, so its log is clipped to log β̃_1.
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        # log β_t, the upper end of LEARNED_RANGE, and FIXED_LARGE's log-variance (β̃_1 at t = 0).
        self.log_betas = np.log(betas)
        self.large_log_variance = np.log(np.append(self.posterior_variance[1], betas[1:]))

    def model_timesteps(self, t: Tensor) -> Tensor:
        """The original timesteps (B,) the model sees for process indices ``t`` (B,)."""
        return torch.from_numpy(self.timestep_map)[self._indices(t)].to(t.device)

    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and log-variance of q(x_t | x_0) (appendix A, Eq. 5), each shaped like ``x0``."""
        mean = self.extract(self.sqrt_alphas_cumprod, t, x0) * x0
        variance = self.extract(1.0 - self.alphas_cumprod, t, x0).expand_as(x0)
        log_variance = self.extract(self.log_one_minus_alphas_cumprod, t, x0).expand_as(x0)
        return mean, variance, log_variance

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """Draw x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε (Eq. 5); ε ~ N(0, I) from the global RNG if not given."""
        if noise is None:
            noise = torch.randn_like(x0)
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}")
        return self.extract(self.sqrt_alphas_cumprod, t, x0) * x0 + self.extract(
            self.sqrt_one_minus_alphas_cumprod, t, x0
        ) * noise

    def q_posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, Eq. 6-7)."""
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 shape {tuple(x0.shape)} differs from x_t shape {tuple(x_t.shape)}")
        mean = self.extract(self.posterior_mean_coef1, t, x_t) * x0 + self.extract(
            self.posterior_mean_coef2, t, x_t
        ) * x_t
        variance = self.extract(self.posterior_variance, t, x_t).expand_as(x_t)
        log_variance = self.extract(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    def predict_xstart_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_0 = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t), Eq. 5 solved for x_0."""
        return self.extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - self.extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        ) * eps

    def predict_v(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x_0 (Salimans & Ho 2022, §4)."""
        return self.extract(self.sqrt_alphas_cumprod, t, x0) * eps - self.extract(
            self.sqrt_one_minus_alphas_cumprod, t, x0) * x0

    def predict_xstart_from_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """x_0 = sqrt(ᾱ_t) x_t − sqrt(1 − ᾱ_t) v, the definitions of x_t and v solved for x_0."""
        return self.extract(self.sqrt_alphas_cumprod, t, x_t) * x_t - self.extract(
            self.sqrt_one_minus_alphas_cumprod, t, x_t) * v

    def loss_weights(self, t: Tensor, like: Tensor) -> Tensor:
        """Per-sample weights (B,) of the squared error of the predicted quantity (:class:`LossWeighting`)."""
        if self.loss_weighting is LossWeighting.UNIFORM:
            return torch.ones(t.shape[0], dtype=like.dtype, device=like.device)
        snr = self.snr[self._indices(t).numpy()]  # (B,) float64
        clipped = np.minimum(snr, self.min_snr_gamma)
        if self.mean_type is ModelMeanType.EPSILON:
            weights = clipped / snr
        elif self.mean_type is ModelMeanType.START_X:
            weights = clipped
        else:
            weights = clipped / (snr + 1.0)
        return torch.from_numpy(weights).to(device=like.device, dtype=like.dtype)

    def predict_eps_from_xstart(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """ε = (x_t - sqrt(ᾱ_t) x_0) / sqrt(1 - ᾱ_t), Eq. 5 solved for ε."""
        return (self.extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / self.extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    def p_mean_variance(
        self,
        model: DiffusionModel,
        x_t: Tensor,
        t: Tensor,
        model_kwargs: dict[str, Any] | None = None,
        clip_denoised: bool | float = False,
    ) -> dict[str, Tensor]:
        """The reverse step p(x_{t-1} | x_t) = N(mean, variance) predicted by ``model``.

        Returns ``mean``, ``variance``, ``log_variance``, ``pred_xstart`` and ``eps`` (the noise
        implied by ``pred_xstart``; the model's own ε when it predicts ε and nothing is clipped), each
        shaped like ``x_t`` (B, C, ...). ``clip_denoised``: False keeps x̂_0 as predicted, True clamps
        it to [-1, 1], a positive number b clamps it to [-b, b] (tri-plane features are not bounded
        by 1 in general).
        """
        output = model(x_t, self.model_timesteps(t), **(model_kwargs or {}))
        return self._reverse_step(output, x_t, t, clip_denoised)

    def training_losses(
        self,
        model: DiffusionModel,
        x0: Tensor,
        t: Tensor,
        noise: Tensor | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """Per-sample training losses (B,) for data ``x0`` (B, C, ...) at process indices ``t`` (B,).

        ``mse``: L_simple, the squared error of the first C output channels against ε, x_0 or v (per
        mean type), averaged over all but the batch dimension and weighted per timestep by
        :meth:`loss_weights` (1 with uniform weighting). ``vb`` (hybrid loss only): the term
        λ·L_vlb with L_vlb estimated from the one sampled step as T·L_t, so ``vb = vlb_weight ·
        num_timesteps · L_t``; for λ = 0.001 this is improved-diffusion's ``L_t · num_timesteps /
        1000``. L_t is in bits per dimension: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for
        t > 0, the discretised-Gaussian decoder NLL of x_0 at t = 0. The predicted mean is detached
        inside L_t, so L_vlb trains only the variance channels (Nichol & Dhariwal 2021, §3.1).
        ``loss`` = ``mse`` (+ ``vb``). ``pred_xstart`` (B, C, ...): x̂_0 with gradient, for image-space
        losses on the prediction such as the upsampler's perceptual loss (§3.3, Eq. 4).
        """
        if noise is None:
            noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        output = model(x_t, self.model_timesteps(t), **(model_kwargs or {}))
        prediction, var_values = self._split_output(output, x_t)
        if self.mean_type is ModelMeanType.EPSILON:
            target = noise
        elif self.mean_type is ModelMeanType.START_X:
            target = x0
        else:
            target = self.predict_v(x0, t, noise)
        terms = {"mse": self.loss_weights(t, x0) * mean_flat((target - prediction) ** 2)}
        terms["pred_xstart"] = self._xstart_from_prediction(prediction, x_t, t)
        terms["loss"] = terms["mse"]
        if self.loss_type is LossType.HYBRID:
            frozen = torch.cat([prediction.detach(), var_values], dim=1)  # (B, 2C, ...)
            step = self._reverse_step(frozen, x_t, t, clip_denoised=False)
            terms["vb"] = self.vlb_weight * self.num_timesteps * self._vlb_term_bits(x0, x_t, t, step)
            terms["loss"] = terms["mse"] + terms["vb"]
        return terms

    def _reverse_step(self, output: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool | float) -> dict[str, Tensor]:
        prediction, var_values = self._split_output(output, x_t)
        if self.var_type is ModelVarType.LEARNED_RANGE:
            min_log = self.extract(self.posterior_log_variance_clipped, t, x_t)
            max_log = self.extract(self.log_betas, t, x_t)
            fraction = (var_values + 1.0) / 2.0
            log_variance = fraction * max_log + (1.0 - fraction) * min_log
        elif self.var_type is ModelVarType.FIXED_LARGE:
            log_variance = self.extract(self.large_log_variance, t, x_t).expand_as(x_t)
        else:
            log_variance = self.extract(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)
        pred_xstart = _clip(self._xstart_from_prediction(prediction, x_t, t), clip_denoised)
        if self.mean_type is ModelMeanType.EPSILON and clip_denoised is False:
            eps = prediction
        else:
            eps = self.predict_eps_from_xstart(x_t, t, pred_xstart)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
        return {
            "mean": mean,
            "variance": torch.exp(log_variance),
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
            "eps": eps,
        }

    def _split_output(self, output: Tensor, x_t: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, C, ...) -> (prediction, None); (B, 2C, ...) -> (prediction, variance values) if learned."""
        channels = x_t.shape[1]
        learned = self.var_type is ModelVarType.LEARNED_RANGE
        expected = (x_t.shape[0], 2 * channels if learned else channels, *x_t.shape[2:])
        if tuple(output.shape) != expected:
            raise ValueError(
                f"model output has shape {tuple(output.shape)}, expected {expected} for input "
                f"{tuple(x_t.shape)} and var_type {self.var_type.value!r}"
            )
        if learned:
            return output[:, :channels], output[:, channels:]
        return output, None

    def _xstart_from_prediction(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        if self.mean_type is ModelMeanType.START_X:
            return prediction
        if self.mean_type is ModelMeanType.VELOCITY:
            return self.predict_xstart_from_v(x_t, t, prediction)
        return self.predict_xstart_from_eps(x_t, t, prediction)

    def _vlb_term_bits(self, x0: Tensor, x_t: Tensor, t: Tensor, step: dict[str, Tensor]) -> Tensor:
        """L_t per sample (B,) in bits per dimension: the posterior KL for t > 0, the decoder NLL at t = 0."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x0, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, step["mean"], step["log_variance"])) / math.log(2.0)
        log_likelihood = discretized_gaussian_log_likelihood(x0, step["mean"], 0.5 * step["log_variance"])
        decoder_nll = -mean_flat(log_likelihood) / math.log(2.0)
        return torch.where(t == 0, decoder_nll, kl)

    def _indices(self, t: Tensor) -> Tensor:
        """Validated process indices on the CPU (B,) for gathering from the schedule arrays."""
        if t.dim() != 1 or t.dtype.is_floating_point or t.dtype.is_complex:
            raise ValueError(
                f"t must be a 1-D integer tensor of process indices, got {t.dtype} of shape {tuple(t.shape)}"
            )
        indices = t.detach().cpu().long()
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.num_timesteps):
            raise ValueError(
                f"timestep indices must lie in [0, {self.num_timesteps}), got min {int(indices.min())}, "
                f"max {int(indices.max())}"
            )
        return indices

    def extract(self, values: np.ndarray, t: Tensor, like: Tensor) -> Tensor:
        """values[t] as (B, 1, ..., 1) on ``like``'s device and dtype, broadcastable against ``like``."""
        if t.shape[:1] != like.shape[:1]:
            raise ValueError(f"t has {t.shape[0]} entries for a batch of {like.shape[0]}")
        picked = torch.from_numpy(values)[self._indices(t)]  # (B,) float64
        return picked.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _clip(x0: Tensor, clip_denoised: bool | float) -> Tensor:
    """Clamp x̂_0 to [-1, 1] (True), to [-b, b] (a positive number b), or leave it (False)."""
    if clip_denoised is False:
        return x0
    bound = 1.0 if clip_denoised is True else float(clip_denoised)
    if not bound > 0:
        raise ValueError(f"clip_denoised must be False, True or a positive bound, got {clip_denoised!r}")
    return x0.clamp(-bound, bound)
