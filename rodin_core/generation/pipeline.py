"""The generation pipeline: trained checkpoints -> avatars (paper §3.2-3.3, §4.2, §4.5, Fig. 6, Fig. 15, B.4).

One object holds the frozen networks of a trained Rodin model and turns latents into tri-planes:

    z ~ prior (appendix B.4)  or  z = E(portrait) (§4.5)                         (D,)
    y_LR = base model, classifier-free guidance ε̂ = λ ε(y, z) + (1 − λ) ε(y)  (§3.2, Eq. 3)   (3, C, h, h)
    y    = diffusion upsampler conditioned on y_LR, x_0 prediction (§3.3)                    (3, C, H, H)

Both diffusion stages sample with one generator seeded by ``seed``, so a result is a deterministic
function of (z, seed, options); latent interpolation (Fig. 6) keeps the seed and moves z only, and
``on_x0`` exposes the predicted clean tri-plane x̂0 at every reverse step of both stages (Fig. 15).
Results are :class:`~rodin_core.generation.avatar.Avatar` objects: tri-plane + z + a JSON record of
how they were made. The networks are the EMA shadows of the training checkpoints (appendix B.1),
loaded strictly by :meth:`GenerationPipeline.from_checkpoints` (:mod:`.checkpoints`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rodin_core.checkpoint import Checkpoint
from rodin_core.config import RodinConfig
from rodin_core.diffusion import space_timesteps
from rodin_core.generation import checkpoints as strict
from rodin_core.generation.avatar import Avatar
from rodin_core.generation.errors import GenerationError
from rodin_core.generation.interpolation import slerp
from rodin_core.generation.portrait import portrait_tensor
from rodin_core.generation.sampling import (
    SAMPLERS,
    implied_sampler,
    sample_base,
    sample_prior,
    sample_upsampler,
)
from rodin_core.imaging import to_uint8
from rodin_core.networks.latent_normalizer import LatentNormalizer
from rodin_core.rendering.renderer import RenderSettings, render_image
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.stats import PlaneStats

__all__ = ["SAMPLERS", "GenerationError", "GenerationPipeline", "SampleOptions", "X0Hook"]

log = logging.getLogger(__name__)

X0Hook = Callable[[str, int, Tensor], None]
"""``on_x0(stage, step, x0)``: stage ``"base"`` or ``"upsampler"``, reverse step (0 first), raw x̂0 (3, C, s, s)."""
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SampleOptions:
    """How the two diffusion stages sample (§3.2 Eq. 3, appendix B.1)."""

    guidance_scale: float | None = None
    """CFG scale λ of Eq. 3 for the base model; None: the trained config's ``base.guidance_scale``."""
    sampler: str | None = None
    """``"ancestral"`` (the paper's sampler) or ``"ddim"`` (deterministic DDIM, η = 0); None: each stage's
    configured rule, DDIM for a ``"ddimN"`` ``diffusion.sampling_steps`` and ancestral otherwise."""
    steps: int | None = None
    """Reverse steps of the base model and the upsampler (respacing); None: each stage's
    ``diffusion.sampling_steps``."""

    def __post_init__(self) -> None:
        scale = self.guidance_scale
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                                  or not math.isfinite(scale) or scale < 0):
            raise GenerationError(f"guidance_scale must be a finite number >= 0 (Eq. 3: 1 = conditional, "
                                  f"0 = unconditional, > 1 = stronger guidance), got {scale!r}")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise GenerationError(f"unknown sampler {self.sampler!r}; choose one of {SAMPLERS}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 2):
            raise GenerationError(f"steps must be an integer >= 2 (or None for the trained default), got {self.steps!r}")

    def respacing(self, configured: str) -> str:
        """The respacing string of a stage whose config samples with ``configured`` (e.g. ``"50"``, ``"ddim25"``)."""
        if self.steps is None:
            return str(configured)
        rule = self.sampler or implied_sampler(configured)
        return f"ddim{self.steps}" if rule == "ddim" else str(self.steps)


def check_latent(avatar: Avatar, latent_dim: int, name: str, doing: str, writers: str) -> Tensor:
    """The avatar's z (D,), or a :class:`GenerationError` naming ``name`` when it has none (a fitted subject) or
    one of another size than this model's ``latent_dim``: "{name} ... cannot be {doing}; use avatars written by
    {writers}"."""
    if avatar.z is None:
        raise GenerationError(f"{name} ({avatar.meta.get('kind', 'unknown kind')}) has no latent z, so it cannot be "
                              f"{doing}; use avatars written by {writers}")
    if tuple(avatar.z.shape) != (latent_dim,):
        raise GenerationError(f"{name} has z of shape {tuple(avatar.z.shape)}, this model's latents are "
                              f"({latent_dim},); use avatars generated by this model")
    return avatar.z


def stage_respacing(cfg: RodinConfig, stage: str, options: SampleOptions) -> str:
    """The respacing of the ``base`` or ``upsampler`` stage of ``cfg`` under ``options``; :class:`GenerationError`
    when ``options.steps`` cannot respace the stage's diffusion steps (e.g. more steps than it was trained with)."""
    diffusion = (cfg.base if stage == "base" else cfg.upsampler).diffusion
    if options.steps is not None and options.steps > diffusion.steps:
        raise GenerationError(f"steps={options.steps} is more than the {diffusion.steps} diffusion steps the {stage} "
                              f"stage was trained with; choose steps between 2 and {diffusion.steps}")
    spacing = options.respacing(diffusion.sampling_steps)
    try:
        space_timesteps(diffusion.steps, spacing)
    except ValueError as exc:
        raise GenerationError(f"steps={options.steps} cannot respace the {stage} stage's {diffusion.steps} "
                              f"diffusion steps ({exc}); choose steps between 2 and {diffusion.steps}") from exc
    return spacing


def _source(avatar: Avatar) -> dict[str, Any]:
    """What identifies an interpolation endpoint in the result's meta: its kind, seed and image name."""
    return {key: avatar.meta[key] for key in ("kind", "seed", "image") if key in avatar.meta}


class GenerationPipeline:
    """Frozen prior, base model, upsampler, encoder and decoder of one trained Rodin model.

    ``base`` and ``upsampler`` are the U-Nets (EMA weights), ``encoder`` the image encoder that produced
    the base model's z (None when its weights are unavailable: sampling still works, inversion does
    not), ``stats`` the plane statistics both U-Nets were trained with, ``prior`` and ``latent_norm``
    the latent prior (optional: without it only inversion and given latents work). Every module is
    moved to the device of ``base``. ``progress`` shows the samplers' progress bars.
    """

    def __init__(self, cfg: RodinConfig, decoder: TriplaneDecoder, base: nn.Module, upsampler: nn.Module,
                 encoder: nn.Module | None, stats: PlaneStats, prior: nn.Module | None = None,
                 latent_norm: LatentNormalizer | None = None, decoder_sha256: str | None = None, *,
                 encoder_error: str | None = None, progress: bool = False) -> None:
        if stats.channels != cfg.triplane.channels:
            raise GenerationError(f"the plane statistics have {stats.channels} channels but triplane.channels is "
                                  f"{cfg.triplane.channels}; pass the statistics the stages were trained with")
        if (prior is None) != (latent_norm is None):
            raise GenerationError("the latent prior needs both its network and its latent_norm (appendix B.4); "
                                  "pass both, or neither to generate from given latents only")
        strict.check_decoder(decoder, cfg)
        parameter = next(base.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        self.cfg = cfg
        self.decoder = decoder.to(self.device).eval().requires_grad_(False)
        self.base = base.to(self.device).eval()
        self.upsampler = upsampler.to(self.device).eval()
        self.encoder = encoder.to(self.device).eval() if encoder is not None else None
        self.encoder_error = encoder_error
        self.stats = stats
        self.prior = prior.to(self.device).eval() if prior is not None else None
        self.latent_norm = latent_norm.to(self.device) if latent_norm is not None else None
        self.decoder_sha256 = decoder_sha256
        self.progress = progress

    @classmethod
    def from_checkpoints(cls, base: Checkpoint, upsampler: Checkpoint, prior: Checkpoint | None,
                         decoder: TriplaneDecoder, *, preset: str | None = None, decoder_sha256: str | None = None,
                         device: torch.device | str = "cpu", progress: bool = False) -> GenerationPipeline:
        """The pipeline of three stage checkpoints and the frozen decoder, checked strictly (:mod:`.checkpoints`).

        ``preset``: the preset the caller expects; checkpoints of another preset raise GenerationError
        naming both. ``prior`` may be None (no unconditional sampling).
        """
        cfgs = {"base": strict.stage_rodin_config(base, "base"),
                "upsampler": strict.stage_rodin_config(upsampler, "upsampler")}
        if prior is not None:
            cfgs["prior"] = strict.stage_rodin_config(prior, "prior")
        strict.check_presets(cfgs, preset)
        strict.check_shared_sections(cfgs)
        cfg = strict.merged_config(cfgs["base"], cfgs["upsampler"], cfgs.get("prior"))
        stats = strict.corpus_stats(base, upsampler)
        base_net = strict.ema_network(base, "base", cfgs["base"])
        up_net = strict.ema_network(upsampler, "upsampler", cfgs["upsampler"])
        encoder, encoder_error = strict.base_encoder(base, cfg)
        prior_net = latent_norm = None
        if prior is not None:
            prior_net = strict.ema_network(prior, "prior", cfgs["prior"])
            latent_norm = strict.latent_normalizer(prior, cfg)
        return cls(cfg, decoder, base_net.to(device), up_net, encoder, stats, prior_net, latent_norm, decoder_sha256,
                   encoder_error=encoder_error, progress=progress)

    @property
    def resolution(self) -> int:
        """H: side of the generated planes (``triplane.resolution``)."""
        return self.cfg.triplane.resolution

    @property
    def base_resolution(self) -> int:
        """h: side of the base model's planes (``triplane.rescale_min``)."""
        return self.cfg.triplane.rescale_min

    @property
    def latent_dim(self) -> int:
        """D: size of the latent z."""
        return self.cfg.encoder.latent_dim

    def _generator(self, seed: int) -> torch.Generator:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise GenerationError(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}")
        return torch.Generator(device=self.device).manual_seed(seed)

    def sample_latents(self, n: int, seed: int) -> Tensor:
        """n latents (n, D) from the prior (appendix B.4); latent i is drawn with seed ``seed + i`` alone."""
        if self.prior is None or self.latent_norm is None:
            raise GenerationError("this pipeline has no latent prior, so it cannot draw z; train it with "
                                  "`rodin train prior` and load checkpoints/prior, or invert a portrait instead")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise GenerationError(f"n must be a positive integer, got {n!r}")
        with torch.no_grad():
            rows = [sample_prior(self.prior, self.latent_norm, self.cfg, 1, generator=self._generator(seed + i),
                                 progress=self.progress) for i in range(n)]  # n x (1, D)
        return torch.cat(rows).float().cpu()  # (n, D)

    def _latent(self, z: Tensor) -> Tensor:
        """z (D,) or (1, D) -> finite float32 (1, D) on the device."""
        if not isinstance(z, Tensor) or z.shape not in ((self.latent_dim,), (1, self.latent_dim)):
            shown = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise GenerationError(f"z must be a latent ({self.latent_dim},) or (1, {self.latent_dim}), got {shown}; "
                                  "generate one z at a time")
        if not torch.isfinite(z).all():
            raise GenerationError("z holds NaN or inf values; pass a finite latent")
        return z.reshape(1, self.latent_dim).to(self.device, torch.float32)  # (1, D)

    def _respacing(self, stage: str, options: SampleOptions) -> str:
        return stage_respacing(self.cfg, stage, options)

    def guidance_scale(self, options: SampleOptions) -> float:
        """The CFG scale λ ``options`` resolve to (Eq. 3)."""
        return float(self.cfg.base.guidance_scale if options.guidance_scale is None else options.guidance_scale)

    def generate(self, z: Tensor, *, seed: int, options: SampleOptions = SampleOptions(),
                 on_x0: X0Hook | None = None, early_z: Tensor | None = None, keep: float = 0.0) -> Tensor:
        """Raw tri-planes (3, C, H, H) on the CPU from a latent z (D,) or (1, D) (§3.2 Eq. 3, §3.3).

        The base model samples (3, C, h, h) with CFG (unconditionally, z only recorded, when it was trained without
        latent conditioning), the upsampler (3, C, H, H) from it; one generator
        seeded with ``seed`` drives both, so the output is a deterministic function of (z, seed, options).
        ``on_x0(stage, step, x̂0)`` is called at every reverse step with the raw predicted clean planes,
        (3, C, h, h) for ``"base"`` and (3, C, H, H) for ``"upsampler"``, on the pipeline's device (Fig. 15).
        ``early_z`` (D,) or (1, D) and ``keep`` in [0, 1]: the base model's first reverse steps, those at
        timesteps t >= (1 - keep) · T, are conditioned on ``early_z`` instead (:func:`sample_base`), so the
        planes keep the layout ``early_z`` gives them with the same seed.
        """
        latent = self._latent(z)  # (1, D)
        conditioned = self.cfg.base.latent_conditioning  # without it the base model ignores z (Table 2 baseline)
        generator = self._generator(seed)
        spacing = {stage: self._respacing(stage, options) for stage in ("base", "upsampler")}

        def hook(stage: str) -> Callable[[int, Tensor], None] | None:
            return None if on_x0 is None else lambda step, x0: on_x0(stage, step, x0[0])

        with torch.no_grad():
            low = sample_base(self.base, self.cfg, self.stats, latent if conditioned else None, n=1, generator=generator,
                              guidance_scale=self.guidance_scale(options), progress=self.progress,
                              sampler=options.sampler, respacing=spacing["base"], on_x0=hook("base"),
                              early_z=None if early_z is None or not conditioned else self._latent(early_z),
                              keep=keep)  # (1, 3, C, h, h)
            high = sample_upsampler(self.upsampler, self.cfg, self.stats, low, generator=generator,
                                    progress=self.progress, sampler=options.sampler, respacing=spacing["upsampler"],
                                    on_x0=hook("upsampler"))  # (1, 3, C, H, H)
        planes = high[0].float().cpu()  # (3, C, H, H)
        if not torch.isfinite(planes).all():
            raise GenerationError(f"the generated tri-plane holds NaN or inf (seed {seed}, {options}); the "
                                  "checkpoints may have diverged: check their training losses or use an earlier one")
        return planes

    def _meta(self, kind: str, seed: int, options: SampleOptions) -> dict[str, Any]:
        return {"kind": kind, "seed": seed, "guidance_scale": self.guidance_scale(options),
                "sampler": options.sampler, "steps": options.steps,
                "respacing": {stage: self._respacing(stage, options) for stage in ("base", "upsampler")},
                "preset": self.cfg.preset, "decoder_sha256": self.decoder_sha256}

    def sample(self, n: int, *, seed: int, options: SampleOptions = SampleOptions()) -> list[Avatar]:
        """n unconditional avatars: z_i from the prior with seed ``seed + i``, planes generated with ``seed + i``."""
        latents = self.sample_latents(n, seed)  # (n, D)
        avatars = []
        for index, z in enumerate(latents):
            avatars.append(Avatar(self.generate(z, seed=seed + index, options=options), z.clone(),
                                  self._meta("sample", seed + index, options)))
            log.info("sampled avatar %d of %d (seed %d)", index + 1, n, seed + index)
        return avatars

    def encode_image(self, image: np.ndarray) -> Tensor:
        """z (D,) of a portrait (H, W, 3|4), uint8 or float in [0, 1], any size (§4.5; :mod:`.portrait`)."""
        if self.encoder is None:
            raise GenerationError(f"this pipeline has no image encoder, so it cannot invert portraits: "
                                  f"{self.encoder_error or 'none was given'}")
        pixels = portrait_tensor(image).to(self.device)  # (1, 3, S, S)
        with torch.no_grad():
            z = self.encoder(pixels).float()  # (1, D)
        if tuple(z.shape) != (1, self.latent_dim):
            raise GenerationError(f"the encoder returned z of shape {tuple(z.shape)}, expected (1, {self.latent_dim});"
                                  " pass the encoder the base model was trained with")
        return z[0].cpu()  # (D,)

    def invert(self, image: np.ndarray, *, seed: int, options: SampleOptions = SampleOptions(),
               name: str = "image") -> Avatar:
        """Portrait inversion (§4.5): the avatar generated from z = E(image); ``name`` is recorded in meta."""
        z = self.encode_image(image)  # (D,)
        meta = self._meta("invert", seed, options)
        meta.update(image=str(name), image_size=[int(s) for s in np.shape(image)[:2]])
        return Avatar(self.generate(z, seed=seed, options=options), z, meta)

    def interpolate(self, a: Avatar, b: Avatar, ts: Sequence[float], *, seed: int,
                    options: SampleOptions = SampleOptions()) -> list[Avatar]:
        """Avatars along z_t = slerp(a.z, b.z, t) for each t in ``ts``, all generated with ``seed`` (Fig. 6).

        t = 0 and t = 1 give back ``a`` and ``b`` exactly when they were generated with this seed and options.
        """
        for label, avatar in (("a", a), ("b", b)):
            check_latent(avatar, self.latent_dim, f"avatar {label}", "interpolated", "sample, invert or interpolate")
        weights = [float(t) for t in ts]
        if not weights or not all(0.0 <= t <= 1.0 for t in weights):
            raise GenerationError(f"ts must be a non-empty list of weights in [0, 1], got {list(ts)!r}")
        avatars = []
        for t in weights:
            z = slerp(a.z.float(), b.z.float(), t)  # (D,)
            meta = self._meta("interpolate", seed, options)
            meta.update(t=t, sources=[_source(a), _source(b)])
            avatars.append(Avatar(self.generate(z, seed=seed, options=options), z, meta))
            log.info("interpolated avatar at t=%.3f", t)
        return avatars

    def render(self, avatar_or_planes: Avatar | Tensor, c2w: np.ndarray | Tensor, K: np.ndarray | Tensor,
               height: int, width: int) -> np.ndarray:
        """One view (height, width, 3) uint8 of an avatar or raw planes (3, C, H, W) through the decoder.

        ``c2w`` (4, 4) OpenCV camera-to-world and ``K`` (3, 3) intrinsics in pixels (docs/conventions.md);
        rendered as in fitting (the ``fit`` section's samples and background, no jitter).
        """
        planes = avatar_or_planes.planes if isinstance(avatar_or_planes, Avatar) else avatar_or_planes
        if not isinstance(planes, Tensor) or planes.dim() != 4 or planes.shape[0] != 3:
            shown = tuple(planes.shape) if isinstance(planes, Tensor) else type(planes).__name__
            raise GenerationError(f"render takes an Avatar or raw planes (3, C, H, W), got {shown}")
        settings = RenderSettings(coarse_samples=self.cfg.fit.coarse_samples, fine_samples=self.cfg.fit.fine_samples,
                                  perturb=False)
        with torch.no_grad():
            rgb, _ = render_image(planes.float().to(self.device)[None], self.decoder, c2w, K, height, width,
                                  settings, self.cfg.fit.background)  # (height, width, 3)
        return to_uint8(rgb.clamp(0.0, 1.0).cpu())
