"""Strict loading of the three trained stages for generation (paper §3.2, §3.3, appendix B.4).

Generation chains the latent prior (appendix B.4), the base model (§3.2) and the upsampler (§3.3)
through the frozen decoder of the fitting stage, so the four must come from one corpus and one
configuration. Before any weight is loaded this module checks that

- each checkpoint sits in its slot (its ``config["stage"]``),
- all were trained with the same preset, and the one the caller asked for when given,
- they share the ``triplane`` and ``encoder`` sections (plane channels and sizes, latent size),
- the decoder decodes the planes of that ``triplane`` section,
- base and upsampler normalised the planes with the same statistics,
- each network config saved beside the weights is the one its RodinConfig builds,

and then loads the EMA shadow weights (appendix B.1: sampling uses the EMA) with strict key and
shape checks. Every failure is a :class:`~rodin_core.generation.errors.GenerationError` that says
which checkpoint is wrong and what to do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from rodin_core.checkpoint import Checkpoint
from rodin_core.config import RodinConfig
from rodin_core.datasets.layout import STATS_PREFIX
from rodin_core.encoders import EncoderUnavailableError, build_encoder
from rodin_core.generation.errors import GenerationError
from rodin_core.networks.latent_normalizer import LatentNormalizer
from rodin_core.stage_specs import model_from_config, network_config
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.stats import PlaneStats, PlaneStatsError

SHARED_SECTIONS = ("triplane", "encoder")
"""RodinConfig sections every stage of one generator must share."""


def stage_rodin_config(checkpoint: Checkpoint, slot: str) -> RodinConfig:
    """The RodinConfig a checkpoint was trained with, after checking it is a checkpoint of stage ``slot``."""
    config = checkpoint.config
    stage = config.get("stage") if isinstance(config, Mapping) else None
    if stage is None or "rodin" not in config:
        raise GenerationError(f"the checkpoint given as the {slot} stage is not a stage checkpoint (its config has "
                              f"keys {sorted(config) if isinstance(config, Mapping) else config!r}); pass the "
                              f"checkpoints/{slot} checkpoint written by `rodin train {slot}`")
    if stage != slot:
        raise GenerationError(f"the checkpoint given as the {slot} stage is a {stage!r} checkpoint; pass "
                              f"checkpoints/{slot} as the {slot} stage and checkpoints/{stage} as the {stage} stage")
    try:
        return RodinConfig.from_dict(config["rodin"])
    except ValueError as exc:
        raise GenerationError(f"the {slot} checkpoint's config cannot be read by this version of rodin ({exc}); "
                              f"retrain the {slot} stage or use the rodin version that wrote it") from exc


def check_presets(cfgs: Mapping[str, RodinConfig], preset: str | None) -> str:
    """The preset all stages in ``cfgs`` (slot -> config) were trained with; it must equal ``preset`` when given."""
    (first_slot, first), *others = cfgs.items()
    for slot, cfg in others:
        if cfg.preset != first.preset:
            raise GenerationError(f"the {first_slot} checkpoint was trained with preset {first.preset!r} but the "
                                  f"{slot} checkpoint with preset {cfg.preset!r}; use checkpoints of one training "
                                  f"run (retrain the {slot} stage with --preset {first.preset})")
    if preset is not None and preset != first.preset:
        raise GenerationError(f"the checkpoints were trained with preset {first.preset!r}, not {preset!r}; pass "
                              f"--preset {first.preset} (or retrain with --preset {preset})")
    return first.preset


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict of dotted keys (``decoder.hidden``)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value})
    return flat


def _differences(left: Mapping[str, Any], right: Mapping[str, Any]) -> list[str]:
    left, right = _flat(left), _flat(right)
    keys = sorted(set(left) | set(right))
    return [f"{key}: {left.get(key)!r} vs {right.get(key)!r}" for key in keys if left.get(key) != right.get(key)]


def check_shared_sections(cfgs: Mapping[str, RodinConfig]) -> None:
    """Every stage in ``cfgs`` has the same :data:`SHARED_SECTIONS` as the first one."""
    (first_slot, first), *others = cfgs.items()
    for section in SHARED_SECTIONS:
        expected = dataclasses.asdict(getattr(first, section))
        for slot, cfg in others:
            found = _differences(expected, dataclasses.asdict(getattr(cfg, section)))
            if found:
                raise GenerationError(f"the {slot} checkpoint was trained with another {section} section than the "
                                      f"{first_slot} checkpoint ({first_slot} vs {slot}: {'; '.join(found)}); use "
                                      f"checkpoints trained on the same tri-planes with the same {section} settings")


def check_decoder(decoder: TriplaneDecoder, cfg: RodinConfig) -> None:
    """The decoder's config is ``cfg.triplane.decoder`` (it decodes the planes the stages generate)."""
    expected = cfg.triplane.decoder.to_dict()
    found = _differences(expected, decoder.cfg.to_dict())
    if found:
        raise GenerationError(f"the decoder does not decode the planes these checkpoints generate (checkpoints' "
                              f"triplane section vs decoder: {'; '.join(found)}); load the decoder the training "
                              "tri-planes were fitted with (decoder/ of the same dataset root)")


