"""Exponential moving average of a model's weights, used for sampling (appendix B.1, B.4: rate 0.9999).

After every optimisation step the shadow weights move towards the trained ones,
``shadow <- decay * shadow + (1 - decay) * weight``; buffers (e.g. normalisation statistics) are
copied. The idea follows Polyak & Juditsky (1992) and its use in DDPM/improved-diffusion training.

:class:`EMA` is an ``nn.Module`` wrapping a frozen deep copy of the model, so it moves with
``.to(device)``, can be called like the model, and can sit in a stage's ``modules`` dict. Its
``state_dict`` has exactly the keys of the wrapped model (no ``module.`` prefix), so a checkpoint's
``ema.`` entries and ``model.`` entries are interchangeable.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from rodin_core.checkpoint import unwrap

_PREFIX = "module."


class EMA(nn.Module):
    """Frozen shadow copy of ``model`` whose weights track an exponential moving average of its weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay!r}; the paper uses 0.9999")
        self.decay = float(decay)
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.module.requires_grad_(False)
        self.register_state_dict_post_hook(_strip_prefix)
        self.register_load_state_dict_pre_hook(_add_prefix)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the shadow model."""
        return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> EMA:
        """The shadow model always stays in eval mode (no dropout when sampling)."""
        super().train(mode)
        self.module.eval()
        return self

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights (call after each optimiser step)."""
        source = unwrap(model)
        params = dict(source.named_parameters())
        shadow = dict(self.module.named_parameters())
        if params.keys() != shadow.keys():
            missing, extra = sorted(shadow.keys() - params.keys()), sorted(params.keys() - shadow.keys())
            raise ValueError(f"EMA.update got a model with different parameters: missing {missing[:10]}, "
                             f"unexpected {extra[:10]}; pass the model the EMA was built from")
        for name, value in params.items():
            target = shadow[name]
            target.lerp_(value.detach().to(dtype=target.dtype, device=target.device), 1.0 - self.decay)
        buffers = dict(source.named_buffers())
        for name, target in self.module.named_buffers():
            if name in buffers:
                target.copy_(buffers[name])

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into ``module`` (e.g. to sample with EMA weights)."""
        unwrap(module).load_state_dict(self.module.state_dict(), strict=True)


def _strip_prefix(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """state_dict hook: ``{prefix}module.x`` -> ``{prefix}x``, so EMA keys equal the model's."""
    for key in [k for k in state if k.startswith(prefix + _PREFIX)]:
        state[prefix + key[len(prefix) + len(_PREFIX):]] = state.pop(key)


def _add_prefix(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: the inverse of :func:`_strip_prefix`."""
    for key in [k for k in state if k.startswith(prefix) and not k.startswith(prefix + _PREFIX)]:
        state[prefix + _PREFIX + key[len(prefix):]] = state.pop(key)
