"""Camera rays in torch and their intersection with the tri-plane cube (paper §3.1, volume rendering R).

Same convention as :func:`rodin_core.cameras.pixel_rays` (docs/conventions.md): OpenCV
camera-to-world poses (+X right, +Y down, +Z forward) and pinhole intrinsics in pixels, pixel
(row i, column j) centred at (u, v) = (j + 0.5, i + 0.5). Rays are clipped to the cube
[-bound, bound]^3 with the slab method (Kay & Kajiya, "Ray tracing complex scenes", 1986).
"""

from __future__ import annotations

import torch
from torch import Tensor

_MIN_DIRECTION = 1e-9


def _check_cameras(c2w: Tensor, intrinsics: Tensor) -> None:
    if c2w.dim() != 3 or c2w.shape[-2:] not in ((4, 4), (3, 4)):
        raise ValueError(f"c2w must be (V, 4, 4) camera-to-world matrices, got shape {tuple(c2w.shape)}")
    if intrinsics.shape != (c2w.shape[0], 3, 3):
        raise ValueError(f"intrinsics must be ({c2w.shape[0]}, 3, 3) to match c2w, got {tuple(intrinsics.shape)}")


def _rays_from_uv(c2w: Tensor, intrinsics: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Origins and unit directions (..., 3) of image points (u, v) (...,); c2w (..., 4, 4), K (..., 3, 3)."""
    cam = torch.stack(
        [(u - intrinsics[..., 0, 2]) / intrinsics[..., 0, 0],
         (v - intrinsics[..., 1, 2]) / intrinsics[..., 1, 1],
         torch.ones_like(u)],
        dim=-1,
    )  # (..., 3) camera-frame directions
    directions = (c2w[..., :3, :3] @ cam[..., None]).squeeze(-1)  # (..., 3)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = c2w[..., :3, 3].expand_as(directions)
    return origins, directions


def camera_rays(c2w: Tensor, intrinsics: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Rays through every pixel centre of V cameras: origins and unit directions, each (V, H, W, 3) float32."""
    c2w = torch.as_tensor(c2w, dtype=torch.float32)
    intrinsics = torch.as_tensor(intrinsics, dtype=torch.float32, device=c2w.device)
    _check_cameras(c2w, intrinsics)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    rows = torch.arange(height, dtype=torch.float32, device=c2w.device) + 0.5
    cols = torch.arange(width, dtype=torch.float32, device=c2w.device) + 0.5
    v, u = torch.meshgrid(rows, cols, indexing="ij")  # (H, W) each
    views = c2w.shape[0]
    u = u.expand(views, height, width)  # (V, H, W)
    v = v.expand(views, height, width)  # (V, H, W)
    origins, directions = _rays_from_uv(c2w[:, None, None], intrinsics[:, None, None], u, v)
    return origins.contiguous(), directions  # (V, H, W, 3) each


def rays_for_pixels(c2w: Tensor, intrinsics: Tensor, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
    """Rays of R chosen pixels: camera per ray c2w (R, 4, 4), K (R, 3, 3), pixel rows/cols (R,) -> (R, 3) each."""
    c2w = torch.as_tensor(c2w, dtype=torch.float32)
    intrinsics = torch.as_tensor(intrinsics, dtype=torch.float32, device=c2w.device)
    _check_cameras(c2w, intrinsics)
    if rows.shape != (c2w.shape[0],) or cols.shape != rows.shape:
        raise ValueError(
            f"rows and cols must be ({c2w.shape[0]},) like c2w, got {tuple(rows.shape)} and {tuple(cols.shape)}"
        )
    u = cols.to(device=c2w.device, dtype=torch.float32) + 0.5
    v = rows.to(device=c2w.device, dtype=torch.float32) + 0.5
    return _rays_from_uv(c2w, intrinsics, u, v)


def ray_box_intersect(origins: Tensor, directions: Tensor, bound: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Entry and exit distances of rays (R, 3) through the cube [-bound, bound]^3: near, far (R,), hit (R,) bool.

    ``near`` is clamped at 0 (a camera inside the cube starts at its centre). Rays that miss the cube
    (or meet it only behind their origin) get ``hit = False`` and ``near = far = 0``.
    """
    if origins.dim() != 2 or origins.shape[-1] != 3 or directions.shape != origins.shape:
        raise ValueError(
            f"origins and directions must both be (R, 3), got {tuple(origins.shape)} and {tuple(directions.shape)}"
        )
    if bound <= 0:
        raise ValueError(f"bound must be positive, got {bound}")
    safe = torch.where(directions.abs() < _MIN_DIRECTION,
                       torch.full_like(directions, _MIN_DIRECTION) * torch.where(directions < 0, -1.0, 1.0),
                       directions)  # (R, 3) no zero divisors
    t0 = (-bound - origins) / safe  # (R, 3)
    t1 = (bound - origins) / safe  # (R, 3)
    near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=0.0)  # (R,)
    far = torch.maximum(t0, t1).amin(dim=-1)  # (R,)
    hit = far > near
    zero = torch.zeros_like(near)
    return torch.where(hit, near, zero), torch.where(hit, far, zero), hit
