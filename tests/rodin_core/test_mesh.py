"""Marching-cubes meshes of a tri-plane density field (paper §4.2 Fig. 5): an analytic sphere subject."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh
from torch import Tensor, nn

from rodin_core.mesh import density_grid, encode_mesh, export_mesh, extract_mesh
from rodin_core.triplane.field import DecoderConfig, TriplaneDecoder

CENTRE = (0.2, -0.1, 0.15)
RADIUS = 0.5
THRESHOLD = 10.0
RES = 32
VOXEL = 2.0 / RES


def _coordinate_planes(size: int = 16) -> Tensor:
    """(3, 3, H, W) whose summed feature at (x, y, z) is exactly (x, y, z) inside the pixel-centre range.

    Plane XY carries x (its columns) in channel 0 and y (its rows) in channel 1; plane XZ carries z
    (its rows) in channel 2; bilinear sampling reproduces these linear ramps exactly.
    """
    ramp = -1.0 + (torch.arange(size) + 0.5) * 2.0 / size  # (W,) pixel-centre coordinates
    planes = torch.zeros(3, 3, size, size)  # (3, C, H, W)
    planes[0, 0] = ramp[None, :]  # XY, columns follow X
    planes[0, 1] = ramp[:, None]  # XY, rows follow Y
    planes[1, 2] = ramp[:, None]  # XZ, rows follow Z
    return planes


def _sphere_sigma(points: Tensor) -> Tensor:
    """sigma = 2 * THRESHOLD * 2^(-(r / RADIUS)^2), r = |p - CENTRE|: exactly THRESHOLD on the sphere."""
    r2 = ((points - torch.tensor(CENTRE)) ** 2).sum(-1)
    return 2.0 * THRESHOLD * torch.exp2(-r2 / RADIUS**2)


class SphereDecoder(nn.Module):
    """Decoder with TriplaneDecoder's forward: features (x, y, z) -> analytic sphere density and colour.

    Colour: red = (x + 1) / 2, green = 0.5, blue = (1 - d . n) / 2 with n the outward radial unit
    vector, so blue is 255 exactly when the point is looked at along its inward normal.
    ``hollow`` swaps inside and outside (sigma -> 2 * THRESHOLD - sigma).
    """

    def __init__(self, hollow: bool = False) -> None:
        super().__init__()
        self.hollow = hollow
        self.calls: list[int] = []

    def forward(self, features: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
        self.calls.append(features.shape[:-1].numel())
        sigma = _sphere_sigma(features)
        if self.hollow:
            sigma = 2.0 * THRESHOLD - sigma
        radial = torch.nn.functional.normalize(features - torch.tensor(CENTRE), dim=-1)
        blue = (1.0 - (directions * radial).sum(-1)) / 2.0
        rgb = torch.stack([(features[..., 0] + 1.0) / 2.0, torch.full_like(blue, 0.5), blue], dim=-1)
        return sigma, rgb


@pytest.fixture(scope="module")
def sphere_mesh() -> trimesh.Trimesh:
    return extract_mesh(_coordinate_planes(), SphereDecoder(), resolution=RES, threshold=THRESHOLD)


def test_density_grid_is_sigma_at_cell_centres_in_xyz_order() -> None:
    grid = density_grid(_coordinate_planes(), SphereDecoder(), resolution=8)
    centres = -1.0 + (torch.arange(8) + 0.5) * 2.0 / 8
    points = torch.stack(torch.meshgrid(centres, centres, centres, indexing="ij"), dim=-1)  # (8, 8, 8, 3)
    assert grid.shape == (8, 8, 8) and grid.dtype == np.float32
    np.testing.assert_allclose(grid, _sphere_sigma(points).numpy(), rtol=1e-5, atol=1e-5)


def test_density_grid_chunks_bound_the_batch_and_match_one_chunk() -> None:
    torch.manual_seed(0)
    decoder = TriplaneDecoder(DecoderConfig(channels=4, hidden=16, layers=3, feature_frequencies=2,
                                            direction_frequencies=1))
    planes = torch.randn(1, 3, 4, 8, 8)
    whole = density_grid(planes, decoder, resolution=10, chunk=10**6)
    counting = SphereDecoder()
    chunked = density_grid(planes[:, :, :3], counting, resolution=10, chunk=97)
    assert max(counting.calls) <= 97 and sum(counting.calls) == 1000
    np.testing.assert_allclose(density_grid(planes, decoder, resolution=10, chunk=97), whole, rtol=1e-6, atol=1e-7)
    assert chunked.shape == (10, 10, 10)


def test_sphere_mesh_has_the_analytic_radius_and_centre(sphere_mesh: trimesh.Trimesh) -> None:
    offsets = sphere_mesh.vertices - np.array(CENTRE)  # (V, 3)
    radii = np.linalg.norm(offsets, axis=-1)
    assert abs(radii.mean() - RADIUS) < VOXEL
    assert radii.max() - radii.min() < VOXEL
    np.testing.assert_allclose(sphere_mesh.vertices.mean(axis=0), CENTRE, atol=VOXEL / 2)


def test_sphere_mesh_is_watertight_with_outward_normals(sphere_mesh: trimesh.Trimesh) -> None:
    assert sphere_mesh.is_watertight
    radial = sphere_mesh.triangles_center - np.array(CENTRE)  # (F, 3)
    radial /= np.linalg.norm(radial, axis=-1, keepdims=True)
    dots = (sphere_mesh.face_normals * radial).sum(-1)
    assert dots.mean() > 0.9 and (dots > 0).all()
    assert sphere_mesh.volume == pytest.approx(4.0 / 3.0 * math.pi * RADIUS**3, rel=0.05)


def test_vertex_colours_are_seen_from_outside(sphere_mesh: trimesh.Trimesh) -> None:
    colours = np.asarray(sphere_mesh.visual.vertex_colors)  # (V, 4)
    assert colours.shape == (len(sphere_mesh.vertices), 4) and colours.dtype == np.uint8
    assert colours[:, 2].min() >= 250  # blue = 255 only when looking along the inward normal
    expected_red = np.rint((sphere_mesh.vertices[:, 0] + 1.0) / 2.0 * 255.0)
    assert np.abs(colours[:, 0] - expected_red).max() <= 1


def test_hollow_density_normals_point_away_from_the_dense_shell() -> None:
    mesh = extract_mesh(_coordinate_planes(), SphereDecoder(hollow=True), resolution=RES, threshold=THRESHOLD)
    radial = mesh.triangles_center - np.array(CENTRE)  # (F, 3)
    distance = np.linalg.norm(radial, axis=-1)
    inner = distance < RADIUS + 2 * VOXEL  # the spherical cavity; the rest caps the cube's faces
    assert inner.any() and (~inner).any()
    dots = (mesh.face_normals[inner] * radial[inner] / distance[inner, None]).sum(-1)
    assert (dots < 0).all()  # into the empty cavity
    assert np.abs(mesh.vertices).max() <= 1.0


@pytest.mark.parametrize("suffix", [".ply", ".glb"])
def test_export_round_trip(sphere_mesh: trimesh.Trimesh, tmp_path, suffix: str) -> None:
    path = export_mesh(sphere_mesh, tmp_path / "out" / f"avatar{suffix}")
    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.vertices) == len(sphere_mesh.vertices)
    assert len(loaded.faces) == len(sphere_mesh.faces)
    np.testing.assert_array_equal(np.asarray(loaded.visual.vertex_colors)[:, :3],
                                  np.asarray(sphere_mesh.visual.vertex_colors)[:, :3])
    assert path.read_bytes() == encode_mesh(sphere_mesh, suffix[1:])


def test_errors_say_what_to_do(sphere_mesh: trimesh.Trimesh, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"max sigma = 19\.6.*lower threshold"):
        extract_mesh(_coordinate_planes(), SphereDecoder(), resolution=8, threshold=1000.0)
    with pytest.raises(ValueError, match=r"\.obj"):
        export_mesh(sphere_mesh, tmp_path / "avatar.obj")
    with pytest.raises(ValueError, match="one tri-plane"):
        density_grid(torch.zeros(2, 3, 3, 4, 4), SphereDecoder(), resolution=4)
    with pytest.raises(ValueError, match="resolution"):
        density_grid(_coordinate_planes(), SphereDecoder(), resolution=0)
    with pytest.raises(ValueError, match="threshold"):
        extract_mesh(_coordinate_planes(), SphereDecoder(), resolution=8, threshold=0.0)
