"""Payloads of a tri-plane shard: the fitted planes and one metrics record per subject (paper B.2).

Tri-planes are float16 tensors in safetensors (never pickle), one
tensor ``subject_<id>`` of shape (3, C, H, W) per subject, plus a table of fitting metrics (held-out
and training PSNR, steps, seconds, error) that the flow writes as parquet through ``ShardWriter``.
Subjects whose fit failed are kept in the table with their error and left out of the tensors.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pyarrow as pa
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

PLANES_FORMAT_VERSION = "1"
_KEY = re.compile(r"subject_(\d+)")

RECORDS_SCHEMA = pa.schema([
    pa.field("subject_id", pa.int64(), nullable=False),
    pa.field("psnr_holdout", pa.float64(), nullable=False),
    pa.field("psnr_train", pa.float64(), nullable=False),
    pa.field("steps", pa.int64(), nullable=False),
    pa.field("seconds", pa.float64(), nullable=False),
    pa.field("error", pa.string(), nullable=True),
])
"""One row per fitted subject; PSNRs are NaN where they could not be measured."""



@dataclass
class FitResult:
    """The outcome of fitting one subject's tri-plane."""

    subject_id: int
    planes: torch.Tensor
    """(3, C, H, W) float32 planes at the best held-out evaluation."""
    psnr_holdout: float
    """Mean PSNR (dB) of the held-out views at the returned planes (NaN when unknown)."""
    psnr_train: float
    """Mean PSNR (dB) of up to four training views at the returned planes (NaN when unknown)."""
    steps: int
    """Optimisation steps taken."""
    seconds: float
    """Wall-clock time of the fit."""
    psnr_curve: list[tuple[int, float]] = field(default_factory=list)
    """(step, held-out PSNR) at each evaluation."""
    error: str | None = None
    """Why fitting failed (NaN loss, bad data), or None on success."""

def planes_to_safetensors(results: list[FitResult]) -> bytes:
    """float16 safetensors of the successful results' planes, keyed ``subject_<id>`` (3, C, H, W)."""
    tensors: dict[str, torch.Tensor] = {}
    for result in results:
        if result.error is not None:
            continue
        planes = result.planes.detach().cpu()
        if planes.dim() != 4 or planes.shape[0] != 3:
            raise ValueError(f"subject {result.subject_id}: planes must be (3, C, H, W), got {tuple(planes.shape)}")
        if not torch.isfinite(planes).all():
            raise ValueError(f"subject {result.subject_id}: planes hold NaN/inf but error is None; "
                             "set FitResult.error for failed fits")
        half = planes.to(torch.float16)
        if not torch.isfinite(half).all():
            raise ValueError(f"subject {result.subject_id}: planes exceed the float16 range "
                             f"(max |value| {float(planes.abs().max())}); raise fit.tv_weight or lower fit.lr_planes")
        key = f"subject_{result.subject_id}"
        if key in tensors:
            raise ValueError(f"subject {result.subject_id} appears twice in the results; fit each subject once")
        tensors[key] = half.contiguous()
    return st_save(tensors, metadata={"format_version": PLANES_FORMAT_VERSION, "layout": "(3, C, H, W) xy,xz,yz"})


def planes_from_safetensors(data: bytes) -> dict[int, torch.Tensor]:
    """Subject id -> float16 planes (3, C, H, W) read from :func:`planes_to_safetensors` bytes."""
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise ValueError(f"tri-plane payload is not readable safetensors ({exc}); re-run fitting of this shard") from exc
    planes: dict[int, torch.Tensor] = {}
    for key, tensor in tensors.items():
        match = _KEY.fullmatch(key)
        if match is None:
            raise ValueError(f"tri-plane payload has a tensor named {key!r}; expected only subject_<id> keys")
        if tensor.dim() != 4 or tensor.shape[0] != 3:
            raise ValueError(f"tri-plane payload tensor {key!r} is {tuple(tensor.shape)}, expected (3, C, H, W)")
        planes[int(match.group(1))] = tensor
    return dict(sorted(planes.items()))


def records_table(results: list[FitResult]) -> pa.Table:
    """The per-subject metrics table (:data:`RECORDS_SCHEMA`), in the order of ``results``."""

    def number(value: float) -> float:
        return float(value) if value is not None else math.nan

    return pa.Table.from_pylist([
        {"subject_id": int(r.subject_id), "psnr_holdout": number(r.psnr_holdout), "psnr_train": number(r.psnr_train),
         "steps": int(r.steps), "seconds": float(r.seconds), "error": r.error}
        for r in results
    ], schema=RECORDS_SCHEMA)
