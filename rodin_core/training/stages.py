"""The training stages' common interface and optimisation (paper §3.2, §3.3, appendix B.1, B.4).

Rodin trains three diffusion models: the latent-conditioned base model on tri-planes at the base
resolution (§3.2, :mod:`.base`), the tri-plane upsampler (§3.3, :mod:`.upsampler`) and the latent
prior over z (appendix B.4, :mod:`.prior`). Each is a :class:`Stage`: a few named modules (the
trained ones and their EMA shadows, which are what a checkpoint holds), named optimisers, and
``train_step(batch, step)``. What they share is here:

- the network and diffusion configurations each stage uses (:func:`unet_config_for`,
  :func:`latent_mlp_config_for`, :func:`diffusion_config_for`): ε prediction with the hybrid loss
  and a learned-range variance for the base model (§3.2, Nichol & Dhariwal 2021), x_0 prediction with
  the simple loss for the upsampler (§3.3), ε prediction with the simple loss for the prior;
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
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import AdamW, Optimizer

from rodin_core.config import RodinConfig, TrainConfig
from rodin_core.diffusion import DiffusionConfig
from rodin_core.networks import LatentMLP, LatentMLPConfig, TriplaneUNet, UNetConfig
from rodin_core.training.dataset import TriplaneBatch
from rodin_core.training.ema import EMA
from rodin_core.training.stats import PlaneStats
from rodin_core.triplane.field import TriplaneDecoder

STAGE_NAMES = ("base", "upsampler", "prior")
_BUCKET_ELEMENTS = 2**24
"""Largest number of gradient elements averaged by one all-reduce."""
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def _check_name(name: str) -> None:
    if name not in STAGE_NAMES:
        raise ValueError(f"unknown training stage {name!r}; choose one of {STAGE_NAMES}")


def unet_config_for(name: str, cfg: RodinConfig) -> UNetConfig:
    """The :class:`UNetConfig` of the ``base`` (§3.2) or ``upsampler`` (§3.3) stage of ``cfg``."""
    _check_name(name)
    if name == "prior":
        raise ValueError("the prior stage is a residual MLP, not a U-Net; use latent_mlp_config_for(cfg)")
    section = cfg.base if name == "base" else cfg.upsampler
    channels = cfg.triplane.channels
    return UNetConfig(
        in_channels=channels,
        out_channels=channels,
        model_channels=section.model_channels,
        channel_mult=tuple(section.channel_mult),
        num_res_blocks=section.num_res_blocks,
        attention_resolutions=tuple(section.attention_resolutions),
        aware_resolutions=tuple(section.aware_resolutions),
        num_head_channels=section.num_head_channels,
        dropout=section.dropout,
        latent_dim=cfg.encoder.latent_dim if name == "base" else 0,
        cond_channels=0 if name == "base" else channels,
        learn_sigma=name == "base",
        image_size=cfg.triplane.rescale_min if name == "base" else cfg.triplane.resolution,
    )


def latent_mlp_config_for(cfg: RodinConfig) -> LatentMLPConfig:
    """The residual-MLP denoiser of the latent prior (appendix B.4)."""
    return LatentMLPConfig(latent_dim=cfg.encoder.latent_dim, width=cfg.prior.width, depth=cfg.prior.depth)


def diffusion_config_for(name: str, cfg: RodinConfig) -> DiffusionConfig:
    """Base: ε, learned-range variance, hybrid loss (§3.2); upsampler: x_0, fixed-small, simple (§3.3);
    prior: ε, fixed-small, simple (appendix B.4). Steps, schedule and sampling respacing from ``cfg``."""
    _check_name(name)
    section = {"base": cfg.base, "upsampler": cfg.upsampler, "prior": cfg.prior}[name]
    hybrid = name == "base"
    return DiffusionConfig(
        schedule=section.schedule,
        steps=section.diffusion_steps,
        mean_type="x0" if name == "upsampler" else "eps",
        var_type="learned_range" if hybrid else "fixed_small",
        loss="hybrid" if hybrid else "simple",
        sampling_steps=str(section.sampling_steps),
    ).validate()


def train_config_for(name: str, cfg: RodinConfig) -> TrainConfig:
    """The optimisation settings of stage ``name``."""
    _check_name(name)
    return {"base": cfg.base, "upsampler": cfg.upsampler, "prior": cfg.prior}[name].train


def stage_config(name: str, cfg: RodinConfig) -> dict[str, Any]:
    """The JSON a stage saves beside its weights: enough to rebuild its networks (:func:`model_from_config`)."""
    network = latent_mlp_config_for(cfg).to_dict() if name == "prior" else unet_config_for(name, cfg).to_dict()
    return {"stage": name, "rodin": cfg.to_dict(), "network": network,
            "diffusion": diffusion_config_for(name, cfg).to_dict()}


def model_from_config(config: dict[str, Any]) -> nn.Module:
    """The untrained network described by a :func:`stage_config` dict (load weights with strict keys after)."""
    try:
        name, network = config["stage"], config["network"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a stage config (needs 'stage' and 'network' keys): {str(config)[:200]}") from exc
    _check_name(name)
    return LatentMLP(LatentMLPConfig.from_dict(network)) if name == "prior" else TriplaneUNet(
        UNetConfig.from_dict(network))


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
    ``latents`` (N, D): the training subjects' z, needed by the prior. ``rank``: this data-parallel
    worker's rank, which only changes the random draws of each step.
    """
    _check_name(name)
    if name == "base":
        from rodin_core.training.base import BaseStage

        return BaseStage(cfg, _need_stats(name, stats), device, rank=rank)
    if name == "upsampler":
        from rodin_core.training.upsampler import UpsamplerStage

        return UpsamplerStage(cfg, _need_stats(name, stats), decoder, device, rank=rank)
    from rodin_core.training.prior import PriorStage

    if latents is None:
        raise ValueError("the prior stage trains on the subjects' latents: pass latents (N, D), e.g. from "
                         "rodin_core.training.prior.encode_latents with the trained base's encoder")
    return PriorStage(cfg, latents, device, rank=rank)


def _need_stats(name: str, stats: PlaneStats | None) -> PlaneStats:
    if stats is None:
        raise ValueError(f"the {name} stage trains on normalised tri-planes: pass the corpus PlaneStats "
                         "(rodin_core.training.stats.read_plane_stats(out_uri))")
    return stats


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
