"""Contact sheets, compositing and PNG coding (rodin_core.imaging)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from rodin_core.imaging import (
    LABEL_HEIGHT,
    composite_over,
    contact_sheet,
    decode_png,
    encode_png,
    image_to_rgb,
    thumbnail,
)


def _rgba(h: int, w: int, rgb: tuple[int, int, int], alpha: int) -> np.ndarray:
    image = np.empty((h, w, 4), np.uint8)
    image[...] = (*rgb, alpha)
    return image


def test_composite_over_blends_with_alpha() -> None:
    image = np.stack([_rgba(1, 1, (200, 0, 100), a)[0, 0] for a in (0, 255, 128)])[None]  # (1, 3, 4)
    out = composite_over(image, background=(0, 100, 255))
    assert out.shape == (1, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [0, 100, 255])  # transparent -> background
    np.testing.assert_array_equal(out[0, 1], [200, 0, 100])  # opaque -> colour
    a = 128 / 255
    expected = np.rint([a * 200, (1 - a) * 100, a * 100 + (1 - a) * 255])
    np.testing.assert_array_equal(out[0, 2], expected)


def test_contact_sheet_layout_without_labels() -> None:
    red, green, blue = _rgba(4, 6, (255, 0, 0), 255), _rgba(4, 6, (0, 255, 0), 255), _rgba(4, 6, (0, 0, 255), 255)
    sheet = contact_sheet([red, green, blue], columns=2, background=(10, 20, 30))
    assert sheet.shape == (8, 12, 3)
    np.testing.assert_array_equal(sheet[:4, :6], 255 * np.array([1, 0, 0]) + np.zeros((4, 6, 1)))
    np.testing.assert_array_equal(sheet[:4, 6:], 255 * np.array([0, 1, 0]) + np.zeros((4, 6, 1)))
    np.testing.assert_array_equal(sheet[4:, :6], 255 * np.array([0, 0, 1]) + np.zeros((4, 6, 1)))
    np.testing.assert_array_equal(sheet[4:, 6:], np.broadcast_to([10, 20, 30], (4, 6, 3)))  # empty cell


def test_contact_sheet_mixed_sizes_rgb_and_transparency() -> None:
    small = _rgba(2, 3, (0, 0, 0), 0)  # fully transparent -> background
    big = np.full((5, 4, 3), 77, np.uint8)  # RGB input
    sheet = contact_sheet([small, big], columns=5)
    assert sheet.shape == (5, 8, 3)  # tile 5x4, columns capped at the number of images
    assert (sheet[:, :4] == 255).all()
    assert (sheet[:, 4:] == 77).all()


def test_contact_sheet_labels_draw_text_in_strip() -> None:
    tiles = [_rgba(20, 40, (255, 255, 255), 255) for _ in range(3)]
    plain = contact_sheet(tiles, columns=3)
    labelled = contact_sheet(tiles, columns=3, labels=["#0", "#1", "#22"], background=(255, 255, 255))
    assert labelled.shape == (20 + LABEL_HEIGHT, 120, 3)
    np.testing.assert_array_equal(labelled[:20], plain)  # tiles untouched
    strip = labelled[20:]
    for column in range(3):
        assert (strip[:, column * 40:(column + 1) * 40] < 128).any(), f"label {column} not drawn"


@pytest.mark.parametrize("kwargs, match", [
    ({"images": [], "columns": 2}, "at least one image"),
    ({"images": [np.zeros((2, 2, 4), np.uint8)], "columns": 0}, "columns must be a positive integer"),
    ({"images": [np.zeros((2, 2, 4), np.float32)], "columns": 1}, "uint8"),
    ({"images": [np.zeros((2, 2, 4), np.uint8)], "columns": 1, "labels": ["a", "b"]}, "2 labels for 1 images"),
    ({"images": [np.zeros((2, 2, 4), np.uint8)], "columns": 1, "background": (0, 0, 300)}, "background"),
])
def test_contact_sheet_rejects_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        contact_sheet(**kwargs)


def test_png_round_trip_rgba_and_rgb() -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    rgb = rng.integers(0, 256, (3, 9, 3), dtype=np.uint8)
    for image in (rgba, rgb):
        data = encode_png(image)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        np.testing.assert_array_equal(decode_png(data), image)
    assert encode_png(rgba) == encode_png(rgba.copy())  # deterministic bytes


def test_decode_png_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="could not read 5 bytes"):
        decode_png(b"hello")


def test_thumbnail_shrinks_longer_side_and_averages() -> None:
    image = np.zeros((8, 16, 4), np.uint8)
    image[:, ::2] = 255  # opaque white columns between transparent black ones
    small = thumbnail(image, 4)
    assert small.shape == (2, 4, 4)
    assert np.all(np.abs(small[..., 3].astype(int) - 128) <= 1)  # coverage is averaged
    assert (small[..., :3] == 255).all()  # transparent pixels do not darken the colour
    assert thumbnail(image, 64).shape == image.shape  # never enlarges


def _decoded(image: Image.Image, fmt: str = "PNG") -> Image.Image:
    """``image`` written as ``fmt`` and read back, as a user's file is."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(values, np.float32)[..., None], 3, axis=-1)


