"""Builds a training stage by name: the base model (§3.2), the upsampler (§3.3), the latent prior (B.4) or the
text prior (B.5)."""

from __future__ import annotations

import torch
from torch import Tensor

from rodin_core.config import RodinConfig
from rodin_core.stage_specs import TEXT_PRIOR, check_stage_name
from rodin_core.training.stage import Stage
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.stats import PlaneStats


def build_stage(
    name: str,
    cfg: RodinConfig,
    stats: PlaneStats | None,
    decoder: TriplaneDecoder | None = None,
    device: torch.device | str = "cpu",
    latents: Tensor | None = None,
    *,
    rank: int = 0,
) -> Stage:
    """The stage ``name`` of ``cfg`` on ``device``, initialised from ``cfg.<name>.train.seed``.

    ``stats``: the corpus plane statistics (base, upsampler). ``decoder``: the frozen tri-plane
    decoder, needed by the upsampler's perceptual loss when ``upsampler.perceptual_weight > 0``.
    ``latents`` (N, D): the training subjects' z, needed by the prior and the text prior (the z of its
    pairs). ``rank``: this data-parallel worker's rank, which only changes the random draws of each step.
    """
    check_stage_name(name)
    if name == "base":
        from rodin_core.training.base import BaseStage

        return BaseStage(cfg, _need_stats(name, stats), device, rank=rank)
    if name == "upsampler":
        from rodin_core.training.upsampler import UpsamplerStage

        return UpsamplerStage(cfg, _need_stats(name, stats), decoder, device, rank=rank)
    if name == TEXT_PRIOR:
        from rodin_core.training.text_prior import TextPriorStage

        if latents is None:
            raise ValueError("the text prior stage standardises the latents of its pairs: pass their z (N, D), "
                             "e.g. from rodin_core.training.text_pairs.read_text_pairs")
        return TextPriorStage(cfg, latents, device, rank=rank)
    from rodin_core.training.prior import PriorStage

    if latents is None:
        raise ValueError("the prior stage trains on the subjects' latents: pass latents (N, D), e.g. from "
                         "rodin_core.training.prior.encode_latents with the trained base's encoder")
    return PriorStage(cfg, latents, device, rank=rank)


def _need_stats(name: str, stats: PlaneStats | None) -> PlaneStats:
    if stats is None:
        raise ValueError(f"the {name} stage trains on normalised tri-planes: pass the corpus PlaneStats "
                         "(rodin_core.datasets.plane_stats.read_plane_stats(out_uri))")
    return stats

