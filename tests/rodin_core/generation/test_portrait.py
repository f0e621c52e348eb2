"""A portrait of any size and format -> the encoder's square RGB input over white (§4.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rodin_core.generation import GenerationError
from rodin_core.generation.portrait import check_portrait_size, portrait_tensor


def test_rgb_uint8_becomes_unit_float_channels_first():
    image = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3) * 20
    tensor = portrait_tensor(image)
    assert tensor.shape == (1, 3, 2, 2) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor[0].permute(1, 2, 0), torch.from_numpy(image.astype(np.float32) / 255))


def test_float_input_matches_uint8_input():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    torch.testing.assert_close(portrait_tensor(image), portrait_tensor(image.astype(np.float64) / 255.0))


def test_rgba_is_composited_on_white():
    image = np.zeros((2, 2, 4), dtype=np.uint8)
    image[..., 0] = 255  # red
    image[0, :, 3] = 255  # top row opaque, bottom row transparent
    image[1, 0, 3] = 0
    tensor = portrait_tensor(image)[0]  # (3, 2, 2)
    torch.testing.assert_close(tensor[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(tensor[:, 1, 0], torch.ones(3))
    opaque = image.copy()
    opaque[..., 3] = 255
    torch.testing.assert_close(portrait_tensor(opaque), portrait_tensor(opaque[..., :3]))


def test_non_square_images_are_centred_on_a_white_square():
    image = np.zeros((4, 2, 3), dtype=np.uint8)  # black, taller than wide
    tensor = portrait_tensor(image)[0]  # (3, 4, 4)
    assert tensor.shape == (3, 4, 4)
    assert torch.equal(tensor[:, :, 1:3], torch.zeros(3, 4, 2))
    assert torch.equal(tensor[:, :, [0, 3]], torch.ones(3, 4, 2))
    wide = portrait_tensor(np.zeros((1, 3, 3), dtype=np.uint8))[0]  # (3, 3, 3): the row lands in the middle
    assert torch.equal(wide[:, 1], torch.zeros(3, 3)) and torch.equal(wide[:, [0, 2]], torch.ones(3, 2, 3))


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((8, 8), np.uint8), r"\(H, W, 3\) RGB or \(H, W, 4\) RGBA image, got shape \(8, 8\)"),
    (np.zeros((8, 8, 2), np.uint8), r"got shape \(8, 8, 2\)"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    (np.zeros((8, 8, 3), np.uint16), "uint8 or float in \\[0, 1\\], got dtype uint16"),
    (np.zeros((8, 8, 3), bool), "got dtype bool"),
    (np.full((8, 8, 3), 255.0), r"must lie in \[0, 1\], got values in \[255, 255\]; divide 8-bit values by 255"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN or inf"),
])
def test_bad_images_are_refused(image: np.ndarray, message: str):
    with pytest.raises(GenerationError, match=message):
        portrait_tensor(image)


def test_a_portrait_too_small_for_a_face_is_refused_and_a_small_one_warned_about():
    assert check_portrait_size(16, 16) is None and check_portrait_size(300, 200, encoder_size=224) is None
    with pytest.raises(GenerationError, match=r"^the portrait is 1x1 pixels, too small to hold a face; pass an image "
                                              r"of at least 16 pixels on each side$"):
        check_portrait_size(1, 1)
    with pytest.raises(GenerationError, match=r"the portrait is 15x400 pixels, too small .* \(best: 224 or more\)"):
        check_portrait_size(400, 15, encoder_size=224)
    with pytest.raises(GenerationError, match=r"the portrait is 27x20 pixels, more than 8 times smaller than the "
                                              r"encoder's 224x224 input; pass an image of at least 28 pixels"):
        check_portrait_size(20, 27, encoder_size=224)
    assert check_portrait_size(40, 28, encoder_size=224) == (
        "the portrait is 28x40 pixels, smaller than the encoder's 224x224 input: it is enlarged 5.6x and the avatar "
        "may lack detail")
