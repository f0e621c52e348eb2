"""PSNR and SSIM against hand-computed values and their known invariants."""

import numpy as np
import pytest

from rodin_core.metrics import psnr, ssim


def test_psnr_hand_computed():
    a = np.zeros((4, 4))
    b = np.full((4, 4), 0.1)
    assert psnr(a, b) == pytest.approx(20.0)  # mse 0.01 -> 10 log10(1 / 0.01)
    assert psnr(a, a) == float("inf")
    assert psnr(a * 255, b * 255, data_range=255.0) == pytest.approx(20.0)


def test_ssim_identity_constant_shift_and_noise():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 3))
    assert ssim(img, img) == pytest.approx(1.0)
    noisy = np.clip(img + rng.normal(0, 0.2, img.shape), 0, 1)
    less_noisy = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
    assert ssim(img, noisy) < ssim(img, less_noisy) < 1.0
    # constant images: SSIM is the luminance term (2 m1 m2 + c1) / (m1^2 + m2^2 + c1)
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert ssim(np.full((16, 16), 0.2), np.full((16, 16), 0.6)) == pytest.approx(expected)


def test_metric_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))
