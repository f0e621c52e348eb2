"""The upsampler's residual parameterisation: s · (x − up(y)) and back."""

import pytest
import torch

from rodin_core.triplane.rescale import upsample_planes
from rodin_core.triplane.residual import ResidualTarget
from rodin_core.triplane.rollout import roll_in, roll_out


def _low(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 4, 8, 24, generator=torch.Generator().manual_seed(seed))  # (B, C, h, 3h) rolled


def test_encode_and_decode_invert_each_other_and_zero_decodes_to_the_bilinear_upsample():
    low = _low()
    target = ResidualTarget.of(low, 16, scale=4.0)
    planes = torch.randn(2, 4, 16, 48, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(target.decode(target.encode(planes)), planes)
    bilinear = roll_out(upsample_planes(roll_in(low), 16))  # (B, C, 16, 48)
    torch.testing.assert_close(target.decode(torch.zeros_like(planes)), bilinear)
    torch.testing.assert_close(target.encode(planes), 4.0 * (planes - bilinear))


def test_each_plane_is_upsampled_on_its_own():
    """Rolled planes sit side by side; the up-sample must not blend one plane's border into the next."""
    low = torch.zeros(1, 1, 4, 12)
    low[..., 4:8] = 1.0  # only the middle plane is non-zero
    base = ResidualTarget.of(low, 8, scale=1.0).base  # (1, 1, 8, 24)
    assert torch.equal(base[..., :8], torch.zeros(1, 1, 8, 8)) and torch.equal(base[..., 16:], torch.zeros(1, 1, 8, 8))
    assert torch.equal(base[..., 8:16], torch.ones(1, 1, 8, 8))


def test_without_residual_the_map_is_the_identity():
    target = ResidualTarget.of(_low(), 16, scale=4.0, residual=False)
    planes = torch.randn(2, 4, 16, 48)
    assert torch.equal(target.encode(planes), planes) and torch.equal(target.decode(planes), planes)


def test_scale_must_be_positive():
    with pytest.raises(ValueError, match=r"upsampler.residual_scale must be > 0, got 0.0"):
        ResidualTarget.of(_low(), 16, scale=0.0)
