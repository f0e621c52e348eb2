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


@pytest.fixture(scope="module")
def lpips_metric():
    from rodin_core.metrics import LPIPS

    return LPIPS("stlpips-vgg")


def smooth_image(size: int = 32) -> np.ndarray:
    """A smooth colour pattern (H, W, 3) in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size] / size
    return np.stack([0.5 + 0.4 * np.sin(6 * x), 0.5 + 0.4 * np.cos(5 * y), 0.3 + 0.5 * x * y], axis=-1)


def test_lpips_is_zero_for_identical_images_and_grows_with_distortion(lpips_metric):
    image = smooth_image()
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, image.shape)
    distorted = np.stack([np.clip(image + sigma * noise, 0, 1) for sigma in (0.0, 0.05, 0.15, 0.4)])  # (4, H, W, 3)
    distances = lpips_metric(distorted, np.broadcast_to(image, distorted.shape))
    assert distances.shape == (4,) and distances.dtype == np.float64
    assert distances[0] == 0.0
    assert 0.0 < distances[1] < distances[2] < distances[3]
    assert lpips_metric(image, image).tolist() == [0.0]  # a single (H, W, 3) image is a batch of one
    assert lpips_metric.network == "stlpips-vgg" and "shift-tolerant" in lpips_metric.description


def test_lpips_errors_name_the_fix(lpips_metric, monkeypatch):
    from rodin_core import metrics
    from rodin_core.networks.perceptual import PerceptualUnavailableError

    with pytest.raises(ValueError, match=r"at least 18x18 pixels, got \(16, 16\)"):
        lpips_metric(np.zeros((16, 16, 3)), np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="differ in shape"):
        lpips_metric(np.zeros((32, 32, 3)), np.zeros((2, 32, 32, 3)))
    with pytest.raises(ValueError, match=r"unknown LPIPS network 'squeeze'"):
        metrics.LPIPS("squeeze")
    monkeypatch.setattr(metrics, "TORCHVISION_WEIGHTS", {"lpips-alex": "absent-alex.pth", "lpips-vgg": "absent.pth"})
    assert not metrics.lpips_available("lpips-alex") and not metrics.lpips_available("lpips-vgg")
    assert metrics.LPIPS("auto").network == "stlpips-vgg"  # the lpips package's weights are not cached
    with pytest.raises(PerceptualUnavailableError, match=r"lpips-alex needs the `lpips` package .*absent-alex.pth"):
        metrics.LPIPS("lpips-alex")
