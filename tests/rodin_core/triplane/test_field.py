"""Tri-plane sampling (paper Eq. 1) against hand-computed bilinear values and docs/conventions.md; the decoder."""

import math

import pytest
import torch

from rodin_core.config import preset_config
from rodin_core.triplane.field import (
    DecoderConfig,
    FourierEmbedding,
    TriplaneDecoder,
    query_field,
    sample_triplane,
    trunc_exp,
)
from rodin_core.triplane.planes import PLANE_AXES, pixel_of, project_to_planes


def _centre(k: int, n: int) -> float:
    """World coordinate of the centre of pixel k along an axis of n pixels."""
    return -1.0 + (k + 0.5) * 2.0 / n


def _bilinear(img: torch.Tensor, col: float, row: float) -> float:
    """Hand bilinear read of img (H, W) at continuous pixel-centre coordinates (col, row)."""
    c0, r0 = math.floor(col), math.floor(row)
    fc, fr = col - c0, row - r0
    return float((1 - fc) * (1 - fr) * img[r0, c0] + fc * (1 - fr) * img[r0, c0 + 1]
                 + (1 - fc) * fr * img[r0 + 1, c0] + fc * fr * img[r0 + 1, c0 + 1])


def test_feature_is_sum_of_three_bilinear_samples():
    torch.manual_seed(0)
    n = 4
    planes = torch.randn(1, 3, 1, n, n)
    point = torch.tensor([-0.6, 0.1, 0.4])
    # continuous pixel index of a coordinate: (coord + 1) * n / 2 - 0.5
    idx = [(float(c) + 1.0) * n / 2 - 0.5 for c in point]  # x -> 0.3, y -> 1.7, z -> 2.3
    expected = sum(_bilinear(planes[0, p, 0], idx[a], idx[b]) for p, (a, b) in enumerate(PLANE_AXES))
    got = sample_triplane(planes, point.view(1, 1, 3))
    assert got.shape == (1, 1, 1)
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_points_at_pixel_centres_read_the_pixel():
    torch.manual_seed(1)
    n = 6
    planes = torch.zeros(1, 3, 2, n, n)
    planes[0, 1] = torch.randn(2, n, n)  # only plane XZ carries features
    cols, rows = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="xy")  # (n, n) each
    x = -1.0 + (cols.flatten() + 0.5) * 2.0 / n
    z = -1.0 + (rows.flatten() + 0.5) * 2.0 / n
    points = torch.stack([x, torch.full_like(x, 0.37), z], dim=-1)[None]  # (1, n*n, 3)
    got = sample_triplane(planes, points)  # (1, n*n, 2)
    expected = planes[0, 1].reshape(2, n * n).T  # (n*n, 2) pixel (row, col) in row-major order
    assert torch.allclose(got[0], expected, atol=1e-6)


@pytest.mark.parametrize("plane", [0, 1, 2])
def test_axis_convention_matches_project_to_planes(plane):
    n = 8
    point = torch.tensor([_centre(1, n), _centre(5, n), _centre(6, n)])
    col_coord, row_coord = project_to_planes(point)[plane].tolist()
    planes = torch.zeros(1, 3, 3, n, n)
    planes[0, plane, plane, pixel_of(row_coord, n), pixel_of(col_coord, n)] = 1.0
    free_axis = ({0, 1, 2} - set(PLANE_AXES[plane])).pop()
    moved = point.repeat(5, 1)  # (5, 3) the same point at other coordinates along the free axis
    moved[:, free_axis] = torch.linspace(-0.9, 0.9, 5)
    got = sample_triplane(planes, moved[None])[0]  # (5, 3)
    expected = torch.zeros(5, 3)
    expected[:, plane] = 1.0
    assert torch.allclose(got, expected, atol=1e-6)


def test_batched_sampling_reads_each_subjects_planes():
    torch.manual_seed(2)
    planes = torch.randn(2, 3, 4, 5, 5)
    points = torch.rand(2, 7, 3) * 2 - 1
    both = sample_triplane(planes, points)
    assert torch.allclose(both[1:], sample_triplane(planes[1:], points[1:]), atol=1e-6)


def test_sample_triplane_rejects_bad_shapes():
    with pytest.raises(ValueError, match="points must be"):
        sample_triplane(torch.zeros(1, 3, 2, 4, 4), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"\(B, 3, C, H, W\)"):
        sample_triplane(torch.zeros(3, 2, 4, 4), torch.zeros(1, 5, 3))


