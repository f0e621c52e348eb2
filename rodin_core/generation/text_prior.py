"""Text to avatar (appendix B.5): prompt -> text embedding -> z from the text prior -> avatar.

The text prior is a diffusion model over the base model's latents conditioned on a text embedding c
(:mod:`rodin_core.training.text_prior`). Sampling guides it with classifier-free guidance,

    ε̂ = λ ε(z_t, c) + (1 − λ) ε(z_t, ∅)        (∅: the null text, c = 0)

with λ = ``text_prior.guidance_scale`` unless given (0: the unconditional prior, 1: conditional),
then maps the standardised sample back to the encoder's scale. The avatar is
:meth:`GenerationPipeline.generate` of that z with the same seed, so (prompt, seed, options) fix it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor, nn

from rodin_core.checkpoint import Checkpoint
from rodin_core.config import RodinConfig
from rodin_core.diffusion import classifier_free_guidance
from rodin_core.encoders import scale_to_sphere
from rodin_core.generation import checkpoints as strict
from rodin_core.generation.avatar import Avatar
from rodin_core.generation.errors import GenerationError
from rodin_core.generation.pipeline import GenerationPipeline, SampleOptions
from rodin_core.generation.sampling import evaluating, run_sampler
from rodin_core.networks.latent_normalizer import LatentNormalizer
from rodin_core.stage_specs import TEXT_PRIOR

log = logging.getLogger(__name__)

MAX_SEED = 2**63 - 1


def check_text_guidance(scale: float | None) -> None:
    """Refuse a text guidance scale that is not a finite number >= 0 (None: the trained default)."""
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale) or scale < 0):
        raise GenerationError(f"the text guidance scale must be a finite number >= 0 (0: unconditional prior, 1: "
                              f"conditional, > 1: stronger guidance), got {scale!r}")


class TextPrior:
    """The frozen text prior: its network (EMA weights), latent standardisation and RodinConfig."""

    def __init__(self, cfg: RodinConfig, network: nn.Module, latent_norm: LatentNormalizer,
                 device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.network = network.to(self.device).eval().requires_grad_(False)
        self.latent_norm = latent_norm.to(self.device)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: torch.device | str = "cpu") -> TextPrior:
        """The text prior of a ``checkpoints/text_prior`` checkpoint, loaded with strict keys and shapes."""
        cfg = strict.stage_rodin_config(checkpoint, TEXT_PRIOR)
        network = strict.ema_network(checkpoint, TEXT_PRIOR, cfg)
        return cls(cfg, network, strict.latent_normalizer(checkpoint, cfg, TEXT_PRIOR), device)

    @property
    def text_dim(self) -> int:
        """E: size of the text embeddings it reads."""
        return self.cfg.text_prior.mlp.text_dim

    def check_base(self, base: RodinConfig, out: str = "OUT") -> None:
        """Refuse a base model whose encoder is not the one whose latents this prior learned."""
        if base.encoder != self.cfg.encoder:
            raise GenerationError(f"the text prior under {out} learned the latents of encoder {self.cfg.encoder.kind!r} "
                                  f"(latent_dim {self.cfg.encoder.latent_dim}) but the base model reads encoder "
                                  f"{base.encoder.kind!r} (latent_dim {base.encoder.latent_dim}); train the text prior "
                                  f"again for this base: `rodin train text-prior --out {out}`")

    def guidance(self, scale: float | None) -> float:
        """The CFG scale ``scale`` resolves to (None: ``text_prior.guidance_scale``)."""
        check_text_guidance(scale)
        return float(self.cfg.text_prior.guidance_scale if scale is None else scale)

    @torch.no_grad()
    def sample(self, text: Tensor, *, seed: int, guidance_scale: float | None = None,
               progress: bool = False) -> Tensor:
        """z (n, D) for text embeddings (n, E), drawn with a generator seeded by ``seed``, on the encoder's sphere of
        radius sqrt(D) like the image latents it learned (:func:`rodin_core.encoders.scale_to_sphere`)."""
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise GenerationError(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}")
        if text.dim() != 2 or text.shape[1] != self.text_dim or not torch.isfinite(text).all():
            raise GenerationError(f"text embeddings must be finite (n, {self.text_dim}), got {tuple(text.shape)}; "
                                  "embed the prompt with the text tower of the base model's encoder")
        guided = classifier_free_guidance(self.network, self.guidance(guidance_scale), latent_key="text")
        generator = torch.Generator(device=self.device).manual_seed(seed)
        shape = (text.shape[0], self.cfg.text_prior.mlp.latent_dim)
        with evaluating(self.network):
            z = run_sampler(self.cfg.text_prior.diffusion, guided, shape, self.device, generator,
                            {"text": text.to(self.device, torch.float32)}, progress)  # (n, D) standardised
        return scale_to_sphere(self.latent_norm.denormalize(z)).float().cpu()  # (n, D)


def text_avatars(pipeline: GenerationPipeline, prior: TextPrior, text: Tensor, prompt: str, n: int, *, seed: int,
                 options: SampleOptions | None = None, text_guidance: float | None = None) -> list[Avatar]:
    """n avatars of one prompt (its embedding ``text`` (E,) or (1, E)): avatar i from z_i = the text prior's draw
    with seed ``seed + i``, generated with the same seed; each meta records the prompt and both guidance scales."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise GenerationError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED - n:
        raise GenerationError(f"seed must be an integer in [0, 2**63 - 1 - n], got {seed!r}")
    options = options or SampleOptions()
    row = text.reshape(1, -1)  # (1, E)
    scale = prior.guidance(text_guidance)
    avatars = []
    for index in range(n):
        z = prior.sample(row, seed=seed + index, guidance_scale=scale)[0]  # (D,)
        meta: dict[str, Any] = pipeline._meta("text", seed + index, options)
        meta.update(prompt=prompt, text_guidance_scale=scale)
        avatars.append(Avatar(pipeline.generate(z, seed=seed + index, options=options), z, meta))
        log.info("text avatar %d of %d (seed %d): %s", index + 1, n, seed + index, prompt)
    return avatars
