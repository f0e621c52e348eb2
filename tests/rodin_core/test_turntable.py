"""Turntable cameras, renders, GIF/PNG output and the x̂0 strip (paper Figs. 5-6, Fig. 15)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from rodin_core.cameras import make_rig, project_points
from rodin_core.imaging import LABEL_HEIGHT, decode_png
from rodin_core.rendering.renderer import RenderSettings
from rodin_core.triplane.field import DecoderConfig, TriplaneDecoder
from rodin_core.turntable import (
    orbit_cameras,
    render_turntable,
    save_frames,
    save_gif,
    x0_strip,
)

RES = 16


def _frames(n: int, size: int = 10) -> np.ndarray:
    """n visibly different uint8 frames (n, size, size, 3)."""
    frames = np.zeros((n, size, size, 3), dtype=np.uint8)
    for k in range(n):
        frames[k, :, : (k + 1) * size // n] = (200, 40 + 30 * k, 90)
    return frames


def test_frame_zero_is_the_rigs_frontal_view() -> None:
    c2w, ks = orbit_cameras(6, elevation_deg=0.0, radius=4.0, fov_deg=30.0, resolution=RES)
    rig = make_rig(5, RES, 30.0, 4.0, -25.0, 50.0)
    np.testing.assert_allclose(c2w[0], rig.c2w[0], atol=1e-12)
    np.testing.assert_allclose(ks[0], rig.intrinsics)


def test_default_frame_zero_is_frontal_and_upright() -> None:
    c2w, ks = orbit_cameras(8, resolution=RES)
    eye = c2w[0, :3, 3]
    assert eye[0] == pytest.approx(0.0, abs=1e-12) and eye[1] < 0.0 and eye[2] > 0.0  # on -Y, raised 10°
    uv, depth = project_points(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]]), c2w[0], ks[0])
    np.testing.assert_allclose(uv[0], (RES / 2, RES / 2), atol=1e-9)
    assert depth[1] > 0 and uv[1, 1] < RES / 2 and uv[1, 0] == pytest.approx(RES / 2)  # +Z is up in the image


def test_cameras_on_the_orbit_look_at_the_origin_with_equal_steps() -> None:
    n = 7
    c2w, ks = orbit_cameras(n, elevation_deg=20.0, radius=3.0, resolution=RES)
    assert c2w.shape == (n, 4, 4) and ks.shape == (n, 3, 3)
    eyes = c2w[:, :3, 3]  # (N, 3)
    np.testing.assert_allclose(np.linalg.norm(eyes, axis=-1), 3.0)
    np.testing.assert_allclose(eyes[:, 2], 3.0 * math.sin(math.radians(20.0)))
    for view in range(n):
        uv, depth = project_points(np.zeros((1, 3)), c2w[view], ks[view])
        np.testing.assert_allclose(uv[0], (RES / 2, RES / 2), atol=1e-9)
        assert depth[0] == pytest.approx(3.0)
    azimuth = np.unwrap(np.arctan2(eyes[:, 0], -eyes[:, 1]))  # 0 at -Y, increasing towards +X
    np.testing.assert_allclose(np.diff(azimuth), 2.0 * math.pi / n)


def test_turntable_of_a_random_triplane() -> None:
    torch.manual_seed(0)
    decoder = TriplaneDecoder(DecoderConfig(channels=4, hidden=16, layers=3, feature_frequencies=2,
                                            direction_frequencies=1))
    with torch.no_grad():
        decoder.density_and_features.bias[0] = 1.0  # a visible field
    planes = torch.randn(3, 4, 8, 8)
    frames = render_turntable(planes, decoder, 3, 12, RenderSettings(coarse_samples=8, fine_samples=0))
    assert frames.shape == (3, 12, 12, 3) and frames.dtype == np.uint8
    assert not np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[1], frames[2])
    assert (frames != 255).any()  # not just the white background


def test_gif_round_trip(tmp_path) -> None:
    frames = _frames(5)
    path = save_gif(frames, tmp_path / "gifs" / "turntable.gif", fps=10)
    with Image.open(path) as gif:
        assert gif.n_frames == 5 and gif.size == (10, 10)
        assert gif.info["loop"] == 0 and gif.info["duration"] == 100
        gif.seek(4)
        np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), frames[4])


def test_save_frames_writes_one_png_per_frame(tmp_path) -> None:
    frames = _frames(3)
    paths = save_frames(frames, tmp_path / "frames")
    assert [p.name for p in paths] == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    for path, frame in zip(paths, frames, strict=True):
        np.testing.assert_array_equal(decode_png(path.read_bytes()), frame)


def test_x0_strip_is_one_row() -> None:
    frames = _frames(4)
    strip = x0_strip(frames)
    assert strip.shape == (10, 40, 3) and strip.dtype == np.uint8
    np.testing.assert_array_equal(strip[:, 30:40], frames[3])
    labelled = x0_strip(list(frames), labels=["t=999", "t=666", "t=333", "t=0"])
    assert labelled.shape == (10 + LABEL_HEIGHT, 40, 3)


def test_errors_say_what_was_wrong(tmp_path) -> None:
    with pytest.raises(ValueError, match="n_views"):
        orbit_cameras(0)
    with pytest.raises(ValueError, match="at least one frame"):
        save_gif([], tmp_path / "a.gif")
    with pytest.raises(ValueError, match="uint8"):
        save_frames(np.zeros((2, 4, 4, 3), dtype=np.float32), tmp_path)
    with pytest.raises(ValueError, match="same size"):
        x0_strip([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])
    with pytest.raises(ValueError, match=r"\.gif"):
        save_gif(_frames(2), tmp_path / "a.png")
