"""Text-guided editing of an avatar (paper §4.5, appendix B.3).

    δ  = scale_to_sphere(E_T(T_tgt)) − scale_to_sphere(E_T(T_src))   (D,)  (:mod:`rodin_core.text.directions`)
    z' = sqrt(D) · (z + s·δ) / |z + s·δ|                              (D,)  z: the source avatar's latent
    y' = GenerationPipeline.generate(z', same seed, same options)     (3, C, H, W)

The paper adds δ to the image embedding (B.3). Every encoder here puts z on the sphere of radius
sqrt(D) (:func:`rodin_core.encoders.scale_to_sphere`), the only latents the base model was trained on,
while δ between two unit prompt embeddings scaled the same way is up to 2·sqrt(D) long; so z + s·δ is
brought back to the sphere, its direction kept (the same step CLIP-space editing takes after adding a
direction to a normalised embedding). A latent-prior sample's z can lie off that sphere (the prior's
draws are not projected); its edit lands on the sphere all the same. Keeping such a z's own norm instead
(turning it by the same angle) was measured on the small run and did worse: glasses, blonde hair, beard
and short hair flipped in 17%, 20%, 0% and 13% of 8 avatars with 30-43% of the other attributes
unchanged, against 33%, 60%, 0% and 0% with 49-57% unchanged.

``keep`` k conditions the base model's noisiest reverse steps, those at t >= (1 − k)·T, on the source's own z
(:func:`rodin_core.diffusion.guidance.switch_latent`): those steps lay out the sample (Meng et al. 2022,
"SDEdit", §3), so the edit keeps the source's layout and only the later steps follow z'. Measured on the
small run with k = 0.9 (3 of 25 DDIM steps on z'), the heads look as before, yet the attribute classifier
reads 35% of their other attributes differently: how stable an edit looks depends on that judge too.

The seed and sampling options are those recorded in the source avatar, so that only what the
prompts name should change; with δ = 0 or s = 0 the result is the source avatar, bit for bit. The
edited avatar's record (``kind`` = ``edit``) keeps the prompts, the strength and k (``edit``), the
source avatar's own record (``source``) and, when given, its file name (``source_file``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from rodin_core.config import RodinConfig
from rodin_core.encoders import scale_to_sphere
from rodin_core.generation.avatar import Avatar
from rodin_core.generation.errors import GenerationError
from rodin_core.generation.pipeline import (
    GenerationPipeline,
    SampleOptions,
    check_latent,
)
from rodin_core.text.directions import text_direction
from rodin_core.text.towers import TextTower, text_tower

log = logging.getLogger(__name__)

DEFAULT_SOURCE_PROMPT = "a person"
"""T_src when none is given: the edit adds what the target prompt says beyond it."""


@dataclass(frozen=True)
class TextEdit:
    """One edit: the prompts T_tgt and T_src, the strength s of z' = z + s·δ, and ``keep``, the share of the
    base model's reverse process (its noisiest steps) still conditioned on the source's z."""

    target: str
    source: str = DEFAULT_SOURCE_PROMPT
    strength: float = 1.0
    keep: float = 0.0

    def __post_init__(self) -> None:
        s = self.strength
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise GenerationError(f"the edit strength must be a finite number (z' = z + s·δ; 1 is the paper's edit, "
                                  f"0 keeps the avatar), got {s!r}")
        k = self.keep
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0.0 <= k <= 1.0:
            raise GenerationError(f"keep must be a number from 0 to 1 (the share of reverse steps that still follow "
                                  f"the source's z; 0 is the paper's edit), got {k!r}")
        for name, prompt in (("target", self.target), ("source", self.source)):
            if not isinstance(prompt, str):
                raise GenerationError(f"the {name} prompt must be text, got {type(prompt).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of the edit."""
        return {**asdict(self), "strength": float(self.strength), "keep": float(self.keep)}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> TextEdit:
        """The edit :meth:`to_dict` recorded."""
        return cls(target=record["target"], source=record["source"], strength=float(record["strength"]),
                   keep=float(record.get("keep", 0.0)))


