"""Plane layouts (paper §3.2, Table 2): the channel-stacked tri-plane is the tri-plane, reordered exactly."""

import pytest
import torch

from rodin_core.triplane.layout import stack_channels, unstack_channels
from rodin_core.triplane.planes import PLANE_NAMES
from rodin_core.triplane.rollout import roll_in, roll_out


def test_channel_stacking_round_trips_to_the_tri_plane_exactly() -> None:
    planes = torch.randn(2, 3, 4, 5, 5)
    stacked = stack_channels(planes)
    assert stacked.shape == (2, 12, 5, 5)
    assert torch.equal(unstack_channels(stacked), planes)
    again = torch.randn(2, 12, 6, 6)
    assert torch.equal(stack_channels(unstack_channels(again)), again)


def test_channel_block_k_is_plane_k_in_plane_order() -> None:
    planes = torch.randn(2, 3, 4, 5, 5)
    stacked = stack_channels(planes)
    for k in range(len(PLANE_NAMES)):
        assert torch.equal(stacked[:, 4 * k:4 * (k + 1)], planes[:, k])


def test_rolled_and_stacked_tri_planes_hold_the_same_values() -> None:
    rolled = torch.randn(2, 4, 5, 15)
    stacked = stack_channels(roll_in(rolled))
    assert torch.equal(roll_out(unstack_channels(stacked)), rolled)
    assert torch.equal(stacked.flatten().sort().values, rolled.flatten().sort().values)


def test_wrong_shapes_raise_one_line() -> None:
    with pytest.raises(ValueError, match=r"^stack_channels expects planes \(B, n_planes, C, H, W\), got shape \(3, 4, 5, 5\)$"):
        stack_channels(torch.zeros(3, 4, 5, 5))
    with pytest.raises(ValueError, match=r"^unstack_channels expects a channel-stacked tri-plane \(B, 3 \* C, H, W\), "
                                         r"got shape \(2, 10, 5, 5\)$"):
        unstack_channels(torch.zeros(2, 10, 5, 5))
