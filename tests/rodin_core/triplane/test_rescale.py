"""Random rescaling of tri-planes (paper §3.1, Fig. 3): identity at full size, low-pass below it."""

import pytest
import torch

from rodin_core.triplane.rescale import random_rescale, rescale_planes


def _checkerboard(n: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")  # (n, n) each
    board = ((rows + cols) % 2).float() * 2 - 1  # (n, n) of +-1
    return board.expand(1, 3, 2, n, n).clone()  # (1, 3, 2, n, n)


def test_full_size_is_identity():
    planes = torch.randn(2, 3, 4, 8, 8)
    assert rescale_planes(planes, 8) is planes


def test_constant_planes_stay_constant():
    planes = torch.full((1, 3, 2, 16, 16), 0.7)
    for size in (3, 8, 11):
        out = rescale_planes(planes, size)
        assert out.shape == planes.shape
        assert torch.allclose(out, planes, atol=1e-6)


def test_high_frequencies_are_removed():
    board = _checkerboard(16)
    for size in (4, 8, 12):
        out = rescale_planes(board, size)
        assert out.abs().max() < 0.5, f"checkerboard survived down-sampling to {size}"
    assert torch.allclose(rescale_planes(board, 16), board)


def test_smooth_content_survives():
    x = torch.linspace(-1, 1, 32)
    ramp = x.expand(1, 3, 1, 32, 32)  # (1, 3, 1, 32, 32) varies along columns only
    out = rescale_planes(ramp, 16)
    assert (out - ramp)[..., 2:-2].abs().max() < 0.05


def test_random_rescale_draws_sizes_in_range_and_is_seeded():
    planes = torch.randn(1, 3, 2, 8, 8)
    assert random_rescale(planes, 8) is planes
    a = [random_rescale(planes, 2, torch.Generator().manual_seed(s)) for s in range(6)]
    b = [random_rescale(planes, 2, torch.Generator().manual_seed(s)) for s in range(6)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(x, planes) for x in a)


def test_rescale_is_differentiable():
    planes = torch.randn(1, 3, 2, 8, 8, requires_grad=True)
    rescale_planes(planes, 5).square().sum().backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0


def test_bad_sizes_raise():
    planes = torch.zeros(1, 3, 2, 8, 8)
    with pytest.raises(ValueError, match="got 9"):
        rescale_planes(planes, 9)
    with pytest.raises(ValueError, match="min_size must be in"):
        random_rescale(planes, 0)
