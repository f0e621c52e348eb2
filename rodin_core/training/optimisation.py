"""Optimisation shared by the training stages (paper appendix B.1, B.4).

- :class:`Optimisation`: AdamW (Loshchilov & Hutter 2019; appendix B.1), linear learning-rate
  warm-up, global gradient-norm clipping, EMA of the weights (appendix B.1: 0.9999), bf16/fp16
  autocast on GPU only, and the average of gradients across data-parallel ranks when
  ``torch.distributed`` is initialised (one coalesced all-reduce per step, so the modules are never
  wrapped and their state-dict keys never change);
- :func:`step_generator`: every random draw of step ``s`` on rank ``r`` comes from a generator
  seeded by (seed, r, s), so a run resumed from a checkpoint draws what the uninterrupted run would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import AdamW

from rodin_core.config import TrainConfig
from rodin_core.training.ema import EMA

_BUCKET_ELEMENTS = 2**24
"""Largest number of gradient elements averaged by one all-reduce."""
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def seeded_init(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with the global RNG seeded by ``seed`` inside, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def step_generator(seed: int, rank: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of every random draw of step ``step`` on rank ``rank`` (seeded from all three)."""
    state = np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=torch.device(device)).manual_seed(int(state) & (2**63 - 1))


def warmup_lr(step: int, train: TrainConfig) -> float:
    """Learning rate of 0-based step ``step``: linear warm-up over ``warmup_steps``, then ``lr``."""
    if train.warmup_steps <= 0:
        return train.lr
    return train.lr * min(1.0, (step + 1) / train.warmup_steps)


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA; a no-op on the CPU (training there stays fp32) or for ``fp32``."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    if precision not in _AUTOCAST_DTYPES:
        raise ValueError(f"precision {precision!r} is not one of bf16, fp16, fp32")
    return torch.autocast(device_type="cuda", dtype=_AUTOCAST_DTYPES[precision])


def autocast_model(model: nn.Module, device: torch.device, precision: str) -> Callable[..., Tensor]:
    """``model`` run under :func:`autocast_context`, its output cast to float32 for the losses."""

    def forward(*args: Any, **kwargs: Any) -> Tensor:
        with autocast_context(device, precision):
            return model(*args, **kwargs).float()

    return forward


def distributed_world() -> int:
    """Number of data-parallel ranks (1 unless ``torch.distributed`` is initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def broadcast_modules(modules: Iterable[nn.Module]) -> None:
    """Copy rank 0's parameters and buffers to every rank (no-op without ``torch.distributed``)."""
    if distributed_world() == 1:
        return
    with torch.no_grad():
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)


def average_gradients(parameters: list[nn.Parameter]) -> None:
    """Average the gradients of ``parameters`` over ranks in coalesced all-reduces (no-op on one rank).

    A parameter without a gradient contributes zeros, so every rank reduces the same buffers.
    """
    world = distributed_world()
    if world == 1:
        return
    for param in parameters:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    for bucket in _buckets(parameters):
        flat = torch.cat([p.grad.reshape(-1) for p in bucket])  # (N,)
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for param in bucket:
            count = param.numel()
            param.grad.copy_(flat[offset:offset + count].view_as(param))
            offset += count


def _buckets(parameters: list[nn.Parameter]) -> Iterator[list[nn.Parameter]]:
    bucket: list[nn.Parameter] = []
    size = 0
    for param in parameters:
        if bucket and (size + param.numel() > _BUCKET_ELEMENTS or param.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(param)
        size += param.numel()
    if bucket:
        yield bucket


class Optimisation:
    """AdamW over ``trained`` modules with warm-up, clipping, gradient averaging and EMA (appendix B.1, B.4).

    ``ema`` maps each trained module to its :class:`EMA` shadow; shadows are updated after every step.
    fp16 autocast on CUDA uses a gradient scaler (its scale is not checkpointed: it re-adapts in a
    few steps after a resume).
    """

    def __init__(self, trained: list[nn.Module], ema: list[tuple[nn.Module, EMA]], train: TrainConfig,
                 device: torch.device) -> None:
        self.train = train
        self.device = device
        self.parameters = [p for module in trained for p in module.parameters() if p.requires_grad]
        if not self.parameters:
            raise ValueError("nothing to optimise: the stage's trained modules have no trainable parameters")
        self.optimizer = AdamW(self.parameters, lr=warmup_lr(0, train), weight_decay=train.weight_decay)
        self.ema = ema
        self.scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and train.precision == "fp16")

    def step(self, loss: Tensor, step: int, terms: dict[str, Tensor], stage: str) -> dict[str, float]:
        """Backward ``loss`` (a scalar), update the weights and the EMA; returns ``lr`` and ``grad_norm``."""
        if not torch.isfinite(loss):
            shown = {k: v.detach().mean().item() for k, v in terms.items()}
            raise FloatingPointError(f"{stage} step {step}: the loss is {loss.item()} (terms {shown}); "
                                     f"lower {stage}.train.lr or check the training data and statistics")
        lr = warmup_lr(step, self.train)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        average_gradients(self.parameters)
        limit = self.train.grad_clip if self.train.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, limit)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        for module, shadow in self.ema:
            shadow.update(module)
        return {"lr": lr, "grad_norm": float(grad_norm)}
