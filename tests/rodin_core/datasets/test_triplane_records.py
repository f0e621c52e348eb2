"""Tri-plane shard payloads: float16 safetensors planes and the metrics table (docs/data-contracts.md)."""

from __future__ import annotations

import math

import pytest
import torch

from rodin_core.datasets.triplane_records import (
    RECORDS_SCHEMA,
    FitResult,
    planes_from_safetensors,
    planes_to_safetensors,
    records_table,
)


def _result(subject_id: int, error: str | None = None) -> FitResult:
    planes = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(subject_id))
    return FitResult(subject_id, planes, 29.5 + subject_id, 31.0, 120, 12.5, [(0, 10.0), (100, 29.5)], error)


def test_planes_round_trip_as_float16_within_tolerance() -> None:
    results = [_result(12), _result(3), _result(7, error="non-finite loss nan at step 5")]
    planes = planes_from_safetensors(planes_to_safetensors(results))
    assert list(planes) == [3, 12]  # failed subject left out, ids sorted
    for r in results[:2]:
        assert planes[r.subject_id].dtype == torch.float16 and planes[r.subject_id].shape == (3, 4, 8, 8)
        torch.testing.assert_close(planes[r.subject_id].float(), r.planes, atol=2e-3, rtol=1e-3)


def test_planes_payload_rejects_bad_planes_and_foreign_bytes() -> None:
    huge = _result(1)
    huge.planes[0, 0, 0, 0] = 1e6
    with pytest.raises(ValueError, match="float16 range"):
        planes_to_safetensors([huge])
    nan = _result(2)
    nan.planes[1, 1, 1, 1] = math.nan
    with pytest.raises(ValueError, match="subject 2: planes hold NaN"):
        planes_to_safetensors([nan])
    with pytest.raises(ValueError, match="twice"):
        planes_to_safetensors([_result(4), _result(4)])
    with pytest.raises(ValueError, match="not readable safetensors"):
        planes_from_safetensors(b"not a safetensors file")


def test_records_table_has_one_row_per_subject_with_errors() -> None:
    results = [_result(5), _result(6, error="bad data: images hold 1 NaN/inf values")]
    results[1].psnr_holdout = math.nan
    table = records_table(results)
    assert table.schema == RECORDS_SCHEMA
    rows = table.to_pylist()
    assert [r["subject_id"] for r in rows] == [5, 6]
    assert rows[0] == {"subject_id": 5, "psnr_holdout": 34.5, "psnr_train": 31.0, "steps": 120, "seconds": 12.5,
                       "error": None}
    assert math.isnan(rows[1]["psnr_holdout"]) and "NaN" in rows[1]["error"]
