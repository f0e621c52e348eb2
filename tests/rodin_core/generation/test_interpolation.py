"""Slerp of latents (Fig. 6): exact endpoints, the great circle between them, the linear fallback."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rodin_core.generation import slerp


def test_endpoints_are_reproduced_bit_for_bit():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        a, b = torch.randn(2, 512, generator=generator)  # (D,) each
        assert torch.equal(slerp(a, b, 0.0), a)
        assert torch.equal(slerp(a, b, 1.0), b)
        assert slerp(a, b, 0.5).dtype == torch.float32


def test_midpoint_of_orthogonal_unit_vectors_lies_on_the_circle():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    half = math.sqrt(0.5)
    torch.testing.assert_close(slerp(a, b, 0.5), torch.tensor([half, half, 0.0]))
    third = slerp(a, b, 1 / 3)
    torch.testing.assert_close(third, torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6), 0.0]))
    assert math.isclose(float(third.norm()), 1.0, rel_tol=1e-6)


def test_constant_angle_steps_along_the_path():
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 16, generator=generator, dtype=torch.float64)
    a, b = a / a.norm() * 4.0, b / b.norm() * 4.0  # same norm: the path stays on the sphere of radius 4
    points = [slerp(a, b, t) for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    angles = [float(torch.arccos((p @ q) / (p.norm() * q.norm()))) for p, q in itertools.pairwise(points)]
    assert max(angles) - min(angles) < 1e-9
    assert all(math.isclose(float(p.norm()), 4.0, rel_tol=1e-9) for p in points)


def test_parallel_and_antiparallel_latents_fall_back_to_a_line():
    a = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(slerp(a, 3.0 * a, 0.5), 2.0 * a)
    torch.testing.assert_close(slerp(a, -a, 0.5), torch.zeros(3))
    torch.testing.assert_close(slerp(torch.zeros(3), a, 0.25), 0.25 * a)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"same shape \(D,\)"):
        slerp(torch.zeros(4), torch.zeros(5), 0.5)
    with pytest.raises(ValueError, match="must be finite"):
        slerp(torch.ones(4), torch.ones(4), float("nan"))
