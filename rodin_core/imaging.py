"""Small image utilities for reports: PNG coding and labelled contact sheets (paper §4.1 renders), and
images of any format as RGB.

Pure numpy/PIL. Images are uint8 arrays, (H, W, 3) RGB or (H, W, 4) RGBA with straight
(un-premultiplied) alpha, the layout the renders stage stores (docs/data-contracts.md); an image
read from a user's file becomes float RGB in [0, 1] (:func:`image_to_rgb`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 12
"""Pixels of the caption strip under every tile when labels are given."""
LABEL_COLOR = (0, 0, 0)


def _check_image(image: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"{what} must be a uint8 (H, W, 3) or (H, W, 4) array, got {array.dtype} {array.shape}; "
                         "convert it with np.clip(x * 255, 0, 255).astype(np.uint8)")
    return array


def _check_color(color: Sequence[int]) -> np.ndarray:
    rgb = np.asarray(color)
    if rgb.shape != (3,) or not np.issubdtype(rgb.dtype, np.integer) or rgb.min() < 0 or rgb.max() > 255:
        raise ValueError(f"background must be three integers in 0..255, got {color!r}")
    return rgb.astype(np.float32)


def composite_over(image: np.ndarray, background: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """RGBA ``image`` composited over an opaque ``background`` colour -> RGB uint8 (H, W, 3).

    ``out = a * rgb + (1 - a) * background`` with ``a = alpha / 255``; RGB input is returned as is.
    """
    array = _check_image(image, "image")
    bg = _check_color(background)
    if array.shape[2] == 3:
        return array.copy()
    rgb = array[..., :3].astype(np.float32)  # (H, W, 3)
    alpha = array[..., 3:].astype(np.float32) / 255.0  # (H, W, 1)
    out = alpha * rgb + (1.0 - alpha) * bg
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def contact_sheet(
    images: Sequence[np.ndarray],
    columns: int,
    labels: Sequence[str] | None = None,
    background: Sequence[int] = (255, 255, 255),
) -> np.ndarray:
    """Tile ``images`` row-major into a grid of ``columns`` columns -> RGB uint8 (H_s, W_s, 3).

    Every image is composited over ``background``; tiles are ``max(h) x max(w)`` with smaller
    images placed at the tile's top-left corner. With ``labels`` (one per image), a
    :data:`LABEL_HEIGHT`-pixel strip under each tile carries its label in PIL's default font.
    ``H_s = rows * (tile_h + label strip)``, ``W_s = columns * tile_w`` with
    ``rows = ceil(len(images) / columns)``; unused cells are background.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image, got an empty list")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive integer, got {columns!r}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images; give one label per image or None")
    tiles = [composite_over(_check_image(im, f"images[{i}]"), background) for i, im in enumerate(images)]
    tile_h = max(t.shape[0] for t in tiles)
    tile_w = max(t.shape[1] for t in tiles)
    strip = LABEL_HEIGHT if labels is not None else 0
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    sheet = np.empty((rows * (tile_h + strip), columns * tile_w, 3), np.uint8)  # (H_s, W_s, 3)
    sheet[...] = _check_color(background).astype(np.uint8)
    for i, tile in enumerate(tiles):
        top, left = (i // columns) * (tile_h + strip), (i % columns) * tile_w
        sheet[top:top + tile.shape[0], left:left + tile.shape[1]] = tile
    if labels is None:
        return sheet
    canvas = Image.fromarray(sheet, mode="RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, label in enumerate(labels):
        top, left = (i // columns) * (tile_h + strip), (i % columns) * tile_w
        text = _fit_text(draw, font, str(label), tile_w - 2)
        draw.text((left + 1, top + tile_h), text, fill=LABEL_COLOR, font=font)
    return np.asarray(canvas)


def _fit_text(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, text: str, width: int) -> str:
    """``text`` shortened from the right until it fits ``width`` pixels."""
    while text and draw.textlength(text, font=font) > width:
        text = text[:-1]
    return text


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` resized (area filter) so that its longer side is at most ``size`` pixels.

    RGBA is resampled with premultiplied alpha: transparent pixels do not bleed their colour.
    """
    array = _check_image(image, "image")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"thumbnail size must be a positive integer, got {size!r}")
    h, w = array.shape[:2]
    scale = size / max(h, w)
    if scale >= 1.0:
        return array.copy()
    mode = "RGBA" if array.shape[2] == 4 else "RGB"
    resized = Image.fromarray(array, mode=mode).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    return np.asarray(resized)


def encode_png(image: np.ndarray) -> bytes:
    """uint8 RGB (H, W, 3) or RGBA (H, W, 4) -> PNG bytes without metadata (same pixels, same bytes)."""
    array = _check_image(image, "image")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array), mode="RGBA" if array.shape[2] == 4 else "RGB").save(
        buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 (H, W, 4) for images with alpha, (H, W, 3) otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_png needs PNG bytes, got {type(data).__name__}")
    try:
        with Image.open(io.BytesIO(bytes(data))) as image:
            image.load()
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            return np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    except OSError as exc:
        raise ValueError(f"decode_png could not read {len(data)} bytes as an image ({exc})") from exc


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> uint8."""
    return np.clip(np.rint(rgb.numpy() * 255.0), 0, 255).astype(np.uint8)


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""PIL modes of 16-bit greyscale images (PNG and TIFF open as ``I;16``; ``I`` is read as 16-bit too)."""


def image_to_rgb(image: Image.Image, background: float = 1.0) -> np.ndarray:
    """Any PIL image -> float32 (H, W, 3) RGB in [0, 1], its alpha composited over the grey level ``background``.

    Greyscale (1-, 8- and 16-bit), palette (with or without a transparent index), greyscale + alpha, RGB,
    RGBA, CMYK and PIL's other modes are read at their own bit depth: a 16-bit value v is v / 65535 and
    CMYK is (1 - C)(1 - K), (1 - M)(1 - K), (1 - Y)(1 - K) without colour management. Float images (mode
    ``F``) must lie in [0, 1]. Alpha is straight (un-premultiplied), as in the renders.
    """
    mode = image.mode
    alpha = None
    if mode in SIXTEEN_BIT_MODES:
        grey = np.clip(np.asarray(image, dtype=np.float64), 0, 65535) / 65535.0  # (H, W)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
    elif mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        if not np.isfinite(grey).all() or grey.min() < 0.0 or grey.max() > 1.0:
            raise ValueError(f"a float ({mode}) image must hold finite values in [0, 1], got values in "
                             f"[{np.nanmin(grey):.4g}, {np.nanmax(grey):.4g}]; save it as an 8- or 16-bit image")
        rgb = np.repeat(grey[..., None], 3, axis=-1)
    elif mode == "CMYK":
        cmyk = np.asarray(image, dtype=np.float64) / 255.0  # (H, W, 4)
        rgb = (1.0 - cmyk[..., :3]) * (1.0 - cmyk[..., 3:])
    else:
        has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
        array = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float64) / 255.0
        rgb, alpha = array[..., :3], (array[..., 3:] if has_alpha else None)
    if alpha is not None:
        rgb = rgb * alpha + (1.0 - alpha) * float(background)
    return np.ascontiguousarray(rgb, dtype=np.float32)
