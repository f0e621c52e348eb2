"""Rendering a tri-plane field: gradients, an empty untrained field, misses, opaque depth, render_image."""

import numpy as np
import pytest
import torch

from rodin_core import cameras
from rodin_core.rendering.rays import camera_rays
from rodin_core.rendering.renderer import RenderSettings, render_image, render_rays
from rodin_core.triplane.field import DecoderConfig, TriplaneDecoder


def _field(seed: int = 0, channels: int = 4, scale: float = 0.5):
    torch.manual_seed(seed)
    planes = torch.randn(1, 3, channels, 8, 8) * scale
    return planes, TriplaneDecoder(DecoderConfig(channels=channels, hidden=16))


def _camera(size: int = 6):
    c2w = cameras.look_at(np.array([0.0, -4.0, 0.0]))
    return torch.tensor(c2w, dtype=torch.float32), torch.tensor(
        cameras.intrinsics_from_fov(30.0, size, size), dtype=torch.float32)


def _rays(size: int = 6):
    c2w, K = _camera(size)
    origins, dirs = camera_rays(c2w[None], K[None], size, size)  # (1, size, size, 3) each
    return origins.reshape(-1, 3), dirs.reshape(-1, 3)  # (size*size, 3) each


def test_gradients_reach_planes_and_decoder():
    planes, decoder = _field()
    planes.requires_grad_()
    origins, dirs = _rays()
    settings = RenderSettings(coarse_samples=8, fine_samples=8)
    out = render_rays(planes, decoder, origins, dirs, settings, 1.0, torch.Generator().manual_seed(0))
    assert out.rgb.shape == (36, 3) and out.weights.shape == (36, 16) and out.t_edges.shape == (36, 17)
    (out.rgb.square().mean() + out.opacity.mean()).backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in decoder.parameters())
    assert decoder.colour.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("scale", [0.1, 1.0])
def test_untrained_field_is_nearly_transparent(scale):
    planes, decoder = _field(seed=3, channels=8, scale=scale)
    origins, dirs = _rays(8)
    out = render_rays(planes, decoder, origins, dirs, RenderSettings(24, 24), 1.0)
    assert out.opacity.mean().item() < 0.1


def test_missed_rays_show_the_background():
    planes, decoder = _field()
    with torch.no_grad():
        decoder.density_and_features.bias[0] = 12.0  # a dense field everywhere in the cube
    origins = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 2.0, 0.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    bg = torch.tensor([0.1, 0.6, 0.3])
    out = render_rays(planes, decoder, origins, dirs, RenderSettings(16, 16, perturb=False), bg)
    assert out.opacity[0].item() == pytest.approx(1.0, abs=1e-4)
    assert out.depth[0].item() == pytest.approx(2.0, abs=0.05)  # the cube's face at x = -1
    assert out.opacity[1].item() == 0.0
    assert torch.allclose(out.rgb[1], bg)


def test_fine_samples_concentrate_at_the_surface():
    planes, decoder = _field()
    with torch.no_grad():
        decoder.density_and_features.bias[0] = 12.0
    origin, direction = torch.tensor([[-3.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    out = render_rays(planes, decoder, origin, direction, RenderSettings(8, 16, perturb=False), 0.0)
    fine = out.t_edges[0][~torch.isin(out.t_edges[0], torch.linspace(2.0, 4.0, 9))]
    assert (fine < 2.25 + 1e-5).all()  # all inside the first coarse interval, where the weight is


def test_seeded_render_is_reproducible():
    planes, decoder = _field()
    origins, dirs = _rays()
    settings = RenderSettings(6, 6)
    a = render_rays(planes, decoder, origins, dirs, settings, 1.0, torch.Generator().manual_seed(7))
    b = render_rays(planes, decoder, origins, dirs, settings, 1.0, torch.Generator().manual_seed(7))
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.t_edges, b.t_edges)


def test_render_image_matches_render_rays_in_chunks():
    planes, decoder = _field()
    c2w, K = _camera(6)
    settings = RenderSettings(8, 4, chunk=5)
    rgb, opacity = render_image(planes, decoder, c2w, K, 6, 6, settings, 1.0)
    assert rgb.shape == (6, 6, 3) and opacity.shape == (6, 6) and not rgb.requires_grad
    origins, dirs = _rays(6)
    ref = render_rays(planes, decoder, origins, dirs, RenderSettings(8, 4, perturb=False), 1.0)
    assert torch.allclose(rgb.reshape(-1, 3), ref.rgb, atol=1e-6)
    assert torch.allclose(opacity.reshape(-1), ref.opacity, atol=1e-6)


def test_bad_settings_and_batches_raise():
    with pytest.raises(ValueError, match="coarse_samples must be >= 1, got 0"):
        RenderSettings(0, 4)
    planes, decoder = _field()
    with pytest.raises(ValueError, match=r"one tri-plane \(1, 3, C, H, W\)"):
        render_rays(planes.expand(2, -1, -1, -1, -1), decoder, *_rays(), RenderSettings(4, 0), 1.0)
