"""The perceptual loss of Eq. 4 (paper §3.3): offline VGG weights, distances, gradients, clear errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from rodin_core.networks.perceptual import (
    PerceptualLoss,
    PerceptualUnavailableError,
    ShiftTolerantVGG16,
    minimum_patch_size,
)

# stlpips_pytorch.stlpips.LPIPS(net="vgg", variant="shift_tolerant")(x, y, normalize=True) for the pair of
# _pair() (computed once with the package; its modules need IPython, so they are not imported here).
REFERENCE_DISTANCES = [0.01665298454463482, 0.020677749067544937]


@pytest.fixture(scope="module")
def loss() -> PerceptualLoss:
    return PerceptualLoss(backend="stlpips")


def _pair(noise: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 24, generator=generator)
    y = (x + noise * torch.randn(2, 3, 24, 24, generator=generator)).clamp(0, 1)
    return x, y


def test_matches_the_packaged_shift_tolerant_lpips(loss):
    torch.testing.assert_close(loss(*_pair()), torch.tensor(REFERENCE_DISTANCES), rtol=1e-5, atol=1e-7)


def test_distance_is_zero_for_identical_images_and_grows_with_distortion(loss):
    x, mild = _pair(0.05)
    _, strong = _pair(0.4)
    assert torch.allclose(loss(x, x), torch.zeros(2), atol=1e-7)
    assert (loss(x, mild) > 0).all() and (loss(x, strong) > loss(x, mild)).all()


def test_gradient_reaches_the_image_not_the_network(loss):
    x, y = _pair()
    x.requires_grad_(True)
    loss(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in loss.parameters())
    loss.train()
    assert not loss.net.training


def test_smallest_patch_and_clear_errors(loss):
    smallest = minimum_patch_size()
    assert ShiftTolerantVGG16()(torch.rand(1, 3, smallest, smallest))[-1].shape[-1] >= 1
    with pytest.raises(ValueError, match="upsampler.patch_size"):
        loss(torch.rand(1, 3, smallest - 1, smallest - 1), torch.rand(1, 3, smallest - 1, smallest - 1))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        loss(torch.rand(1, 4, 24, 24), torch.rand(1, 4, 24, 24))
    with pytest.raises(ValueError, match="not one of"):
        PerceptualLoss(backend="alex")


@pytest.mark.skipif(importlib.util.find_spec("lpips") is not None, reason="lpips is installed here")
def test_lpips_backend_without_its_weights_names_the_alternatives():
    with pytest.raises(PerceptualUnavailableError, match="stlpips"):
        PerceptualLoss(backend="lpips")
    assert PerceptualLoss(backend="auto").backend == "stlpips"