def merged_config(base: RodinConfig, upsampler: RodinConfig, prior: RodinConfig | None) -> RodinConfig:
    """The base stage's config with the ``upsampler`` and ``prior`` sections of their own checkpoints."""
    merged = dataclasses.replace(base, upsampler=upsampler.upsampler,
                                 prior=prior.prior if prior is not None else base.prior)
    return merged.validate()


def _load_strict(module: nn.Module, checkpoint: Checkpoint, name: str, slot: str) -> nn.Module:
    """``module`` with the checkpoint's ``name`` weights loaded with strict keys and shapes, in eval mode."""
    if name not in checkpoint.module_names:
        raise GenerationError(f"the {slot} checkpoint holds no {name!r} weights (modules: {checkpoint.module_names});"
                              f" it was not written by `rodin train {slot}`, retrain that stage")
    state = checkpoint.module_state(name)
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(v.shape)}"
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        raise GenerationError(f"the {slot} checkpoint's {name!r} weights do not fit the network its config builds "
                              f"(missing {missing[:10]}, unexpected {unexpected[:10]}, shapes {shapes[:10]}); the "
                              f"checkpoint is damaged or from another rodin version: retrain the {slot} stage")
    module.load_state_dict(state, strict=True)
    return module.eval().requires_grad_(False)


def ema_network(checkpoint: Checkpoint, slot: str, cfg: RodinConfig) -> nn.Module:
    """The stage's network rebuilt from its config, with the EMA shadow weights (appendix B.1), in eval mode.

    The network config saved in the checkpoint must be the one ``cfg`` (the stage's RodinConfig) builds,
    since the samplers derive shapes and the diffusion process from ``cfg``.
    """
    expected = network_config(slot, cfg)
    saved = checkpoint.config.get("network")
    try:
        same = type(expected).from_dict(saved) == expected
    except (TypeError, ValueError):
        same = False
    if not same:
        raise GenerationError(f"the {slot} checkpoint's network config {saved!r} is not the one its RodinConfig "
                              f"builds ({expected.to_dict()}); it was written by another rodin version, retrain the "
                              f"{slot} stage")
    with torch.random.fork_rng(devices=[]):
        network = model_from_config(checkpoint.config)
    return _load_strict(network, checkpoint, "ema", slot)


def checkpoint_stats(checkpoint: Checkpoint, slot: str) -> PlaneStats | None:
    """The plane statistics saved in a base/upsampler checkpoint (None when it has none)."""
    extra = checkpoint.extra_tensors
    if f"{STATS_PREFIX}mean" not in extra:
        return None
    try:
        return PlaneStats.from_tensors(extra, STATS_PREFIX)
    except PlaneStatsError as exc:
        raise GenerationError(f"the {slot} checkpoint's plane statistics are unusable ({exc}); retrain the "
                              f"{slot} stage") from exc


def corpus_stats(base: Checkpoint, upsampler: Checkpoint) -> PlaneStats:
    """The statistics both U-Net stages normalised the planes with; they must agree when both saved them."""
    base_stats, up_stats = checkpoint_stats(base, "base"), checkpoint_stats(upsampler, "upsampler")
    if base_stats is None:
        raise GenerationError("the base checkpoint holds no plane statistics (extra tensors 'stats.mean', "
                              "'stats.std'), so its samples cannot be brought back to raw units; retrain the base "
                              "stage with `rodin train base`")
    if up_stats is not None and not (torch.equal(base_stats.mean, up_stats.mean)
                                     and torch.equal(base_stats.std, up_stats.std)):
        raise GenerationError(f"base and upsampler were trained with different plane statistics (base mean "
                              f"{base_stats.mean.tolist()}, upsampler mean {up_stats.mean.tolist()}); use checkpoints "
                              "trained on the same corpus statistics (stats/ of one dataset root)")
    return base_stats


def base_encoder(checkpoint: Checkpoint, cfg: RodinConfig) -> tuple[nn.Module | None, str | None]:
    """The encoder that produced the base model's z (§3.2) and, when it cannot be built, why.

    ``learned``: the EMA of the encoder trained with the base (``encoder_ema``); ``clip``: the frozen
    CLIP encoder of ``cfg.encoder``, or ``(None, reason)`` when its weights are not on this machine
    (sampling works without it; portrait inversion does not). A base model trained without latent
    conditioning has no encoder.
    """
    if not cfg.base.latent_conditioning:
        return None, ("the base model was trained without latent conditioning (base.latent_conditioning=false), so "
                      "it reads no image; retrain the base stage with base.latent_conditioning=true to invert portraits")
    if cfg.encoder.kind != "learned":
        try:
            return build_encoder(cfg.encoder).eval(), None
        except EncoderUnavailableError as exc:
            return None, str(exc)
    with torch.random.fork_rng(devices=[]):
        encoder = build_encoder(cfg.encoder)
    return _load_strict(encoder, checkpoint, "encoder_ema", "base"), None


def latent_normalizer(checkpoint: Checkpoint, cfg: RodinConfig, slot: str = "prior") -> LatentNormalizer:
    """The latent standardisation of the prior (appendix B.4) or the text prior (B.5), its ``latent_norm`` module."""
    return _load_strict(LatentNormalizer(cfg.encoder.latent_dim), checkpoint, "latent_norm", slot)
