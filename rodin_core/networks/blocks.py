"""U-Net building blocks on the tri-plane layout (B, 3, C, H, W) (paper §3.2, appendix B.1).

The blocks follow the ADM U-Net of Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs", the
guided-diffusion code) and Nichol & Dhariwal 2021 (improved-diffusion): sinusoidal timestep
embedding, residual blocks with adaptive group normalisation (AdaGN, h = GN(h) * (1 + s) + b with
(s, b) from the embedding), multi-head self-attention, per-level down/upsampling. On tri-planes:

- convolutions, downsampling and upsampling act on each plane alone (:class:`PlaneConv2d`), unless a
  residual block is built ``aware``, in which case its convolutions are 3D-aware
  (:class:`TriplaneAwareConv`, paper §3.2);
- group normalisation takes its statistics over the three planes of a sample together, as a
  GroupNorm over the rolled tensor (B, C, H, 3W) would;
- self-attention attends over the tokens of all three planes of a sample together (3 * H * W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rodin_core.networks.aware_conv import PlaneConv2d, TriplaneAwareConv

MAX_GROUPS = 32
"""Group count of the ADM U-Net's GroupNorm, used whenever the channel count allows it."""


def group_count(channels: int, max_groups: int = MAX_GROUPS) -> int:
    """The largest divisor of ``channels`` not above ``max_groups`` (32 for the usual widths)."""
    if channels < 1:
        raise ValueError(f"group_count needs channels >= 1, got {channels}")
    return max(g for g in range(1, min(channels, max_groups) + 1) if channels % g == 0)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` (ADM's zero-initialised output layers) and return it."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) of integer or fractional timesteps (Vaswani et al. 2017;
    DDPM, Ho et al. 2020): [cos(t * f_k), sin(t * f_k)] with f_k = max_period^(-k / (dim // 2))."""
    if t.dim() != 1:
        raise ValueError(f"timesteps must be a vector (B,), got shape {tuple(t.shape)}")
    if dim < 2:
        raise ValueError(f"timestep embedding dim must be >= 2, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2*half)
    return F.pad(embedding, (0, dim % 2))  # (B, dim)


class TriplaneGroupNorm(nn.GroupNorm):
    """GroupNorm of planes (B, 3, C, H, W) with statistics over all three planes of a sample.

    Equal to ``nn.GroupNorm`` applied to the rolled tensor (B, C, H, 3W). The group count is
    :func:`group_count` of the channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(group_count(channels), channels)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, C, H, W) -> (B, 3, C, H, W)."""
        grouped = x.transpose(1, 2)  # (B, C, 3, H, W): GroupNorm reduces over (C/G, 3, H, W)
        return super().forward(grouped).transpose(1, 2)  # (B, 3, C, H, W)


def _conv(in_channels: int, out_channels: int, aware: bool) -> nn.Module:
    """A 3x3 same-size convolution on planes: 3D-aware or per-plane."""
    if aware:
        return TriplaneAwareConv(in_channels, out_channels, kernel_size=3)
    return PlaneConv2d(in_channels, out_channels, 3, padding=1)


class ResBlock(nn.Module):
    """ADM residual block with AdaGN (Dhariwal & Nichol 2021, §3): the embedding (timestep plus
    latent z, paper §3.2 "Latent conditioning") modulates the second normalisation.

    h = conv1(SiLU(GN(x)));  h = GN(h) * (1 + scale) + shift;  out = skip(x) + conv2(drop(SiLU(h)))

    ``conv2`` starts at zero, so a fresh block is the (projected) identity. With ``aware`` both
    3x3 convolutions are 3D-aware; otherwise each plane is convolved alone.
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float = 0.0,
                 aware: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels
        self.aware = aware
        self.in_norm = TriplaneGroupNorm(channels)
        self.conv1 = _conv(channels, out_channels, aware)
        self.emb_proj = nn.Linear(emb_channels, 2 * out_channels)
        self.out_norm = TriplaneGroupNorm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(_conv(out_channels, out_channels, aware))
        self.skip = nn.Identity() if channels == out_channels else PlaneConv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x (B, 3, C, H, W), emb (B, E) -> (B, 3, C_out, H, W)."""
        h = self.conv1(F.silu(self.in_norm(x)))  # (B, 3, C_out, H, W)
        scale_shift = self.emb_proj(F.silu(emb))[:, None, :, None, None]  # (B, 1, 2*C_out, 1, 1)
        scale, shift = scale_shift.chunk(2, dim=2)  # (B, 1, C_out, 1, 1) each
        h = self.out_norm(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the 3 * H * W tokens of a sample's three planes (ADM §3),
    pre-normalised, with a zero-initialised output projection and a residual connection.

    Attention has no positional encoding, so it is the same on the rolled tensor; it is the one
    block of the U-Net (besides the 3D-aware convolution) through which planes exchange features.
    """

    def __init__(self, channels: int, num_head_channels: int) -> None:
        super().__init__()
        if channels % num_head_channels != 0:
            raise ValueError(
                f"attention over {channels} channels needs num_head_channels dividing it, got {num_head_channels}"
            )
        self.num_heads = channels // num_head_channels
        self.norm = TriplaneGroupNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_module(nn.Linear(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, C, H, W) -> (B, 3, C, H, W)."""
        batch, n_planes, channels, height, width = x.shape
        tokens = self.norm(x).permute(0, 1, 3, 4, 2)  # (B, 3, H, W, C)
        tokens = tokens.reshape(batch, n_planes * height * width, channels)  # (B, T, C), T = 3*H*W
        qkv = self.qkv(tokens).view(batch, tokens.shape[1], 3, self.num_heads, -1)  # (B, T, 3, heads, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, heads, T, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, d)
        out = self.proj(out.transpose(1, 2).reshape(batch, -1, channels))  # (B, T, C)
        out = out.view(batch, n_planes, height, width, channels).permute(0, 1, 4, 2, 3)  # (B, 3, C, H, W)
        return x + out


class Downsample(nn.Module):
    """Halve each plane with a stride-2 3x3 convolution (ADM ``conv_resample``), per plane."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = PlaneConv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, C, H, W) -> (B, 3, C, H/2, W/2)."""
        return self.conv(x)


class Upsample(nn.Module):
    """Double each plane (nearest neighbour) then a 3x3 convolution (ADM ``conv_resample``), per plane."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = PlaneConv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, C, H, W) -> (B, 3, C, 2H, 2W)."""
        batch, n_planes = x.shape[:2]
        up = F.interpolate(x.flatten(0, 1), scale_factor=2, mode="nearest")  # (B*3, C, 2H, 2W)
        return self.conv(up.unflatten(0, (batch, n_planes)))  # (B, 3, C, 2H, 2W)


class EmbedSequential(nn.Sequential):
    """A sequence of blocks where the residual blocks also receive the embedding (B, E)."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x
