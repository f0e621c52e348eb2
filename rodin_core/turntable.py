"""Turntables and reverse-process strips: the pictures people look at (paper §4.2 Figs. 5-6, appendix C.2 Fig. 15).

A turntable is ``n_views`` renders of one tri-plane from cameras on a circle around the vertical
(+Z) axis, through the same deterministic volume renderer as fitting
(:func:`rodin_core.rendering.renderer.render_image`). Frame 0 is the frontal view of the rig
(:func:`rodin_core.cameras.make_rig`, view 0: camera on -Y looking at the origin) raised to the
turntable's elevation; the camera then advances by 360° / n_views per frame in the same azimuth
sense as the rig's lattice (from -Y towards +X, the avatar's left).

Frames are saved as PNGs and as a looping GIF. :func:`x0_strip` lays the renders of the predicted
clean tri-plane x̂0 at successive reverse steps side by side, as in Fig. 15.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from rodin_core.cameras import intrinsics_from_fov, look_at
from rodin_core.imaging import contact_sheet, encode_png, to_uint8
from rodin_core.rendering.renderer import RenderSettings, render_image
from rodin_core.triplane.field import TriplaneDecoder


def orbit_cameras(
    n_views: int,
    elevation_deg: float = 10.0,
    radius: float = 4.0,
    fov_deg: float = 30.0,
    resolution: int = 128,
) -> tuple[np.ndarray, np.ndarray]:
    """Cameras on a circle around +Z looking at the origin: c2w (N, 4, 4) and K (N, 3, 3), float64.

    Camera k sits at azimuth 2 pi k / N and ``elevation_deg`` above the horizontal plane, at
    ``radius`` from the origin: eye = radius * (cos e sin a, -cos e cos a, sin e), the
    parametrisation of :func:`rodin_core.cameras.view_directions`, so with ``elevation_deg=0``
    camera 0 is exactly the rig's frontal view 0. Intrinsics are square ``resolution`` pixels
    with horizontal field of view ``fov_deg``.
    """
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views must be a positive integer, got {n_views!r}")
    if not -89.0 <= elevation_deg <= 89.0:
        raise ValueError(f"elevation_deg must lie in [-89, 89] (the up axis is the orbit's axis), got {elevation_deg}")
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    elevation = math.radians(elevation_deg)
    azimuth = 2.0 * math.pi * np.arange(n_views) / n_views  # (N,)
    ring = math.cos(elevation)
    eyes = radius * np.stack([ring * np.sin(azimuth), -ring * np.cos(azimuth),
                              np.full(n_views, math.sin(elevation))], axis=-1)  # (N, 3)
    c2w = np.stack([look_at(eye) for eye in eyes])  # (N, 4, 4)
    intrinsics = np.broadcast_to(intrinsics_from_fov(fov_deg, resolution, resolution), (n_views, 3, 3)).copy()
    return c2w, intrinsics


def render_views(
    planes: Tensor,
    decoder: TriplaneDecoder,
    c2w: np.ndarray,
    intrinsics: np.ndarray,
    resolution: int,
    settings: RenderSettings,
    background: float = 1.0,
    progress: bool = False,
) -> np.ndarray:
    """Render one tri-plane ((3, C, H, W) or (1, 3, C, H, W)) from N cameras -> uint8 (N, R, R, 3).

    ``c2w`` (N, 4, 4) OpenCV camera-to-world, ``intrinsics`` (N, 3, 3) in pixels of the square
    ``resolution`` image; rendered with :func:`render_image` over ``background``.
    """
    batch = planes.unsqueeze(0) if planes.dim() == 4 else planes
    if batch.dim() != 5 or batch.shape[:2] != (1, 3):
        raise ValueError(f"render_views renders one tri-plane, (3, C, H, W) or (1, 3, C, H, W), "
                         f"got shape {tuple(planes.shape)}")
    c2w, intrinsics = np.asarray(c2w), np.asarray(intrinsics)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or intrinsics.shape != (c2w.shape[0], 3, 3):
        raise ValueError(f"need c2w (N, 4, 4) and intrinsics (N, 3, 3) with the same N, "
                         f"got {c2w.shape} and {intrinsics.shape}")
    batch = batch.float()
    frames = np.empty((c2w.shape[0], resolution, resolution, 3), dtype=np.uint8)  # (N, R, R, 3)
    for view in tqdm(range(c2w.shape[0]), desc="rendering views", disable=not progress, leave=False):
        rgb, _ = render_image(batch, decoder, torch.as_tensor(c2w[view]), torch.as_tensor(intrinsics[view]),
                              resolution, resolution, settings, background)  # (R, R, 3)
        frames[view] = to_uint8(rgb.float().cpu())
    return frames


def render_turntable(
    planes: Tensor,
    decoder: TriplaneDecoder,
    n_views: int,
    resolution: int,
    settings: RenderSettings,
    background: float = 1.0,
    progress: bool = False,
    elevation_deg: float = 10.0,
    radius: float = 4.0,
    fov_deg: float = 30.0,
) -> np.ndarray:
    """``n_views`` frames around one tri-plane (3, C, H, W) from :func:`orbit_cameras` -> uint8 (N, R, R, 3)."""
    c2w, intrinsics = orbit_cameras(n_views, elevation_deg, radius, fov_deg, resolution)
    return render_views(planes, decoder, c2w, intrinsics, resolution, settings, background, progress)


def _check_frames(frames: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """A non-empty sequence of same-sized uint8 RGB images (H, W, 3)."""
    if len(frames) == 0:
        raise ValueError("need at least one frame, got none")
    checked = [np.asarray(frame) for frame in frames]
    for i, frame in enumerate(checked):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame {i} must be a uint8 (H, W, 3) array, got {frame.dtype} {frame.shape}; "
                             "convert float renders with rodin_core.imaging.to_uint8")
        if frame.shape != checked[0].shape:
            raise ValueError(f"frame {i} has shape {frame.shape}, frame 0 has {checked[0].shape}; "
                             "all frames must have the same size")
    return checked


def save_gif(frames: Sequence[np.ndarray] | np.ndarray, path: Path | str, fps: float = 12) -> Path:
    """Write uint8 frames (N, H, W, 3) as an animated GIF that loops forever; returns ``path``.

    Each frame gets its own adaptive 256-colour palette (PIL). GIF stores delays in 10 ms units,
    so the delay is ``1000 / fps`` ms rounded to that; PIL merges consecutive identical frames into
    one frame shown for their summed delay, which keeps the playback timing.
    """
    checked = _check_frames(frames)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"save_gif writes a .gif file, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.ascontiguousarray(frame), mode="RGB") for frame in checked]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(10, round(1000.0 / fps / 10.0) * 10))
    return path


def save_frames(frames: Sequence[np.ndarray] | np.ndarray, directory: Path | str) -> list[Path]:
    """Write frame k of uint8 (N, H, W, 3) to ``directory``/frame_kkkk.png; returns the paths in order."""
    checked = _check_frames(frames)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, frame in enumerate(checked):
        path = directory / f"frame_{index:04d}.png"
        path.write_bytes(encode_png(frame))
        paths.append(path)
    return paths


def x0_strip(frames: Sequence[np.ndarray] | np.ndarray, labels: Sequence[str] | None = None) -> np.ndarray:
    """Renders of x̂0 along the reverse process, left (t = T) to right (t = 0), as one image (Fig. 15).

    ``frames`` are uint8 (H, W, 3), one per recorded step; ``labels`` (e.g. ``"t=999"``) go under
    the tiles. Returns uint8 (H [+ label strip], N * W, 3).
    """
    checked = _check_frames(frames)
    return contact_sheet(checked, columns=len(checked), labels=labels)
