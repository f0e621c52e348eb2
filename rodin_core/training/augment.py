"""Multi-resolution tri-planes and the upsampler's condition augmentation (paper §3.3, appendix B.1).

The base model generates tri-planes at the lowest resolution (``triplane.rescale_min``, 64 in the
paper), produced for training by :func:`rodin_core.triplane.rescale.downsample_planes`, the
antialiased down-sampling of the fitting stage's random rescaling. The upsampler is conditioned
on a low-resolution tri-plane; to close the gap between ground-truth low-resolution planes (seen in
training) and the base model's samples (seen at inference), §3.3 degrades the condition with "a
random combination of random downsampling, Gaussian blurring and Gaussian noises"
(:func:`degrade_condition`), the condition-augmentation idea of cascaded diffusion (Ho et al. 2021).

The same idea applies to the base model's other condition, the latent z (§3.2): at sampling time z comes from
the latent prior (appendix B.4), whose draws are near, not on, the latents the base model trained on.
:func:`noisy_latents` perturbs the training z and brings it back to the encoders' sphere of radius sqrt(D), so
that the base model learns a map from a neighbourhood of each training z, not from the point alone (the noise
augmentation unCLIP-style decoders apply to their image embedding; Ramesh et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rodin_core.encoders import scale_to_sphere
from rodin_core.triplane.rescale import rescale_planes

DEGRADATIONS = ("downscale", "blur", "noise")
"""The operations of :func:`degrade_condition`, applied in this order."""


def gaussian_blur(planes: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of every plane and channel of (B, 3, C, h, w); ``sigma`` in pixels.

    The kernel spans ``±ceil(3 sigma)`` pixels, is normalised to sum 1, and borders are replicated.
    """
    if sigma <= 0:
        return planes
    batch, _, channels, height, width = planes.shape
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=planes.device, dtype=planes.dtype)  # (K,)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    flat = planes.reshape(batch * 3 * channels, 1, height, width)  # (B*3*C, 1, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return flat.reshape(batch, 3, channels, height, width)  # (B, 3, C, h, w)


def degrade_condition(
    planes_lowres: Tensor,
    generator: torch.Generator,
    blur_sigma_max: float,
    noise_std_max: float,
    prob: float = 0.5,
    ops: Sequence[str] = DEGRADATIONS,
    min_scale: float = 0.5,
) -> Tensor:
    """Randomly degraded copy of low-resolution planes (B, 3, C, h, w), per sample (§3.3).

    For each sample, independently and each with probability ``prob``:

    - ``downscale``: down-sample to an integer size drawn uniformly in ``[ceil(min_scale * h), h - 1]``
      and back up (:func:`rescale_planes`);
    - ``blur``: Gaussian blur with sigma ~ U(0, ``blur_sigma_max``) pixels (:func:`gaussian_blur`);
    - ``noise``: add Gaussian noise of std ~ U(0, ``noise_std_max``) (normalised plane units).

    All random numbers come from ``generator`` in a fixed order, so a seed fixes the result;
    ``ops`` restricts the operations (e.g. ``("blur",)``). Differentiable in ``planes_lowres``.
    """
    if planes_lowres.dim() != 5 or planes_lowres.shape[1] != 3:
        raise ValueError(f"planes_lowres must be (B, 3, C, h, w), got shape {tuple(planes_lowres.shape)}")
    unknown = [op for op in ops if op not in DEGRADATIONS]
    if unknown:
        raise ValueError(f"unknown degradations {unknown}; choose from {DEGRADATIONS}")
    if not 0.0 <= prob <= 1.0 or not 0.0 < min_scale <= 1.0:
        raise ValueError(f"prob must be in [0, 1] and min_scale in (0, 1], got prob={prob}, min_scale={min_scale}")
    if blur_sigma_max < 0 or noise_std_max < 0:
        raise ValueError(f"blur_sigma_max and noise_std_max must be >= 0, got {blur_sigma_max}, {noise_std_max}; "
                         "see upsampler.aug_blur_sigma and upsampler.aug_noise_std")
    batch, _, _, height, width = planes_lowres.shape
    device = generator.device
    draws = torch.rand(batch, 6, generator=generator, device=device).cpu()  # (B, 6): 3 x (apply?, amount)
    noise = torch.randn(planes_lowres.shape, generator=generator, device=device, dtype=planes_lowres.dtype)
    noise = noise.to(planes_lowres.device)  # (B, 3, C, h, w)
    side = min(height, width)
    low_size = min(max(1, math.ceil(min_scale * side)), side - 1)  # 0 when the planes are 1 pixel wide
    out = []
    for b in range(batch):
        x = planes_lowres[b:b + 1]  # (1, 3, C, h, w)
        (p_down, a_down, p_blur, a_blur, p_noise, a_noise) = draws[b].tolist()
        if "downscale" in ops and p_down < prob and low_size >= 1:
            size = low_size + int(a_down * (side - low_size))  # uniform in [low_size, side - 1]
            x = rescale_planes(x, size)
        if "blur" in ops and p_blur < prob:
            x = gaussian_blur(x, a_blur * blur_sigma_max)
        if "noise" in ops and p_noise < prob:
            x = x + a_noise * noise_std_max * noise[b:b + 1]
        out.append(x)
    return torch.cat(out)  # (B, 3, C, h, w)


def noisy_latents(z: Tensor, max_std: float, generator: torch.Generator) -> Tensor:
    """z (B, D) on the sphere of radius sqrt(D), perturbed per sample and brought back to that sphere.

    Each sample draws a std s ~ U(0, ``max_std``) and becomes ``scale_to_sphere(z + s * ε)``, ε ~ N(0, I): s is in
    units of z's per-dimension RMS (1 on the sphere), so s = 1 adds noise as long as z itself (cosine to the
    clean z about 0.71 in high dimension). Rows that are all zero (the unconditional samples of classifier-free
    guidance, §3.2) stay zero; ``max_std`` 0 returns z unchanged. The draws (B stds, then B x D normals) come from
    ``generator`` in that order, so a seed fixes the result. Differentiable in ``z``.
    """
    if z.dim() != 2:
        raise ValueError(f"z must be (B, D), got shape {tuple(z.shape)}")
    if not math.isfinite(max_std) or max_std < 0:
        raise ValueError(f"latent noise std must be a finite number >= 0, got {max_std!r} (base.latent_noise)")
    if max_std == 0:
        return z
    device = generator.device
    stds = torch.rand(z.shape[0], 1, generator=generator, device=device).to(z.device, z.dtype) * max_std  # (B, 1)
    eps = torch.randn(z.shape, generator=generator, device=device).to(z.device, z.dtype)  # (B, D)
    kept = (z.abs().sum(dim=1, keepdim=True) > 0).to(z.dtype)  # (B, 1): 0 for CFG-dropped rows
    return scale_to_sphere(z + stds * eps) * kept  # (B, D)
