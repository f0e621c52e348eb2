"""Differentiable volume rendering of a tri-plane field, x_hat = R(c, sigma) (paper §3.1, Eq. 1; appendix B.2).

Rays are clipped to the tri-plane cube, sampled in two passes with ONE field (the hierarchical
sampling of NeRF §5.2, Mildenhall et al. 2020, without NeRF's separate coarse network):

1. stratified intervals between the cube's entry and exit, rendered without gradient to get the
   coarse weights;
2. if ``fine_samples > 0``, importance edges drawn from those (detached) weights are merged with
   the coarse ones and the union is rendered with gradients — the only pass the losses see.

Rays that miss the cube have zero-length intervals, hence opacity 0 and the background colour.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from rodin_core.rendering.compositing import RenderOutput, composite
from rodin_core.rendering.occupancy import OccupancyGrid
from rodin_core.rendering.rays import camera_rays, ray_box_intersect
from rodin_core.rendering.sampling import importance_samples, stratified_samples
from rodin_core.triplane.field import TriplaneDecoder, sample_triplane


@dataclass
class RenderSettings:
    """How rays are sampled and batched."""

    coarse_samples: int
    """Stratified intervals per ray (the first pass)."""
    fine_samples: int
    """Importance edges added per ray from the coarse weights; 0 renders the coarse intervals only."""
    bound: float = 1.0
    """Half side of the cube [-bound, bound]^3 the field lives in."""
    perturb: bool = True
    """Jitter stratified edges and importance uniforms (training); :func:`render_image` turns it off."""
    chunk: int = 8192
    """Rays per forward pass in :func:`render_image`."""
    occupancy: OccupancyGrid | None = None
    """Empty-space skipping: the field is queried only at points in occupied cells (None: everywhere)."""

    def __post_init__(self) -> None:
        if self.coarse_samples < 1:
            raise ValueError(f"RenderSettings.coarse_samples must be >= 1, got {self.coarse_samples}")
        if self.fine_samples < 0:
            raise ValueError(f"RenderSettings.fine_samples must be >= 0, got {self.fine_samples}")
        if self.bound <= 0:
            raise ValueError(f"RenderSettings.bound must be positive, got {self.bound}")
        if self.chunk < 1:
            raise ValueError(f"RenderSettings.chunk must be >= 1, got {self.chunk}")


def _render_intervals(
    planes: Tensor, decoder: TriplaneDecoder, origins: Tensor, directions: Tensor, t_edges: Tensor,
    background: Tensor | float, occupancy: OccupancyGrid | None = None,
) -> RenderOutput:
    """Query the field at the interval midpoints of R rays and composite them.

    With an occupancy grid only the points in occupied cells are queried; the others get density 0.
    """
    rays, intervals = t_edges.shape[0], t_edges.shape[1] - 1
    mids = 0.5 * (t_edges[:, 1:] + t_edges[:, :-1])  # (R, S)
    points = (origins[:, None, :] + directions[:, None, :] * mids[..., None]).reshape(rays * intervals, 3)  # (R*S, 3)
    view = decoder.direction_logits(directions)  # (R, 3): the colour term of each ray's direction, once per ray
    if occupancy is None:
        features = sample_triplane(planes, points[None])[0].reshape(rays, intervals, -1)  # (R, S, C)
        sigma, rgb = decoder.decode(features, view[:, None, :])  # (R, S), (R, S, 3)
    else:
        keep = occupancy.query(points).nonzero().squeeze(1)  # (K,) indices of points in occupied cells
        features = sample_triplane(planes, points[keep][None])[0]  # (K, C)
        kept_sigma, kept_rgb = decoder.decode(features, view[keep // intervals])  # (K,), (K, 3)
        sigma = points.new_zeros(rays * intervals).index_copy(0, keep, kept_sigma)  # (R*S,)
        rgb = points.new_zeros(rays * intervals, 3).index_copy(0, keep, kept_rgb)  # (R*S, 3)
    return composite(sigma.reshape(rays, intervals), rgb.reshape(rays, intervals, 3), t_edges, background)


def render_rays(
    planes: Tensor,
    decoder: TriplaneDecoder,
    origins: Tensor,
    directions: Tensor,
    settings: RenderSettings,
    background: Tensor | float,
    generator: torch.Generator | None = None,
) -> RenderOutput:
    """Render R rays (origins, unit directions: (R, 3)) through one tri-plane (1, 3, C, H, W).

    Gradients flow to ``planes`` and ``decoder`` through the final pass. ``generator`` drives the
    jitter and must live on the planes' device.
    """
    if planes.dim() != 5 or planes.shape[:2] != (1, 3):
        raise ValueError(f"render_rays renders one tri-plane (1, 3, C, H, W), got shape {tuple(planes.shape)}")
    origins = origins.to(planes.dtype)
    directions = directions.to(planes.dtype)
    near, far, _ = ray_box_intersect(origins, directions, settings.bound)
    t_edges = stratified_samples(near, far, settings.coarse_samples, generator, settings.perturb)  # (R, Sc+1)
    if settings.fine_samples > 0:
        with torch.no_grad():
            coarse = _render_intervals(planes, decoder, origins, directions, t_edges, background,
                                       settings.occupancy)
        t_edges = importance_samples(t_edges, coarse.weights, settings.fine_samples, generator,
                                     settings.perturb)  # (R, Sc+Sf+1)
    return _render_intervals(planes, decoder, origins, directions, t_edges, background, settings.occupancy)


@torch.no_grad()
def render_image(
    planes: Tensor,
    decoder: TriplaneDecoder,
    c2w: Tensor,
    intrinsics: Tensor,
    height: int,
    width: int,
    settings: RenderSettings,
    background: Tensor | float,
) -> tuple[Tensor, Tensor]:
    """Render one camera (c2w (4, 4), K (3, 3)) to rgb (H, W, 3) and opacity (H, W), deterministically.

    For evaluation and previews: no gradient, rays in chunks of ``settings.chunk``, no jitter.
    """
    rgb, opacity, _ = render_layers(planes, decoder, c2w, intrinsics, height, width, settings, background)
    return rgb, opacity


@torch.no_grad()
def render_layers(
    planes: Tensor,
    decoder: TriplaneDecoder,
    c2w: Tensor,
    intrinsics: Tensor,
    height: int,
    width: int,
    settings: RenderSettings,
    background: Tensor | float,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`render_image` plus the expected depth: rgb (H, W, 3), opacity (H, W), depth (H, W).

    Depth is the distance along each unit ray (:class:`RenderOutput`), near 0 where the ray sees nothing.
    """
    c2w = torch.as_tensor(c2w, dtype=torch.float32, device=planes.device)
    intrinsics = torch.as_tensor(intrinsics, dtype=torch.float32, device=planes.device)
    if c2w.shape != (4, 4) or intrinsics.shape != (3, 3):
        raise ValueError(f"render_image takes c2w (4, 4) and K (3, 3), got {tuple(c2w.shape)}, {tuple(intrinsics.shape)}")
    origins, directions = camera_rays(c2w[None], intrinsics[None], height, width)  # (1, H, W, 3) each
    origins = origins.reshape(height * width, 3)  # (H*W, 3)
    directions = directions.reshape(height * width, 3)  # (H*W, 3)
    steady = dataclasses.replace(settings, perturb=False)
    rgb, opacity, depth = [], [], []
    for start in range(0, height * width, settings.chunk):
        out = render_rays(planes, decoder, origins[start:start + settings.chunk],
                          directions[start:start + settings.chunk], steady, background)
        rgb.append(out.rgb)
        opacity.append(out.opacity)
        depth.append(out.depth)
    return (torch.cat(rgb).reshape(height, width, 3),  # (H, W, 3)
            torch.cat(opacity).reshape(height, width),  # (H, W)
            torch.cat(depth).reshape(height, width))  # (H, W)
