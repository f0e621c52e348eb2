"""Volume compositing (NeRF Eq. 3): opaque and empty fields, weights, background, depth."""

import math

import pytest
import torch

from rodin_core.rendering.compositing import composite


def _edges(rays: int, samples: int, near: float = 1.0, far: float = 3.0) -> torch.Tensor:
    return torch.linspace(near, far, samples + 1).expand(rays, samples + 1)


def test_opaque_constant_field_gives_its_colour():
    colour = torch.tensor([0.2, 0.5, 0.9])
    out = composite(torch.full((4, 6), 1e6), colour.expand(4, 6, 3), _edges(4, 6), background=1.0)
    assert torch.allclose(out.opacity, torch.ones(4))
    assert torch.allclose(out.rgb, colour.expand(4, 3))
    assert torch.allclose(out.depth, torch.full((4,), 1.0 + 1.0 / 6), atol=1e-5)  # first interval's midpoint


def test_empty_field_gives_the_background():
    bg = torch.tensor([0.1, 0.2, 0.3])
    out = composite(torch.zeros(3, 5), torch.rand(3, 5, 3), _edges(3, 5), background=bg)
    assert torch.equal(out.opacity, torch.zeros(3))
    assert torch.allclose(out.rgb, bg.expand(3, 3))
    per_ray = torch.rand(3, 3)
    assert torch.allclose(composite(torch.zeros(3, 5), torch.rand(3, 5, 3), _edges(3, 5), per_ray).rgb, per_ray)


def test_two_interval_hand_case():
    sigma = torch.tensor([[1.0, 2.0]])
    rgb = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    out = composite(sigma, rgb, torch.tensor([[0.0, 0.5, 1.0]]), background=0.0)
    w0 = 1 - math.exp(-0.5)
    w1 = math.exp(-0.5) * (1 - math.exp(-1.0))
    assert out.weights[0].tolist() == pytest.approx([w0, w1], rel=1e-6)
    assert out.rgb[0].tolist() == pytest.approx([w0, w1, 0.0], rel=1e-6)
    assert out.depth.item() == pytest.approx((0.25 * w0 + 0.75 * w1) / (w0 + w1), rel=1e-6)


def test_weights_sum_to_opacity_and_match_cumprod():
    torch.manual_seed(0)
    sigma = torch.rand(8, 12) * 3
    t = torch.sort(torch.rand(8, 13) * 4, dim=-1).values
    out = composite(sigma, torch.rand(8, 12, 3), t, background=0.5)
    assert torch.allclose(out.weights.sum(-1), out.opacity)
    assert ((out.opacity >= 0) & (out.opacity <= 1)).all()
    alpha = 1 - torch.exp(-sigma * (t[:, 1:] - t[:, :-1]))
    trans = torch.cumprod(torch.cat([torch.ones(8, 1), 1 - alpha[:, :-1]], dim=-1), dim=-1)
    assert torch.allclose(out.weights, trans * alpha, atol=1e-6)


def test_bad_background_raises():
    with pytest.raises(ValueError, match=r"background must be a float, \(3,\) or \(2, 3\), got shape \(4,\)"):
        composite(torch.zeros(2, 3), torch.zeros(2, 3, 3), _edges(2, 3), torch.zeros(4))
