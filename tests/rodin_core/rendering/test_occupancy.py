"""Empty-space skipping with the occupancy grid (Instant-NGP §4; paper §3.1, B.2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rodin_core.rendering.occupancy import OccupancyGrid
from rodin_core.rendering.renderer import RenderSettings, render_rays

RES = 16


def coordinate_planes(size: int = 32) -> Tensor:
    """(1, 3, 3, S, S) planes whose summed feature at a point is its coordinates (x, y, z)."""
    axis = (torch.arange(size) + 0.5) / size * 2 - 1  # pixel centres
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")  # (S, S): row coordinate, column coordinate
    planes = torch.zeros(1, 3, 3, size, size)
    planes[0, 0, 0], planes[0, 0, 1] = cols, rows  # XY: x along columns, y along rows
    planes[0, 1, 2] = rows  # XZ: z along rows
    return planes


class ViewIndependentDecoder(nn.Module):
    """The decoder interface the renderer uses (TriplaneDecoder.direction_logits/decode), colour without view term."""

    def direction_logits(self, directions: Tensor) -> Tensor:
        return torch.zeros_like(directions)  # (..., 3)

    def forward(self, features: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
        return self.decode(features, self.direction_logits(directions))


class SphereDecoder(ViewIndependentDecoder):
    """Density 50 inside a ball of radius 0.5 at the origin, 0 outside; counts the points it decodes."""

    def __init__(self) -> None:
        super().__init__()
        self.points = 0

    def decode(self, features: Tensor, view: Tensor) -> tuple[Tensor, Tensor]:
        self.points += features.shape[:-1].numel()
        inside = features.norm(dim=-1) < 0.5
        rgb = torch.full((*features.shape[:-1], 3), 0.25) + 0.5 * (features[..., :1] > 0)
        return 50.0 * inside.float(), rgb


def sphere_density(points: Tensor) -> Tensor:
    return 50.0 * (points.norm(dim=-1) < 0.5).float()


def rays(n: int = 64) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    targets = (torch.rand(n, 3, generator=generator) - 0.5) * 1.2
    origins = torch.tensor([0.0, -3.0, 0.0]).expand(n, 3)
    return origins, nn.functional.normalize(targets - origins, dim=-1)


def test_grid_marks_the_sphere_and_one_dilated_cell() -> None:
    grid = OccupancyGrid(RES, dilation=0)
    fraction = grid.update(sphere_density)
    ball = 4 / 3 * math.pi * 0.5**3 / 8  # the ball's share of the cube
    assert abs(fraction - ball) < 0.03
    assert grid.query(torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9], [0.0, 0.0, 0.55], [2.0, 0.0, 0.0]])).tolist() == [
        True, False, False, False]
    dilated = OccupancyGrid(RES, dilation=1)
    dilated.update(sphere_density)
    assert dilated.occupied_fraction() > fraction
    assert dilated.query(torch.tensor([[0.0, 0.0, 0.55], [0.9, 0.9, 0.9]])).tolist() == [True, False]


def test_a_fully_occupied_grid_renders_exactly_like_no_grid() -> None:
    origins, directions = rays()
    planes = coordinate_planes()
    plain = RenderSettings(coarse_samples=24, fine_samples=8, perturb=False)
    full = RenderSettings(coarse_samples=24, fine_samples=8, perturb=False, occupancy=OccupancyGrid(RES))
    a = render_rays(planes, SphereDecoder(), origins, directions, plain, 1.0)
    b = render_rays(planes, SphereDecoder(), origins, directions, full, 1.0)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.opacity, b.opacity)


def test_skipping_decodes_fewer_points_and_renders_the_same() -> None:
    origins, directions = rays()
    planes = coordinate_planes()
    grid = OccupancyGrid(RES)
    grid.update(sphere_density)
    dense, sparse = SphereDecoder(), SphereDecoder()
    plain = RenderSettings(coarse_samples=32, fine_samples=16, perturb=False)
    skipping = RenderSettings(coarse_samples=32, fine_samples=16, perturb=False, occupancy=grid)
    a = render_rays(planes, dense, origins, directions, plain, 1.0)
    b = render_rays(planes, sparse, origins, directions, skipping, 1.0)
    assert sparse.points < 0.5 * dense.points
    assert a.opacity.max() > 0.99 and a.opacity.min() < 0.01  # rays that hit and rays that miss
    torch.testing.assert_close(b.rgb, a.rgb, atol=1e-4, rtol=0)
    torch.testing.assert_close(b.opacity, a.opacity, atol=1e-4, rtol=0)


def test_gradients_reach_the_planes_through_occupied_points_only() -> None:
    origins, directions = rays(16)
    grid = OccupancyGrid(RES)
    grid.update(sphere_density)
    layer = nn.Linear(3, 4)

    class LinearDecoder(ViewIndependentDecoder):
        def decode(self, features: Tensor, view: Tensor) -> tuple[Tensor, Tensor]:
            out = layer(features)
            return nn.functional.softplus(out[..., 0]), torch.sigmoid(out[..., 1:])

    touched = []
    for occupancy in (None, grid):
        planes = coordinate_planes().requires_grad_(True)
        settings = RenderSettings(coarse_samples=16, fine_samples=0, perturb=False, occupancy=occupancy)
        render_rays(planes, LinearDecoder(), origins, directions, settings, 1.0).rgb.sum().backward()
        touched.append(int((planes.grad.abs().sum(dim=2) > 0).sum()))  # plane pixels that receive gradient
    assert 0 < touched[1] < touched[0]


def test_faint_and_broken_fields() -> None:
    grid = OccupancyGrid(RES, dilation=0)
    faint = grid.update(lambda p: 0.005 + 0.001 * (p[:, 0] > 0).float())  # all below sigma_min: keep the denser half
    assert abs(faint - 0.5) < 1e-6
    assert grid.update(lambda p: torch.full((p.shape[0],), math.nan)) == 1.0
