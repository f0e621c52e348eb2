"""Sparsity, smoothness and the Mip-NeRF 360 distortion loss (Eq. 15)."""

import pytest
import torch

from rodin_core.rendering.regularisers import density_l1, distortion_loss, plane_tv


def _distortion_double_sum(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq. 15 by its definition, O(S^2), in per-ray normalised s-space."""
    s = (t - t[:, :1]) / (t[:, -1:] - t[:, :1])
    m = 0.5 * (s[:, 1:] + s[:, :-1])
    pair = (w[:, :, None] * w[:, None, :] * (m[:, :, None] - m[:, None, :]).abs()).sum((1, 2))
    return pair + (w.square() * (s[:, 1:] - s[:, :-1])).sum(-1) / 3


def test_distortion_hand_case():
    # s = [0, 1/3, 1]: mids 1/6, 2/3; widths 1/3, 2/3
    # 2 * 0.5 * 0.25 * (2/3 - 1/6) + (0.25 / 3 + 0.0625 * 2 / 3) / 3 = 0.125 + 0.125 / 3
    loss = distortion_loss(torch.tensor([[0.5, 0.25]]), torch.tensor([[2.0, 3.0, 5.0]]))
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(0.125 + 0.125 / 3, rel=1e-6)


def test_distortion_matches_double_sum_on_random_rays():
    torch.manual_seed(0)
    w = torch.rand(6, 9) / 9
    t = torch.sort(torch.rand(6, 10) * 3, dim=-1).values
    assert torch.allclose(distortion_loss(w, t), _distortion_double_sum(w, t), atol=1e-6)


def test_distortion_prefers_compact_weights_and_handles_empty_rays():
    t = torch.linspace(0, 1, 5).expand(2, 5)
    spread = distortion_loss(torch.full((1, 4), 0.25), t[:1])
    peaked = distortion_loss(torch.tensor([[0.0, 1.0, 0.0, 0.0]]), t[:1])
    assert peaked < spread
    zero_length = torch.zeros(1, 5)
    assert distortion_loss(torch.zeros(1, 4), zero_length).item() == 0.0


def test_density_l1_and_plane_tv():
    assert density_l1(torch.tensor([[1.0, -3.0], [0.0, 2.0]])).item() == pytest.approx(1.5)
    assert plane_tv(torch.full((1, 3, 2, 4, 4), 0.3)).item() == 0.0
    ramp = torch.arange(4.0).expand(1, 3, 2, 4, 4)  # (1, 3, 2, 4, 4) steps of 1 along columns
    assert plane_tv(ramp).item() == pytest.approx(1.0)
    assert plane_tv(ramp.transpose(-1, -2)).item() == pytest.approx(1.0)