def edit_text_tower(cfg: RodinConfig, device: str = "cpu", storage_options: dict | None = None) -> TextTower:
    """The text tower of the base model's encoder; raises when text cannot steer that base model."""
    if not cfg.base.latent_conditioning:
        raise GenerationError("the base model was trained without latent conditioning (base.latent_conditioning="
                              "false), so z does not steer it and a text edit changes nothing; train the base stage "
                              "with base.latent_conditioning=true")
    return text_tower(cfg.encoder, device, storage_options=storage_options)


def recorded_options(meta: dict[str, Any]) -> SampleOptions:
    """The sampling options recorded in an avatar's ``meta``."""
    return SampleOptions(guidance_scale=meta.get("guidance_scale"), sampler=meta.get("sampler"),
                         steps=meta.get("steps"))


def recorded_seed(avatar: Avatar) -> int:
    """The seed recorded in an avatar's meta; :class:`GenerationError` when it has none."""
    seed = avatar.meta.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise GenerationError(f"the avatar ({avatar.meta.get('kind', 'unknown kind')}) records no integer seed "
                              f"(got {seed!r}), so an edit cannot re-run its reverse process; edit avatars written by "
                              "sample, invert, interpolate or edit")
    return seed


def edit_avatar(pipeline: GenerationPipeline, avatar: Avatar, edit: TextEdit, *, direction: Tensor | None = None,
                tower: TextTower | None = None, name: str | None = None) -> Avatar:
    """The avatar generated from z + s·δ, brought back to the sqrt(D) sphere, with the source avatar's seed and
    options (appendix B.3).

    ``direction``: δ (D,) when already computed by :func:`rodin_core.text.directions.text_direction`
    (else computed with ``tower``, by default the base model's own text tower). ``name``: the
    source avatar's file name, recorded as ``source_file``. An edit that does not move z (identical
    prompts, or strength 0) keeps the source's planes: generating them again from the same z and seed
    would give them back only up to float rounding (the CPU convolutions' results depend on memory
    alignment at the 1e-6 level). So does ``keep`` = 1. With 0 < ``keep`` < 1 the base model's noisiest
    steps follow the source's z, as they did when the source was made, and the rest z'.
    """
    check_latent(avatar, pipeline.latent_dim, "the avatar", "edited in latent space",
                 "sample, invert, interpolate, edit or text")
    seed, options = recorded_seed(avatar), recorded_options(avatar.meta)
    if direction is None:
        tower = tower or edit_text_tower(pipeline.cfg)
        direction = text_direction(tower, edit.target, edit.source)
    if tuple(direction.shape) != (pipeline.latent_dim,):
        raise GenerationError(f"the edit direction has shape {tuple(direction.shape)}, this model's latents are "
                              f"({pipeline.latent_dim},)")
    moved = avatar.z.float() + edit.strength * direction.float().cpu()  # (D,)
    unmoved = torch.equal(moved, avatar.z.float())
    z = avatar.z.float() if unmoved else scale_to_sphere(moved[None])[0]  # (D,) norm sqrt(D)
    planes = avatar.planes.clone() if unmoved or edit.keep == 1.0 else pipeline.generate(
        z, seed=seed, options=options, early_z=avatar.z.float(), keep=edit.keep)  # (3, C, H, W)
    meta = pipeline._meta("edit", seed, options)
    meta.update(edit=edit.to_dict(), encoder=pipeline.cfg.encoder.kind, source=dict(avatar.meta))
    if name is not None:
        meta["source_file"] = str(name)
    log.info("edited avatar towards %r (from %r, strength %g, |s·δ| = %.3f)", edit.target, edit.source,
             edit.strength, float((edit.strength * direction).norm()))
    return Avatar(planes, z, meta)
