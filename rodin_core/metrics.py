"""Image-quality metrics: PSNR, SSIM (Wang et al. 2004) and LPIPS (Zhang et al. 2018), as in paper
§4.3 and appendix C.5, Table 4.

PSNR and SSIM are NumPy implementations on images in [0, 1], (H, W) or (H, W, C); SSIM uses the
standard 11x11 Gaussian window with sigma 1.5 and constants K1 = 0.01, K2 = 0.03, averaged over
channels. :class:`LPIPS` is the learned perceptual distance with weights read offline only, from
one of :data:`LPIPS_NETWORKS`:

- ``lpips-alex`` / ``lpips-vgg``: the ``lpips`` package (Zhang et al.'s calibrated AlexNet or VGG16),
  usable when the package is installed and torchvision's ImageNet weights of the trunk are already
  in the torch hub cache (nothing is downloaded);
- ``stlpips-vgg``: the shift-tolerant LPIPS VGG16 of Ghildyal & Liu 2022, whose weights ship in the
  ``stlpips-pytorch`` wheel (:class:`rodin_core.networks.perceptual.STLPIPS`, the network of the
  upsampler's perceptual loss). Its values are close to, but not the same as, the standard LPIPS.

``auto`` takes the first usable one in that order; :attr:`LPIPS.network` says which was taken.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from rodin_core.networks.perceptual import (
    STLPIPS,
    PerceptualUnavailableError,
    minimum_patch_size,
    stlpips_weights_path,
)


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


LPIPS_NETWORKS = ("auto", "lpips-alex", "lpips-vgg", "stlpips-vgg")
"""``auto`` or a network of :class:`LPIPS`, in the order ``auto`` tries them."""
TORCHVISION_WEIGHTS = {"lpips-alex": "alexnet-owt-7be5be79.pth", "lpips-vgg": "vgg16-397923af.pth"}
"""torchvision's ImageNet weights of the ``lpips`` package's trunks, as named in the torch hub cache."""
LPIPS_DESCRIPTIONS = {
    "lpips-alex": "LPIPS AlexNet (lpips package, Zhang et al. 2018)",
    "lpips-vgg": "LPIPS VGG16 (lpips package, Zhang et al. 2018)",
    "stlpips-vgg": "shift-tolerant LPIPS VGG16 (stlpips-pytorch weights, Ghildyal & Liu 2022)",
}


def torchvision_weights_path(network: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``lpips-alex`` / ``lpips-vgg``'s trunk."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_WEIGHTS[network]


def lpips_available(network: str) -> bool:
    """Whether ``network`` (one of :data:`LPIPS_NETWORKS` but ``auto``) can be built offline."""
    if network == "stlpips-vgg":
        try:
            stlpips_weights_path()
        except PerceptualUnavailableError:
            return False
        return True
    if network not in TORCHVISION_WEIGHTS:
        raise ValueError(f"unknown LPIPS network {network!r}; choose one of {LPIPS_NETWORKS[1:]}")
    return importlib.util.find_spec("lpips") is not None and torchvision_weights_path(network).is_file()


class LPIPS:
    """Learned perceptual distance between images in [0, 1] (Zhang et al. 2018; paper Table 4), frozen, on CPU.

    ``network``: one of :data:`LPIPS_NETWORKS`. Raises
    :class:`~rodin_core.networks.perceptual.PerceptualUnavailableError` when it cannot be built offline.
    """

    def __init__(self, network: str = "auto") -> None:
        if network not in LPIPS_NETWORKS:
            raise ValueError(f"unknown LPIPS network {network!r}; choose one of {LPIPS_NETWORKS}")
        if network == "auto":
            network = next((n for n in LPIPS_NETWORKS[1:] if lpips_available(n)), "")
            if not network:
                raise PerceptualUnavailableError(
                    "no LPIPS network can be built offline: `pip install stlpips-pytorch==0.0.2` (its wheel ships "
                    "the weights), or install `lpips` and put torchvision's AlexNet/VGG16 ImageNet weights in "
                    f"{torchvision_weights_path('lpips-alex').parent}")
        elif network != "stlpips-vgg" and not lpips_available(network):  # STLPIPS() says what is missing itself
            raise PerceptualUnavailableError(
                f"{network} needs the `lpips` package and torchvision's ImageNet weights at "
                f"{torchvision_weights_path(network)} (nothing is downloaded here); copy them there, or use "
                "--lpips stlpips-vgg (weights ship with stlpips-pytorch) or auto")
        if network == "stlpips-vgg":
            self.net: torch.nn.Module = STLPIPS()
            self.min_size = minimum_patch_size()
        else:
            import lpips  # optional dependency, present only where lpips_available() checked it

            self.net = lpips.LPIPS(net=network.removeprefix("lpips-"), verbose=False)
            self.min_size = 32
        self.net.eval().requires_grad_(False)
        self.network = network

    @property
    def description(self) -> str:
        """What :attr:`network` is, in words."""
        return LPIPS_DESCRIPTIONS[self.network]

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Distances (N,) float64 between images a, b (N, H, W, 3) or (H, W, 3) in [0, 1]; 0 for identical images."""
        _check_pair(a, b)
        x = torch.as_tensor(np.asarray(a, np.float32))
        y = torch.as_tensor(np.asarray(b, np.float32))
        if x.dim() == 3:
            x, y = x[None], y[None]  # (1, H, W, 3)
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"LPIPS takes RGB images (N, H, W, 3) or (H, W, 3), got {tuple(np.shape(a))}")
        if min(x.shape[1:3]) < self.min_size:
            raise ValueError(f"{self.network} needs images of at least {self.min_size}x{self.min_size} pixels, got "
                             f"{tuple(x.shape[1:3])}; render larger images")
        x = x.permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
        y = y.permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
        with torch.no_grad():
            if self.network == "stlpips-vgg":
                distances = self.net(x, y)  # (N,)
            else:
                distances = self.net(x, y, normalize=True).reshape(x.shape[0])  # (N,)
        return distances.double().numpy()
