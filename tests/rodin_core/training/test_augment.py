"""Base-resolution planes and the upsampler's condition augmentation (paper §3.3)."""

import pytest
import torch

from rodin_core.training.augment import degrade_condition, gaussian_blur
from rodin_core.triplane.rescale import downsample_planes


def planes() -> torch.Tensor:
    return torch.randn(4, 3, 2, 8, 8, generator=torch.Generator().manual_seed(0))  # (B, 3, C, h, w)


def test_base_planes_downsample_and_keep_constants() -> None:
    assert downsample_planes(planes(), 4).shape == (4, 3, 2, 4, 4)
    constant = torch.full((1, 3, 2, 8, 8), 3.0)
    torch.testing.assert_close(downsample_planes(constant, 4), torch.full((1, 3, 2, 4, 4), 3.0))
    with pytest.raises(ValueError, match="rescale_min"):
        downsample_planes(planes(), 16)


def test_same_seed_same_degradation() -> None:
    x = planes()
    a = degrade_condition(x, torch.Generator().manual_seed(5), 1.0, 0.1)
    b = degrade_condition(x, torch.Generator().manual_seed(5), 1.0, 0.1)
    c = degrade_condition(x, torch.Generator().manual_seed(6), 1.0, 0.1)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("op", ["downscale", "blur", "noise"])
def test_each_operation_changes_every_sample(op: str) -> None:
    x = planes()
    y = degrade_condition(x, torch.Generator().manual_seed(1), 1.0, 0.1, prob=1.0, ops=(op,))
    assert all(not torch.equal(y[b], x[b]) for b in range(len(x)))


def test_probability_zero_is_the_identity_and_the_mix_is_per_sample() -> None:
    x = planes()
    assert torch.equal(degrade_condition(x, torch.Generator().manual_seed(1), 1.0, 0.1, prob=0.0), x)
    z = torch.randn(32, 3, 1, 8, 8)  # (B, 3, C, h, w)
    y = degrade_condition(z, torch.Generator().manual_seed(2), 1.0, 0.1, prob=0.5, ops=("noise",))
    changed = sum(not torch.equal(y[b], z[b]) for b in range(32))
    assert 0 < changed < 32


def test_blur_preserves_constants_and_smooths_an_impulse() -> None:
    impulse = torch.zeros(1, 3, 1, 9, 9)
    impulse[..., 4, 4] = 1.0
    blurred = gaussian_blur(impulse, 1.0)
    assert blurred.sum().item() == pytest.approx(3.0, abs=1e-5)
    assert 0 < blurred[0, 0, 0, 4, 4].item() < 1
    torch.testing.assert_close(gaussian_blur(torch.full((1, 3, 1, 5, 5), 2.0), 0.8), torch.full((1, 3, 1, 5, 5), 2.0))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown degradations"):
        degrade_condition(planes(), torch.Generator(), 1.0, 0.1, ops=("jpeg",))
    with pytest.raises(ValueError, match="aug_noise_std"):
        degrade_condition(planes(), torch.Generator(), 1.0, -0.1)
