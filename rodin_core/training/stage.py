"""The interface every training stage implements, and what the stages share (paper §3.2, §3.3, B.1, B.4).

A stage is a few named modules (the trained ones and their EMA shadows, which are what a checkpoint
holds), named optimisers, and ``train_step(batch, step)``: the base model (:mod:`.base`), the
upsampler (:mod:`.upsampler`) and the latent prior (:mod:`.prior`); :mod:`.registry` builds them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from rodin_core.config import RodinConfig
from rodin_core.datasets.triplanes import TriplaneBatch
from rodin_core.diffusion import build_diffusion
from rodin_core.stage_specs import stage_config, stage_section, train_config_for
from rodin_core.training.ema import EMA
from rodin_core.training.optimisation import (
    Optimisation,
    autocast_model,
    broadcast_modules,
    seeded_init,
    step_generator,
)
from rodin_core.triplane.stats import PlaneStats


class Stage(Protocol):
    """One trainable diffusion stage."""

    name: str
    """``base``, ``upsampler`` or ``prior``."""
    modules: dict[str, nn.Module]
    """What a checkpoint holds: trained modules and their EMA shadows (e.g. ``model``, ``ema``)."""
    optimizers: dict[str, Optimizer]

    def train_step(self, batch: TriplaneBatch | Tensor, step: int) -> dict[str, float]:
        """One optimisation step (0-based index ``step``); returns loss terms, ``lr`` and ``grad_norm``."""
        ...

    def config(self) -> dict[str, Any]:
        """JSON-ready: the stage name, ``RodinConfig.to_dict()`` and the network/diffusion configs used."""
        ...



class DiffusionStage:
    """What the three stages share (appendix B.1, B.4): their config section, a seeded network, its
    diffusion process, EMA shadows of the trained modules, AdamW over them and the autocast forward.

    A subclass sets ``name``, calls ``super().__init__`` with its network builder, builds what else it
    trains or keeps, then calls :meth:`optimise`.
    """

    name: str

    def __init__(self, cfg: RodinConfig, device: torch.device | str, rank: int, network: Callable[[], nn.Module],
                 stats: PlaneStats | None = None) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.rank = rank
        self.train_cfg = train_config_for(self.name, cfg)
        if stats is not None and stats.channels != cfg.triplane.channels:
            raise ValueError(f"plane statistics have {stats.channels} channels, triplane.channels is "
                             f"{cfg.triplane.channels}; recompute the statistics for this corpus")
        self.stats = stats
        self.diffusion_cfg = stage_section(self.name, cfg).diffusion
        self.diffusion = build_diffusion(self.diffusion_cfg)
        self.model = seeded_init(self.train_cfg.seed, network).to(self.device)
        self._forward = autocast_model(self.model, self.device, self.train_cfg.precision)

    def optimise(self, trained: dict[str, nn.Module], kept: dict[str, nn.Module] | None = None) -> None:
        """Copy rank 0's weights to every rank, give each ``trained`` module an EMA shadow (``ema`` for the
        model, ``<name>_ema`` otherwise) and optimise them; ``kept``: further modules a checkpoint holds."""
        kept = kept or {}
        broadcast_modules([*trained.values(), *kept.values()])
        self.modules: dict[str, nn.Module] = {}
        shadows: list[tuple[nn.Module, EMA]] = []
        for module_name, module in trained.items():
            shadow = EMA(module, self.train_cfg.ema_decay)
            self.modules[module_name] = module
            self.modules["ema" if module_name == "model" else f"{module_name}_ema"] = shadow
            shadows.append((module, shadow))
        self.modules.update(kept)
        self.optimisation = Optimisation(list(trained.values()), shadows, self.train_cfg, self.device)
        self.optimizers: dict[str, Optimizer] = {"model": self.optimisation.optimizer}

    def start_step(self, batch: TriplaneBatch, step: int) -> tuple[TriplaneBatch, torch.Generator]:
        """``batch`` on the device and the generator of step ``step`` on this rank, with the model in training
        mode; a TypeError unless ``batch`` is a :class:`TriplaneBatch` (the tri-plane stages' data)."""
        if not isinstance(batch, TriplaneBatch):
            raise TypeError(f"the {self.name} stage trains on TriplaneBatch, got {type(batch).__name__}")
        self.model.train()
        return batch.to(self.device), step_generator(self.train_cfg.seed, self.rank, step, self.device)

    def config(self) -> dict[str, Any]:
        """Stage name, RodinConfig, the network and diffusion configs (JSON-ready)."""
        return stage_config(self.name, self.cfg)
