"""Optimisation settings of a diffusion stage (paper appendix B.1, B.4).

Paper appendix B.1: AdamW at learning rate 5e-5, batch 48 for the base model and 16 for the
upsampler, with an exponential moving average of the weights (decay 0.9999) used for sampling;
appendix B.4: the latent prior at batch 96 and learning rate 4e-5.
"""

from __future__ import annotations

from dataclasses import dataclass

from rodin_core.config_dict import ConfigError, check_range

PRECISIONS = ("bf16", "fp16", "fp32")
"""Values of :attr:`TrainConfig.precision`."""
MAX_WORKERS = 256
"""Most Ray Train workers of one stage (each is a process with its own copy of the networks)."""


@dataclass
class TrainConfig:
    """Optimisation settings shared by every training stage (appendix B.1, B.4)."""

    steps: int = 500_000
    """Optimisation steps of the stage."""
    batch_size: int = 48
    """Global batch size (split across Ray Train workers)."""
    lr: float = 5e-5
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up steps."""
    ema_decay: float = 0.9999
    """Decay of the exponential moving average of the weights used for sampling."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    checkpoint_every: int = 5000
    """Steps between checkpoints (the unit of resume after a failure)."""
    log_every: int = 100
    """Steps between reported metrics."""
    workers: int = 1
    """Ray Train workers (data-parallel), at most :data:`MAX_WORKERS`."""
    use_gpu: bool = False
    """One GPU per worker; on CPU training runs in fp32."""
    precision: str = "bf16"
    """Autocast dtype on GPU: bf16, fp16 or fp32 (CPU always fp32)."""
    max_failures: int = 3
    """Ray Train FailureConfig retries of a crashed run (it resumes from the last checkpoint)."""
    seed: int = 0
    """Seed of initialisation, data order and noise."""

    def validate(self, where: str) -> None:
        """Raise :class:`ConfigError` naming the first bad field, its value and the valid range."""
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            check_range(f"{where}.{name}", getattr(self, name), low=1)
        check_range(f"{where}.workers", self.workers, low=1, high=MAX_WORKERS)
        for name in ("warmup_steps", "max_failures", "seed"):
            check_range(f"{where}.{name}", getattr(self, name), low=0)
        for name in ("lr", "weight_decay", "grad_clip"):
            check_range(f"{where}.{name}", getattr(self, name), low=0.0)
        check_range(f"{where}.ema_decay", self.ema_decay, low=0.0, high=1.0)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{where}.precision={self.precision!r} is not one of {PRECISIONS}")

