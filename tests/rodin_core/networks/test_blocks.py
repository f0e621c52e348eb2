"""ADM blocks on tri-planes: GroupNorm over the three planes, no feature across plane seams,
attention across planes, timestep embedding."""

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from rodin_core.networks.blocks import (
    AttentionBlock,
    Downsample,
    ResBlock,
    TriplaneGroupNorm,
    Upsample,
    group_count,
    timestep_embedding,
)
from rodin_core.triplane.rollout import roll_in, roll_out

SWAP = [0, 2, 1]  # exchange planes XZ and YZ: XY's right-hand neighbour in the roll-out changes


def _perturbed(module: nn.Module) -> nn.Module:
    """Give every parameter random values, so that zero-initialised layers do not hide a path."""
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.3)
    return module


@pytest.mark.parametrize(("channels", "groups"), [(192, 32), (16, 16), (48, 24), (7, 7), (1, 1)])
def test_group_count_is_largest_divisor_up_to_32(channels: int, groups: int) -> None:
    assert group_count(channels) == groups


def test_group_count_rejects_no_channels() -> None:
    with pytest.raises(ValueError, match="channels >= 1, got 0"):
        group_count(0)


def test_triplane_group_norm_equals_group_norm_of_the_rolled_tensor() -> None:
    norm = _perturbed(TriplaneGroupNorm(8))
    reference = nn.GroupNorm(norm.num_groups, 8)
    reference.load_state_dict(norm.state_dict())
    planes = torch.randn(2, 3, 8, 4, 4) * 3 + 1
    torch.testing.assert_close(norm(planes), roll_in(reference(roll_out(planes))))


def test_timestep_embedding_values() -> None:
    emb = timestep_embedding(torch.tensor([0, 3]), 7)
    assert emb.shape == (2, 7)
    assert torch.equal(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0, 0]))
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(3) / 3)
    torch.testing.assert_close(emb[1, :3], torch.cos(3 * freqs))
    torch.testing.assert_close(emb[1, 3:6], torch.sin(3 * freqs))
    torch.testing.assert_close(timestep_embedding(torch.tensor([2.5]), 6)[0, 0], torch.cos(torch.tensor(2.5)))
    with pytest.raises(ValueError, match=r"vector \(B,\), got shape \(2, 1\)"):
        timestep_embedding(torch.zeros(2, 1), 8)


@pytest.mark.parametrize("module", [Downsample(4), Upsample(4)], ids=["down", "up"])
def test_resampling_keeps_planes_apart(module: nn.Module) -> None:
    planes = torch.randn(1, 3, 4, 8, 8, requires_grad=True)
    out = module(planes)
    size = 4 if isinstance(module, Downsample) else 16
    assert out.shape == (1, 3, 4, size, size)
    out[:, 0, :, :, -1].sum().backward()  # the column of plane XY at the seam with XZ
    assert planes.grad[:, 0].abs().sum() > 0
    assert planes.grad[:, 1:].eq(0).all()


def test_fresh_res_block_is_identity_and_perturbed_one_uses_the_embedding() -> None:
    block = ResBlock(8, emb_channels=6, out_channels=8)
    planes, emb = torch.randn(2, 3, 8, 4, 4), torch.randn(2, 6)
    torch.testing.assert_close(block(planes, emb), planes)  # zero-initialised conv2
    _perturbed(block)
    out = block(planes, emb)
    assert out.shape == (2, 3, 8, 4, 4)
    assert not torch.allclose(out, block(planes, emb + 1))
    assert ResBlock(8, 6, 16)(planes, emb).shape == (2, 3, 16, 4, 4)


def _swap_planes(
    out_fn: Callable[[torch.Tensor], torch.Tensor], planes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(planes) with planes 1 and 2 exchanged, f(planes with planes 1 and 2 exchanged))."""
    return out_fn(planes)[:, SWAP], out_fn(planes[:, SWAP])


def test_plain_res_block_exchanges_nothing_across_seams() -> None:
    """Planes meet only through the GroupNorm statistics, which are symmetric in the planes: so a
    block without the 3D-aware conv commutes with exchanging two planes. A convolution over the
    rolled tensor would not (XY's border column would read a different neighbour)."""
    block = _perturbed(ResBlock(4, emb_channels=6, out_channels=4))
    emb = torch.randn(2, 6)
    planes = torch.randn(2, 3, 4, 6, 6)
    torch.testing.assert_close(*_swap_planes(lambda p: block(p, emb), planes))

    naive = _perturbed(nn.Conv2d(4, 4, 3, padding=1))
    swapped, reference = _swap_planes(lambda p: roll_in(naive(roll_out(p))), planes)
    assert not torch.allclose(swapped, reference)
    rolled = roll_out(planes).requires_grad_(True)
    naive(rolled)[..., 5].sum().backward()  # XY's last column
    assert rolled.grad[..., 6].abs().sum() > 0  # reaches XZ's first column: a seam leak


def test_aware_res_block_couples_the_planes() -> None:
    block = _perturbed(ResBlock(4, emb_channels=6, out_channels=4, aware=True))
    planes = torch.randn(1, 3, 4, 6, 6, requires_grad=True)
    block(planes, torch.randn(1, 6))[:, 0, :, 2, 3].sum().backward()
    assert planes.grad[:, 1].abs().sum() > 0 and planes.grad[:, 2].abs().sum() > 0
    swapped, reference = _swap_planes(lambda p: block(p, torch.zeros(1, 6)), planes.detach())
    assert not torch.allclose(swapped, reference)


def test_attention_attends_over_all_three_planes() -> None:
    block = AttentionBlock(8, num_head_channels=4)
    planes = torch.randn(2, 3, 8, 4, 4, requires_grad=True)
    torch.testing.assert_close(block(planes), planes)  # zero-initialised projection
    _perturbed(block)
    block(planes)[:, 0, :, 1, 1].sum().backward()
    assert (planes.grad[:, 1:].abs().sum(dim=2) > 0).all()  # every pixel of the other planes
    torch.testing.assert_close(*_swap_planes(block, planes.detach()))  # no positional encoding
    with pytest.raises(ValueError, match="num_head_channels dividing it, got 3"):
        AttentionBlock(8, num_head_channels=3)