def test_sixteen_bit_greyscale_keeps_its_depth() -> None:
    values = np.array([[0, 1, 257], [32768, 65280, 65535]], np.uint16)
    image = _decoded(Image.fromarray(values))
    assert image.mode == "I;16"
    np.testing.assert_allclose(image_to_rgb(image), _grey(values / 65535.0), atol=1e-7)
    big_endian = _decoded(Image.fromarray(values), "TIFF")
    np.testing.assert_allclose(image_to_rgb(big_endian), _grey(values / 65535.0), atol=1e-7)


def test_greyscale_palette_and_bilevel_images_become_rgb() -> None:
    grey = np.array([[0, 128, 255]], np.uint8)
    np.testing.assert_allclose(image_to_rgb(_decoded(Image.fromarray(grey))), _grey(grey / 255.0), atol=1e-7)
    bilevel = _decoded(Image.fromarray(np.array([[True, False]])))
    assert bilevel.mode == "1"
    np.testing.assert_array_equal(image_to_rgb(bilevel), _grey([[1.0, 0.0]]))
    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255, 10, 20, 30])
    palette.putdata([0, 1, 2])
    expected = np.array([[[255, 0, 0], [0, 0, 255], [10, 20, 30]]], np.float32) / 255.0
    np.testing.assert_allclose(image_to_rgb(_decoded(palette)), expected, atol=1e-7)


def test_alpha_is_composited_over_the_background() -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.putdata([0, 1])
    palette.info["transparency"] = 1
    np.testing.assert_allclose(image_to_rgb(_decoded(palette)), [[[1, 0, 0], [1, 1, 1]]], atol=1e-7)
    np.testing.assert_allclose(image_to_rgb(_decoded(palette), background=0.5), [[[1, 0, 0], [0.5, 0.5, 0.5]]],
                               atol=1e-7)
    la = Image.fromarray(np.array([[[100, 128], [100, 255], [100, 0]]], np.uint8), mode="LA")
    a = 128 / 255
    np.testing.assert_allclose(image_to_rgb(_decoded(la)), _grey([[100 / 255 * a + 1 - a, 100 / 255, 1.0]]),
                               atol=1e-6)
    rgba = _rgba(1, 1, (200, 0, 100), 64)
    a = 64 / 255
    expected = [[[200 / 255 * a + 1 - a, 1 - a, 100 / 255 * a + 1 - a]]]
    np.testing.assert_allclose(image_to_rgb(_decoded(Image.fromarray(rgba))), expected, atol=1e-6)


def test_cmyk_and_float_images() -> None:
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putdata([(100, 50, 0, 60), (0, 0, 0, 255)])
    c, m, y, k = np.array([100, 50, 0, 60]) / 255.0
    expected = [[[(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)], [0, 0, 0]]]
    np.testing.assert_allclose(image_to_rgb(_decoded(cmyk, "TIFF")), expected, atol=1e-6)
    values = np.array([[0.0, 0.25, 1.0]], np.float32)
    np.testing.assert_allclose(image_to_rgb(_decoded(Image.fromarray(values), "TIFF")), _grey(values))
    with pytest.raises(ValueError, match=r"float \(F\) image must hold finite values in \[0, 1\], got values in "
                                         r"\[0, 255\]"):
        image_to_rgb(Image.fromarray(np.array([[0.0, 255.0]], np.float32)))
