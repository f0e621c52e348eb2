"""The interface every training stage implements (paper §3.2, §3.3, appendix B.1, B.4).

A stage is a few named modules (the trained ones and their EMA shadows, which are what a checkpoint
holds), named optimisers, and ``train_step(batch, step)``: the base model (:mod:`.base`), the
upsampler (:mod:`.upsampler`) and the latent prior (:mod:`.prior`); :mod:`.registry` builds them.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor, nn
from torch.optim import Optimizer

from rodin_core.datasets.triplanes import TriplaneBatch


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