def test_fourier_embedding_values():
    emb = FourierEmbedding(in_dim=2, frequencies=2)
    assert emb.out_dim == 10
    x = torch.tensor([[0.25, -0.5]])
    out = emb(x)[0]
    expected = [0.25, -0.5,
                math.sin(math.pi * 0.25), math.sin(-math.pi * 0.5), math.sin(2 * math.pi * 0.25), math.sin(-math.pi),
                math.cos(math.pi * 0.25), math.cos(-math.pi * 0.5), math.cos(2 * math.pi * 0.25), math.cos(-math.pi)]
    assert torch.allclose(out, torch.tensor(expected), atol=1e-6)
    assert FourierEmbedding(3, 0)(x.new_ones(4, 3)).shape == (4, 3)


def test_decoder_config_round_trip_and_preset():
    cfg = preset_config("tiny").triplane.decoder
    assert (cfg.channels, cfg.hidden, cfg.layers) == (8, 64, 4)
    assert DecoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown DecoderConfig keys"):
        DecoderConfig.from_dict({**cfg.to_dict(), "width": 3})
    with pytest.raises(ValueError, match="layers must be an int >= 2, got 1"):
        DecoderConfig(channels=4, hidden=8, layers=1)


@pytest.mark.parametrize("layers", [2, 4, 5])
def test_decoder_ranges_and_layer_count(layers):
    torch.manual_seed(3)
    decoder = TriplaneDecoder(DecoderConfig(channels=4, hidden=16, layers=layers))
    assert sum(isinstance(m, torch.nn.Linear) for m in decoder.modules()) == layers
    features = torch.randn(2, 9, 4) * 5
    directions = torch.nn.functional.normalize(torch.randn(2, 9, 3), dim=-1)
    sigma, rgb = decoder(features, directions)
    assert sigma.shape == (2, 9) and rgb.shape == (2, 9, 3)
    assert (sigma >= 0).all() and (rgb >= 0).all() and (rgb <= 1).all()


def test_decoder_state_dict_reload_gives_same_outputs():
    torch.manual_seed(4)
    cfg = DecoderConfig(channels=4, hidden=8)
    a = TriplaneDecoder(cfg)
    b = TriplaneDecoder(DecoderConfig.from_dict(cfg.to_dict()))
    b.load_state_dict(a.state_dict(), strict=True)
    f, d = torch.randn(5, 4), torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    for x, y in zip(a(f, d), b(f, d)):
        assert torch.equal(x, y)


def test_trunc_exp_is_finite_with_gradient():
    x = torch.tensor([-3.0, 0.0, 100.0], requires_grad=True)
    y = trunc_exp(x)
    assert torch.isfinite(y).all() and y[1].item() == pytest.approx(1.0)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0].item() == pytest.approx(math.exp(-3.0), rel=1e-5)


def test_query_field_shapes_and_gradients():
    torch.manual_seed(5)
    planes = torch.randn(1, 3, 4, 8, 8, requires_grad=True)
    decoder = TriplaneDecoder(DecoderConfig(channels=4, hidden=8))
    points = torch.rand(1, 10, 3) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(1, 10, 3), dim=-1)
    sigma, rgb = query_field(planes, decoder, points, dirs)
    assert sigma.shape == (1, 10) and rgb.shape == (1, 10, 3)
    (sigma.sum() + rgb.sum()).backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0


def test_per_ray_direction_term_equals_the_colour_layer_on_the_concatenated_input():
    torch.manual_seed(3)
    decoder = TriplaneDecoder(DecoderConfig(channels=4, hidden=16, layers=4, direction_frequencies=2))
    features = torch.randn(5, 7, 4)  # (R, S, C)
    directions = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)  # (R, 3): one per ray
    per_point = directions[:, None, :].expand(5, 7, 3)
    h = decoder.feature_embedding(features)
    for layer in decoder.trunk:
        h = torch.relu(layer(h))
    out = decoder.density_and_features(h)
    by_hand = torch.sigmoid(decoder.colour(torch.cat([torch.relu(out[..., 1:]),
                                                      decoder.direction_embedding(per_point)], dim=-1)))
    sigma, rgb = decoder.decode(features, decoder.direction_logits(directions)[:, None, :])  # broadcast per ray
    assert torch.allclose(rgb, by_hand, atol=1e-6) and torch.allclose(sigma, torch.exp(out[..., 0]), rtol=1e-6)
    full_sigma, full_rgb = decoder(features, per_point)
    assert torch.equal(full_sigma, sigma) and torch.allclose(full_rgb, rgb, atol=1e-7)
    turned = decoder.decode(features, decoder.direction_logits(-directions)[:, None, :])[1]
    assert not torch.allclose(turned, rgb, atol=1e-4)  # the colour depends on the view direction
