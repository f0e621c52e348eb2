"""A portrait photo of any size -> the encoder's input (paper §4.5, portrait inversion).

§4.5 generates an avatar from one portrait: the image goes through the same encoder E that
conditioned the base model during training (§3.2), z = E(x), then the base model and the upsampler
generate the tri-plane from z. The encoders read square frontal views in [0, 1] and composite RGBA
over white (:func:`rodin_core.encoders.composite_on_white`), as the training renders are
composited. A user's photo may have any size and aspect ratio, so it is composited the same way
and then padded with white to a centred square (nothing is cropped or stretched); the encoder
resizes the square to its own input size. A portrait so small that it holds no face (under
:data:`MIN_PORTRAIT_SIDE` pixels a side, or enlarged more than :data:`MAX_UPSCALE` times to the encoder's
input) is refused; one smaller than the encoder's input is used with a warning.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rodin_core.generation.errors import GenerationError

MIN_PORTRAIT_SIDE = 16
"""Fewest pixels on each side of a portrait."""
MAX_UPSCALE = 8
"""Most times the encoder may enlarge a portrait's longer side to reach its input size."""


def check_portrait_size(height: int, width: int, encoder_size: int | None = None) -> str | None:
    """Refuse a portrait too small to hold a face (:class:`GenerationError`); return a warning when the encoder
    (input ``encoder_size`` pixels a side, None: not known yet) enlarges it, else None."""
    shown = f"{width}x{height} pixels"
    if min(height, width) < MIN_PORTRAIT_SIDE:
        best = f" (best: {encoder_size} or more)" if encoder_size else ""
        raise GenerationError(f"the portrait is {shown}, too small to hold a face; pass an image of at least "
                              f"{MIN_PORTRAIT_SIDE} pixels on each side{best}")
    if encoder_size is None or max(height, width) >= encoder_size:
        return None
    if max(height, width) * MAX_UPSCALE < encoder_size:
        raise GenerationError(f"the portrait is {shown}, more than {MAX_UPSCALE} times smaller than the encoder's "
                              f"{encoder_size}x{encoder_size} input; pass an image of at least "
                              f"{-(-encoder_size // MAX_UPSCALE)} pixels on its longer side (best: {encoder_size})")
    return (f"the portrait is {shown}, smaller than the encoder's {encoder_size}x{encoder_size} input: it is "
            f"enlarged {encoder_size / max(height, width):.1f}x and the avatar may lack detail")


def image_to_unit_float(image: np.ndarray) -> np.ndarray:
    """(H, W, 3|4) uint8, or float in [0, 1] -> float32 (H, W, 3|4) in [0, 1]; GenerationError otherwise."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise GenerationError(f"a portrait must be an (H, W, 3) RGB or (H, W, 4) RGBA image, got shape {array.shape}; "
                              "convert greyscale or palette images to RGB first (PIL: image.convert('RGB'))")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise GenerationError(f"the portrait is empty (shape {array.shape}); pass an image with pixels")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise GenerationError(f"a portrait must be uint8 or float in [0, 1], got dtype {array.dtype}; "
                              "convert 16-bit images with (image / 65535).astype(np.float32)")
    if not np.isfinite(array).all():
        raise GenerationError("the float portrait holds NaN or inf values; pass finite values in [0, 1]")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise GenerationError(f"a float portrait must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]; "
                              "divide 8-bit values by 255")
    return array.astype(np.float32)


def portrait_tensor(image: np.ndarray) -> Tensor:
    """A portrait (H, W, 3|4), uint8 or float in [0, 1] -> (1, 3, S, S) float32 RGB over white, S = max(H, W).

    RGBA is composited over white with straight alpha, then the image is centred on a white square.
    """
    unit = image_to_unit_float(image)  # (H, W, 3|4)
    rgb = unit[..., :3]  # (H, W, 3)
    if unit.shape[2] == 4:
        alpha = unit[..., 3:]  # (H, W, 1)
        rgb = rgb * alpha + (1.0 - alpha)
    height, width = rgb.shape[:2]
    side = max(height, width)
    square = np.ones((side, side, 3), dtype=np.float32)  # (S, S, 3) white
    top, left = (side - height) // 2, (side - width) // 2
    square[top:top + height, left:left + width] = rgb
    return torch.from_numpy(square).permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, S, S)
