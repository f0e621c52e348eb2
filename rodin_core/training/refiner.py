"""Training the convolutional refiner (paper §3.3, Fig. 8) on pairs of renders.

Each step draws random crops of ``patch`` input pixels (and the matching ``scale * patch`` target
pixels) from the training pairs and minimises

    L = l1_weight * |ŷ - y|_1 + perceptual_weight * L_perc(ŷ, y)

with the project's perceptual distance (:class:`~rodin_core.networks.perceptual.PerceptualLoss`,
the shift-tolerant LPIPS VGG by default), by Adam. The refiner starts as bilinear up-sampling, so
the loss starts at the bilinear baseline's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from rodin_core.config.keys import set_key
from rodin_core.config_dict import ConfigError, DictConfig, check_range
from rodin_core.datasets.refiner_pairs import RefinerPairs
from rodin_core.networks.perceptual import PerceptualLoss, minimum_patch_size
from rodin_core.networks.refiner import ConvRefiner, RefinerConfig


@dataclass
class RefinerTrainConfig(DictConfig):
    """How the refiner is trained."""

    steps: int = 1500
    """Optimisation steps."""
    batch_size: int = 8
    """Crops per step."""
    patch: int = 24
    """Side of each crop in input pixels (the target crop is ``scale`` times larger)."""
    lr: float = 1e-3
    """Adam learning rate, constant after a linear warm-up of ``warmup`` steps."""
    warmup: int = 50
    """Warm-up steps."""
    l1_weight: float = 1.0
    """Weight of the per-pixel L1 term."""
    perceptual_weight: float = 0.1
    """Weight of the perceptual term (0 trains on L1 alone and needs no VGG weights)."""
    perceptual_every: int = 1
    """Add the perceptual term on every n-th step only (it costs ~10x the rest of a step on a CPU)."""
    perceptual_backend: str = "stlpips"
    """:class:`PerceptualLoss` backend."""
    seed: int = 0
    """Seeds the initial weights and the crops."""
    holdout_subjects: int = 4
    """The last fitted subjects, never trained on: they measure the refiner (with the corpus's held-out ones)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> RefinerTrainConfig:
        """Raise :class:`ConfigError` naming the first bad field and its value."""
        for name, low in (("steps", 1), ("batch_size", 1), ("patch", 1), ("warmup", 0), ("seed", 0),
                          ("holdout_subjects", 0), ("perceptual_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"bad value for refiner.{name}: {value!r} is not an integer")
            check_range(f"refiner.{name}", value, low=low)
        for name in ("lr", "l1_weight", "perceptual_weight"):
            check_range(f"refiner.{name}", float(getattr(self, name)), low=0.0)
        if self.l1_weight == 0 and self.perceptual_weight == 0:
            raise ConfigError("refiner.l1_weight and refiner.perceptual_weight are both 0; give one a weight")
        return self


def random_crops(pairs: RefinerPairs, batch: int, patch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``batch`` random pairs, each cropped at one random place: inputs (B, 5, p, p), targets (B, 3, s p, s p)."""
    side, scale = pairs.inputs.shape[-1], pairs.scale
    if patch > side:
        raise ConfigError(f"bad value for refiner.patch: {patch} is larger than the renders ({side} px); "
                          f"set it to at most {side}")
    index = torch.randint(len(pairs), (batch,), generator=generator)
    rows = torch.randint(side - patch + 1, (batch,), generator=generator)
    cols = torch.randint(side - patch + 1, (batch,), generator=generator)
    inputs = torch.stack([pairs.inputs[i, :, r:r + patch, c:c + patch]
                          for i, r, c in zip(index.tolist(), rows.tolist(), cols.tolist(), strict=True)])
    targets = torch.stack([pairs.targets[i, :, scale * r:scale * (r + patch), scale * c:scale * (c + patch)]
                           for i, r, c in zip(index.tolist(), rows.tolist(), cols.tolist(), strict=True)])
    return inputs, targets


def refiner_loss(output: Tensor, target: Tensor, cfg: RefinerTrainConfig,
                 perceptual: PerceptualLoss | None, with_perceptual: bool = True) -> tuple[Tensor, dict[str, float]]:
    """The weighted loss of outputs and targets (B, 3, H, W) and its terms (the perceptual one when
    ``with_perceptual`` and its weight is not 0)."""
    l1 = F.l1_loss(output, target)
    total, terms = cfg.l1_weight * l1, {"l1": l1.item()}
    if cfg.perceptual_weight > 0 and with_perceptual:
        if perceptual is None:
            raise ValueError("refiner.perceptual_weight > 0 needs a PerceptualLoss; pass one or set the weight to 0")
        perc = perceptual(output, target).mean()
        total = total + cfg.perceptual_weight * perc
        terms["perceptual"] = perc.item()
    terms["loss"] = total.item()
    return total, terms


def check_patch(cfg: RefinerTrainConfig, scale: int) -> None:
    """Refuse a crop too small for the perceptual network."""
    smallest = minimum_patch_size()
    if cfg.perceptual_weight > 0 and cfg.patch * scale < smallest:
        raise ConfigError(f"bad value for refiner.patch: {cfg.patch} input pixels make {cfg.patch * scale}-pixel "
                          f"targets, the perceptual loss needs at least {smallest}; raise it to "
                          f"{-(-smallest // scale)}")


def train_refiner(model: ConvRefiner, pairs: RefinerPairs, cfg: RefinerTrainConfig,
                  perceptual: PerceptualLoss | None = None, log_every: int = 50,
                  on_log: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Train ``model`` in place on ``pairs`` for ``cfg.steps`` steps; returns the logged means (one dict per log)."""
    if pairs.scale != model.cfg.scale:
        raise ValueError(f"the pairs up-sample by {pairs.scale}, the refiner by {model.cfg.scale}; build the refiner "
                         f"with RefinerConfig(scale={pairs.scale})")
    check_patch(cfg, model.cfg.scale)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    history, window = [], []
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
        inputs, targets = random_crops(pairs, cfg.batch_size, cfg.patch, generator)
        loss, terms = refiner_loss(model(inputs.to(device)), targets.to(device), cfg, perceptual,
                                   with_perceptual=step % cfg.perceptual_every == 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(terms)
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            keys = sorted({key for terms in window for key in terms})
            mean = {key: sum(t[key] for t in window if key in t) / sum(key in t for t in window) for key in keys}
            mean["step"] = float(step + 1)
            history.append(mean)
            window = []
            if on_log is not None:
                on_log(step + 1, mean)
    return history


def refiner_configs(overrides: list[str]) -> tuple[RefinerConfig, RefinerTrainConfig]:
    """The network and training configs from ``refiner.FIELD=VALUE`` (training) and ``refiner.net.FIELD=VALUE``
    (network) strings, values parsed as YAML scalars and checked against the field's type (``2e-3`` is a
    float); :class:`ConfigError` names a bad key or value."""
    net, train = RefinerConfig(), RefinerTrainConfig()
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or parts[0] != "refiner" or len(parts) not in (2, 3) or (len(parts) == 3 and parts[1] != "net"):
            raise ConfigError(f"override {item!r} is not of the form refiner.FIELD=VALUE or refiner.net.FIELD=VALUE")
        target = net if len(parts) == 3 else train
        fields = [f.name for f in dataclasses.fields(target)]
        if parts[-1] not in fields or parts[-1] == "scale":
            valid = ", ".join(f"{'.'.join(parts[:-1])}.{f}" for f in fields if f != "scale")
            note = "; the scale comes from the two corpora's image sides" if parts[-1] == "scale" else ""
            raise ConfigError(f"unknown refiner key {key.strip()!r}{note}; valid keys: {valid}")
        try:
            set_key(target, parts[-1], yaml.safe_load(raw) if raw.strip() else None, {})
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(f"for {parts[-1]}:", f"for {key.strip()}:", 1)) from None
    try:
        net.validate()
        train.validate()
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"bad refiner value: {exc}") from None
    return net, train
