"""Volume rendering of tri-plane radiance fields (paper §3.1, appendix B.2): rays, samples, compositing, losses."""

from rodin_core.rendering.compositing import RenderOutput, composite
from rodin_core.rendering.rays import camera_rays, ray_box_intersect, rays_for_pixels
from rodin_core.rendering.regularisers import density_l1, distortion_loss, plane_tv
from rodin_core.rendering.renderer import (
    RenderSettings,
    render_image,
    render_layers,
    render_rays,
)
from rodin_core.rendering.sampling import importance_samples, stratified_samples

__all__ = [
    "RenderOutput",
    "RenderSettings",
    "camera_rays",
    "composite",
    "density_l1",
    "distortion_loss",
    "importance_samples",
    "plane_tv",
    "ray_box_intersect",
    "rays_for_pixels",
    "render_image",
    "render_layers",
    "render_rays",
    "stratified_samples",
]
