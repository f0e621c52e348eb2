"""Image-quality metrics: PSNR and SSIM (Wang et al. 2004), as used in paper §4.3 / Table 4.

NumPy implementations on images in [0, 1], (H, W) or (H, W, C); SSIM uses the standard 11x11
Gaussian window with sigma 1.5 and constants K1 = 0.01, K2 = 0.03, averaged over channels.
"""

from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of two equally shaped images; ``inf`` when identical."""
    _check_pair(a, b)
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * np.log10(data_range**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> float:
    """Mean structural similarity of two images (H, W) or (H, W, C), over the valid window area."""
    _check_pair(a, b)
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if min(a.shape[:2]) < window:
        raise ValueError(f"images of size {a.shape[:2]} are smaller than the SSIM window {window}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    g = _gaussian(window, sigma)

    def blur(x: np.ndarray) -> np.ndarray:  # (H, W, C) -> (H - w + 1, W - w + 1, C), separable
        rows = np.apply_along_axis(lambda v: np.convolve(v, g, mode="valid"), 0, x)
        return np.apply_along_axis(lambda v: np.convolve(v, g, mode="valid"), 1, rows)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def _gaussian(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"images differ in shape: {np.shape(a)} vs {np.shape(b)}")
