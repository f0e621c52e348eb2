"""Roll-out / roll-in of tri-planes (paper §3.2): exact inverses, plane k is column block k."""

import pytest
import torch

from rodin_core.triplane.planes import PLANE_NAMES
from rodin_core.triplane.rollout import roll_in, roll_out


def test_roll_out_then_in_is_identity() -> None:
    planes = torch.randn(2, 3, 4, 5, 5)
    rolled = roll_out(planes)
    assert rolled.shape == (2, 4, 5, 15)
    assert torch.equal(roll_in(rolled), planes)


def test_roll_in_then_out_is_identity() -> None:
    rolled = torch.randn(2, 4, 6, 18)
    planes = roll_in(rolled)
    assert planes.shape == (2, 3, 4, 6, 6)
    assert torch.equal(roll_out(planes), rolled)


def test_column_block_k_is_plane_k_in_plane_order() -> None:
    planes = torch.randn(2, 3, 4, 5, 7)
    rolled = roll_out(planes)
    for k in range(len(PLANE_NAMES)):
        assert torch.equal(rolled[..., 7 * k:7 * (k + 1)], planes[:, k])


def test_other_plane_counts_round_trip() -> None:
    rolled = torch.randn(1, 2, 3, 8)
    planes = roll_in(rolled, n_planes=2)
    assert planes.shape == (1, 2, 2, 3, 4)
    assert torch.equal(planes[:, 1], rolled[..., 4:])
    assert torch.equal(roll_out(planes), rolled)


def test_wrong_shapes_raise() -> None:
    with pytest.raises(ValueError, match=r"\(B, n_planes, C, H, W\), got shape \(3, 4, 5, 5\)"):
        roll_out(torch.zeros(3, 4, 5, 5))
    with pytest.raises(ValueError, match=r"got shape \(1, 3, 4, 5, 5\)"):
        roll_in(torch.zeros(1, 3, 4, 5, 5))
    with pytest.raises(ValueError, match="width 10 is not divisible by n_planes=3"):
        roll_in(torch.zeros(1, 4, 5, 10))
    with pytest.raises(ValueError, match="n_planes >= 1"):
        roll_in(torch.zeros(1, 4, 5, 10), n_planes=0)
