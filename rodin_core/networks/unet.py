"""The tri-plane diffusion U-Net of the base model and the upsampler (paper §3.2, §3.3, §4.1, appendix B.1).

The ADM U-Net (Dhariwal & Nichol 2021, guided-diffusion; Nichol & Dhariwal 2021, improved-diffusion)
adapted to rolled-out tri-planes:

- input and output are rolled tri-planes (B, C, H, 3W) (§3.2 "roll-out"); inside, the network works
  on the planes (B, 3, C, H, W) and never lets a plain convolution, down- or upsampling cross a
  plane seam (:mod:`rodin_core.networks.blocks`);
- residual blocks at the plane sizes in ``aware_resolutions`` use the 3D-aware convolution (§3.2,
  Fig. 4b; §4.1: "3D-aware convolution at higher scales"); self-attention over the tokens of all
  three planes at ``attention_resolutions`` (§4.1: 8^2, 16^2, 32^2);
- latent conditioning (§3.2): z in R^latent_dim is projected by a linear layer and added to the
  timestep embedding, which every residual block reads through AdaGN; the unconditional branch of
  classifier-free guidance (Eq. 3) feeds z = 0, which is what ``z=None`` means;
- the upsampler (§3.3) is conditioned on the low-resolution tri-plane, upsampled bilinearly per
  plane to the input size and concatenated on channels (as ADM's super-resolution model);
- ``plane_layout`` (:mod:`rodin_core.triplane.layout`, §4.4 Table 2): ``rollout`` is the above;
  ``channels`` is the baseline of Table 2, the planes concatenated on channels into one map
  (B, 1, 3C, H, W) that a plain 2D U-Net of the same width convolves as a whole, then split back into
  planes at the output. The input and output stay rolled tri-planes, so the diffusion process, the
  samplers and everything after them see the same tensors whatever the layout (the noise is i.i.d.
  per element, so diffusing the rolled tensor is diffusing the stacked one, reordered).

The middle block has its attention only when the lowest plane size is an attention resolution, so
that a configuration without attention has no cross-plane path besides the 3D-aware convolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rodin_core.config_dict import DictConfig
from rodin_core.networks.aware_conv import PlaneConv2d
from rodin_core.networks.blocks import (
    AttentionBlock,
    Downsample,
    EmbedSequential,
    ResBlock,
    TriplaneGroupNorm,
    Upsample,
    timestep_embedding,
    zero_module,
)
from rodin_core.triplane.layout import PLANE_LAYOUTS, stack_channels, unstack_channels
from rodin_core.triplane.rollout import roll_in, roll_out


@dataclass
class UNetConfig(DictConfig):
    """Shape of a :class:`TriplaneUNet`; the defaults are the paper's base model (appendix B.1, ADM 64x64)."""

    in_channels: int = 32
    """Feature channels of the input tri-plane (paper: 32)."""
    out_channels: int = 32
    """Channels of the prediction (eps or x0), before learn_sigma doubles them."""
    model_channels: int = 192
    """Base width of the U-Net (paper: 192)."""
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    """Width multiplier of each level; the plane size halves between levels (ADM 64x64: 1, 2, 3, 4)."""
    num_res_blocks: int = 3
    """Residual blocks per level on the way down (one more on the way up) (ADM 64x64: 3)."""
    attention_resolutions: tuple[int, ...] = (8, 16, 32)
    """Plane sizes at which blocks are followed by self-attention over the three planes (paper: 8, 16, 32)."""
    aware_resolutions: tuple[int, ...] = (64, 32)
    """Plane sizes at which residual blocks use the 3D-aware convolution (paper: the higher scales); () for none."""
    plane_layout: str = "rollout"
    """How the network arranges the planes: ``rollout`` (the paper's) or ``channels`` (concatenated on channels, the
    baseline of Table 2; no 3D-aware convolution)."""
    num_head_channels: int = 64
    """Channels per attention head (ADM: 64)."""
    dropout: float = 0.1
    """Dropout before the last convolution of each residual block (ADM 64x64: 0.1)."""
    latent_dim: int = 512
    """Size of the conditioning latent z (paper: 512, CLIP ViT-B/32); 0 for no latent."""
    cond_channels: int = 0
    """Channels of the low-resolution tri-plane the upsampler is conditioned on; 0 for none."""
    learn_sigma: bool = True
    """Also predict the variance interpolation (improved-diffusion's L_hybrid): doubles the output."""
    image_size: int = 64
    """Plane size H = W of the input tri-plane (paper: 64 for the base model, 256 for the upsampler)."""

    def __post_init__(self) -> None:
        self.validate()

    def resolutions(self) -> tuple[int, ...]:
        """Plane size of each level, from the input size down."""
        return tuple(self.image_size // 2**level for level in range(len(self.channel_mult)))

    def validate(self) -> UNetConfig:
        """Raise ``ValueError`` naming the first invalid field and its value; return self."""
        for name, low in (("in_channels", 1), ("out_channels", 1), ("model_channels", 1), ("num_res_blocks", 1),
                          ("num_head_channels", 1), ("latent_dim", 0), ("cond_channels", 0), ("image_size", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"UNetConfig.{name} must be an int >= {low}, got {value!r}")
        if not self.channel_mult or any(not isinstance(m, int) or m < 1 for m in self.channel_mult):
            raise ValueError(
                f"UNetConfig.channel_mult must be a non-empty tuple of ints >= 1, got {self.channel_mult!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if type(self.learn_sigma) is not bool:
            raise ValueError(f"UNetConfig.learn_sigma must be a bool, got {self.learn_sigma!r}")
        if self.plane_layout not in PLANE_LAYOUTS:
            raise ValueError(f"UNetConfig.plane_layout must be one of {PLANE_LAYOUTS}, got {self.plane_layout!r}")
        if self.plane_layout == "channels" and self.aware_resolutions:
            raise ValueError(
                f"UNetConfig.aware_resolutions={self.aware_resolutions!r} needs plane_layout='rollout': the 3D-aware "
                "convolution works on three separate planes; set aware_resolutions to [] for plane_layout='channels'"
            )
        downsamplings = len(self.channel_mult) - 1
        if self.image_size % 2**downsamplings != 0:
            raise ValueError(
                f"UNetConfig.image_size={self.image_size} must be divisible by 2^{downsamplings} "
                f"(one halving between each of the {len(self.channel_mult)} levels of channel_mult)"
            )
        levels = self.resolutions()
        for name in ("attention_resolutions", "aware_resolutions"):
            unknown = sorted(set(getattr(self, name)) - set(levels))
            if unknown:
                raise ValueError(
                    f"UNetConfig.{name}={getattr(self, name)!r} names plane sizes {unknown} that no level has; "
                    f"the levels of image_size={self.image_size} are {levels}"
                )
        for level, mult in enumerate(self.channel_mult):
            width = self.model_channels * mult
            if levels[level] in self.attention_resolutions and width % self.num_head_channels != 0:
                raise ValueError(
                    f"UNetConfig.num_head_channels={self.num_head_channels} must divide the width {width} "
                    f"of attention level {levels[level]}"
                )
        return self


class TriplaneUNet(nn.Module):
    """Denoiser of rolled tri-planes: (x_t (B, C, H, 3W), t, z, low_res) -> prediction (B, C_out, H, 3W)."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        emb_channels = 4 * cfg.model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(cfg.model_channels, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels)
        )
        self.latent_proj = nn.Linear(cfg.latent_dim, emb_channels) if cfg.latent_dim > 0 else None

        def res_block(channels: int, out_channels: int, size: int) -> ResBlock:
            return ResBlock(channels, emb_channels, out_channels, cfg.dropout, aware=size in cfg.aware_resolutions)

        self.stacked = cfg.plane_layout == "channels"
        planes_per_map = 3 if self.stacked else 1  # planes whose channels one map of the network holds
        levels = cfg.resolutions()
        channels = cfg.model_channels * cfg.channel_mult[0]
        self.input_blocks = nn.ModuleList([EmbedSequential(
            PlaneConv2d(planes_per_map * (cfg.in_channels + cfg.cond_channels), channels, 3, padding=1))])
        skip_channels = [channels]
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res_block(channels, cfg.model_channels * mult, levels[level])]
                channels = cfg.model_channels * mult
                if levels[level] in cfg.attention_resolutions:
                    layers.append(AttentionBlock(channels, cfg.num_head_channels))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_channels.append(channels)
            if level < len(cfg.channel_mult) - 1:
                self.input_blocks.append(EmbedSequential(Downsample(channels)))
                skip_channels.append(channels)

        lowest = levels[-1]
        middle: list[nn.Module] = [res_block(channels, channels, lowest)]
        if lowest in cfg.attention_resolutions:
            middle.append(AttentionBlock(channels, cfg.num_head_channels))
        middle.append(res_block(channels, channels, lowest))
        self.middle_block = EmbedSequential(*middle)

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for index in range(cfg.num_res_blocks + 1):
                layers = [res_block(channels + skip_channels.pop(), cfg.model_channels * mult, levels[level])]
                channels = cfg.model_channels * mult
                if levels[level] in cfg.attention_resolutions:
                    layers.append(AttentionBlock(channels, cfg.num_head_channels))
                if level > 0 and index == cfg.num_res_blocks:
                    layers.append(Upsample(channels))
                self.output_blocks.append(EmbedSequential(*layers))

        self.out_norm = TriplaneGroupNorm(channels)
        self.out_channels = cfg.out_channels * (2 if cfg.learn_sigma else 1)
        self.out_conv = zero_module(PlaneConv2d(channels, planes_per_map * self.out_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, z: Tensor | None = None, low_res: Tensor | None = None) -> Tensor:
        """x (B, in_channels, H, 3H) rolled, t (B,) timesteps, z (B, latent_dim) or None (= zeros),
        low_res (B, cond_channels, h, 3h) rolled -> (B, out_channels * (2 if learn_sigma else 1), H, 3H)."""
        self._check_inputs(x, t, z, low_res)
        batch = x.shape[0]
        planes = roll_in(x)  # (B, 3, C_in, H, H)
        if low_res is not None:
            size = self.cfg.image_size
            low = roll_in(low_res).flatten(0, 1)  # (B*3, C_cond, h, h)
            low = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)  # (B*3, C_cond, H, H)
            low = low.unflatten(0, (batch, 3)).to(planes.dtype)  # (B, 3, C_cond, H, H)
            planes = torch.cat([planes, low], dim=2)  # (B, 3, C_in + C_cond, H, H)

        emb = self.time_embed(timestep_embedding(t, self.cfg.model_channels).to(x.dtype))  # (B, E)
        if self.latent_proj is not None:
            latent = z if z is not None else x.new_zeros(batch, self.cfg.latent_dim)
            emb = emb + self.latent_proj(latent)  # (B, E)

        h = stack_channels(planes)[:, None] if self.stacked else planes  # (B, 1, 3C', H, H) or (B, 3, C', H, H)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=2), emb)  # (B, 3, C + C_skip, H', H') in
        out = self.out_conv(F.silu(self.out_norm(h)))  # (B, 3, C_out, H, H) or (B, 1, 3 C_out, H, H)
        if self.stacked:
            out = unstack_channels(out[:, 0])  # (B, 3, C_out, H, H)
        return roll_out(out)  # (B, C_out, H, 3H)

    def _check_inputs(self, x: Tensor, t: Tensor, z: Tensor | None, low_res: Tensor | None) -> None:
        cfg = self.cfg
        size = cfg.image_size
        expected = (cfg.in_channels, size, 3 * size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must be a rolled tri-plane (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        batch = x.shape[0]
        if tuple(t.shape) != (batch,):
            raise ValueError(f"t must be timesteps of shape ({batch},), got {tuple(t.shape)}")
        if z is not None:
            if cfg.latent_dim == 0:
                raise ValueError(f"this U-Net has latent_dim=0 and takes no z, got z of shape {tuple(z.shape)}")
            if tuple(z.shape) != (batch, cfg.latent_dim):
                raise ValueError(f"z must be ({batch}, {cfg.latent_dim}), got {tuple(z.shape)}")
        if cfg.cond_channels == 0:
            if low_res is not None:
                raise ValueError(f"this U-Net has cond_channels=0 and takes no low_res, got {tuple(low_res.shape)}")
            return
        if low_res is None:
            raise ValueError(f"this U-Net is conditioned on a low-res tri-plane (B, {cfg.cond_channels}, h, 3h): "
                             "pass low_res")
        if (low_res.dim() != 4 or low_res.shape[0] != batch or low_res.shape[1] != cfg.cond_channels
                or low_res.shape[3] != 3 * low_res.shape[2]):
            raise ValueError(
                f"low_res must be a rolled tri-plane ({batch}, {cfg.cond_channels}, h, 3h), got {tuple(low_res.shape)}"
            )
