"""Per-channel normalisation statistics of the fitted tri-planes (paper §3.2, appendix B.1).

The diffusion models assume data of roughly unit scale, while fitted tri-plane features have
whatever range the fitting converged to, channel by channel. Every diffusion stage therefore sees
``(planes - mean[c]) / std[c]``, with the mean and standard deviation of each feature channel ``c``
taken over all subjects, the three planes and every pixel. The statistics are computed once over
the corpus, streamed subject by subject (Chan et al.'s pairwise update of mean and sum of squared
deviations, in float64, "Updating formulae and a pairwise algorithm for computing sample
variances", 1979), stored in the ``stats/`` stage and saved inside every checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

STATS_FORMAT_VERSION = "1"
MIN_STD = 1e-6
"""A channel whose std is below this is left unscaled (std stored as 1): it is constant in the corpus."""


class PlaneStatsError(ValueError):
    """Statistics could not be computed or read; the message says why and what to do."""


@dataclass(frozen=True)
class PlaneStats:
    """Mean and std of each tri-plane feature channel: ``mean`` (C,), ``std`` (C,) float32."""

    mean: Tensor
    std: Tensor
    count: int = 0
    """Number of subjects the statistics were computed from (0 when unknown)."""

    def __post_init__(self) -> None:
        if self.mean.dim() != 1 or self.std.shape != self.mean.shape:
            raise PlaneStatsError(f"PlaneStats needs mean and std of shape (C,), got {tuple(self.mean.shape)} "
                                  f"and {tuple(self.std.shape)}")
        if not (torch.isfinite(self.mean).all() and torch.isfinite(self.std).all() and (self.std > 0).all()):
            raise PlaneStatsError(f"PlaneStats needs finite mean and positive finite std, got mean {self.mean.tolist()} "
                                  f"std {self.std.tolist()}; recompute them from the committed tri-planes")

    @property
    def channels(self) -> int:
        """C, the number of feature channels."""
        return int(self.mean.shape[0])

    def _broadcast(self, planes: Tensor) -> tuple[Tensor, Tensor]:
        if planes.dim() < 4 or planes.shape[-4] != 3 or planes.shape[-3] != self.channels:
            raise PlaneStatsError(f"planes must be (..., 3, {self.channels}, H, W) to match these statistics, "
                                  f"got {tuple(planes.shape)}")
        mean = self.mean.to(device=planes.device, dtype=planes.dtype)[:, None, None]  # (C, 1, 1)
        std = self.std.to(device=planes.device, dtype=planes.dtype)[:, None, None]  # (C, 1, 1)
        return mean, std

    def normalize(self, planes: Tensor) -> Tensor:
        """Raw planes (..., 3, C, H, W) -> normalised planes, the data every diffusion model sees."""
        mean, std = self._broadcast(planes)
        return (planes - mean) / std

    def denormalize(self, planes: Tensor) -> Tensor:
        """Normalised planes (..., 3, C, H, W) -> raw planes the decoder reads (inverse of :meth:`normalize`)."""
        mean, std = self._broadcast(planes)
        return planes * std + mean

    def as_tensors(self, prefix: str = "stats.") -> dict[str, Tensor]:
        """``{prefix + "mean": (C,), prefix + "std": (C,)}``, e.g. for a checkpoint's ``extra_tensors``."""
        return {f"{prefix}mean": self.mean.clone(), f"{prefix}std": self.std.clone()}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor], prefix: str = "stats.", count: int = 0) -> PlaneStats:
        """Inverse of :meth:`as_tensors`."""
        missing = [k for k in (f"{prefix}mean", f"{prefix}std") if k not in tensors]
        if missing:
            raise PlaneStatsError(f"no plane statistics under {missing} (keys present: {sorted(tensors)[:20]}); "
                                  "save them with PlaneStats.as_tensors()")
        return cls(tensors[f"{prefix}mean"].float().cpu(), tensors[f"{prefix}std"].float().cpu(), count)

    def to_json(self) -> str:
        """Human-readable JSON of the statistics (written as ``stats.json`` beside the tensors)."""
        return json.dumps({"format_version": STATS_FORMAT_VERSION, "count": self.count, "channels": self.channels,
                           "mean": self.mean.tolist(), "std": self.std.tolist()}, indent=2)

    def to_bytes(self) -> bytes:
        """safetensors bytes of ``mean`` and ``std`` with the count in the metadata."""
        return st_save({"mean": self.mean.float().contiguous(), "std": self.std.float().contiguous()},
                       metadata={"format_version": STATS_FORMAT_VERSION, "count": str(self.count)})

    @classmethod
    def from_bytes(cls, data: bytes) -> PlaneStats:
        """Read :meth:`to_bytes` output."""
        try:
            tensors = st_load(bytes(data))
        except (SafetensorError, ValueError, TypeError) as exc:
            raise PlaneStatsError(f"plane statistics are not readable safetensors ({exc}); recompute them") from exc
        if set(tensors) != {"mean", "std"}:
            raise PlaneStatsError(f"plane statistics must hold exactly 'mean' and 'std', got {sorted(tensors)}")
        return cls(tensors["mean"].float(), tensors["std"].float(), _metadata_count(data))


def _metadata_count(data: bytes) -> int:
    """The ``count`` entry of a safetensors header (8-byte little-endian length, then JSON)."""
    length = int.from_bytes(bytes(data[:8]), "little")
    header = json.loads(bytes(data[8:8 + length]))
    return int(header.get("__metadata__", {}).get("count", 0))


def compute_plane_stats(planes: Iterable[Tensor]) -> PlaneStats:
    """Streaming per-channel mean and population std over subjects' planes, each (3, C, H, W).

    Each subject's moments are merged into the running ones with Chan's pairwise update in float64,
    so the result equals the statistics of the concatenated corpus without holding it in memory.
    """
    count = 0
    total = 0  # number of values per channel seen so far
    mean: Tensor | None = None  # (C,) float64
    m2: Tensor | None = None  # (C,) float64: sum of squared deviations from the mean
    for index, item in enumerate(planes):
        if item.dim() != 4 or item.shape[0] != 3:
            raise PlaneStatsError(f"item {index} of the planes must be (3, C, H, W), got {tuple(item.shape)}")
        values = item.detach().to(torch.float64).transpose(0, 1).reshape(item.shape[1], -1)  # (C, 3*H*W)
        if mean is not None and values.shape[0] != mean.shape[0]:
            raise PlaneStatsError(f"item {index} has {values.shape[0]} channels, earlier items {mean.shape[0]}; "
                                  "all tri-planes of a corpus share triplane.channels")
        if not torch.isfinite(values).all():
            raise PlaneStatsError(f"item {index} of the planes holds NaN or inf; re-fit that subject")
        n = values.shape[1]
        batch_mean = values.mean(dim=1)  # (C,)
        batch_m2 = ((values - batch_mean[:, None]) ** 2).sum(dim=1)  # (C,)
        if mean is None or m2 is None:
            mean, m2 = batch_mean, batch_m2
        else:
            delta = batch_mean - mean
            merged = total + n
            mean = mean + delta * (n / merged)
            m2 = m2 + batch_m2 + delta**2 * (total * n / merged)
        total += n
        count += 1
    if mean is None or m2 is None:
        raise PlaneStatsError("no tri-planes to compute statistics from; fit some subjects first (rodin fit ...)")
    std = torch.sqrt(m2 / total)
    std = torch.where(std < MIN_STD, torch.ones_like(std), std)
    return PlaneStats(mean.to(torch.float32), std.to(torch.float32), count)

