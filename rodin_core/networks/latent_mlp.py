"""The latent diffusion denoiser for unconditional sampling (paper §3.2 last paragraph, appendix B.4).

Unconditional generation first samples the conditioning latent z in R^512 with a second diffusion
model, a deep MLP (paper: 20 layers, 2048 hidden channels, after the latent DDIM of Preechakul et
al. 2022, "Diffusion Autoencoders"). Here:

    h = W_in z_t
    h = h + W_k SiLU(LN(h) + E_k(emb))      for k = 1 .. depth   (residual blocks)
    out = W_out SiLU(LN(h))                  (W_out zero-initialised)

with emb the MLP of the sinusoidal timestep embedding (as in the U-Net) injected into every block
by its own linear layer E_k, as DDPM's residual blocks add the timestep (Ho et al. 2020).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from rodin_core.config_dict import DictConfig
from rodin_core.networks.blocks import timestep_embedding, zero_module


@dataclass
class LatentMLPConfig(DictConfig):
    """Shape of a :class:`LatentMLP`; the defaults are the paper's (appendix B.4)."""

    latent_dim: int = 512
    """Size D of the latent z it denoises (paper: 512)."""
    width: int = 2048
    """Hidden channels of the residual blocks (paper: 2048)."""
    depth: int = 20
    """Number of residual blocks (paper: a 20-layer MLP)."""
    time_embed_dim: int = 512
    """Size of the timestep embedding each block reads."""
    learn_sigma: bool = False
    """Also predict the variance interpolation: doubles the output to 2D."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> LatentMLPConfig:
        """Raise ``ValueError`` naming the first invalid field and its value; return self."""
        for name, low in (("latent_dim", 1), ("width", 1), ("depth", 1), ("time_embed_dim", 2)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"LatentMLPConfig.{name} must be an int >= {low}, got {value!r}")
        if type(self.learn_sigma) is not bool:
            raise ValueError(f"LatentMLPConfig.learn_sigma must be a bool, got {self.learn_sigma!r}")
        return self


class LatentMLPBlock(nn.Module):
    """h + W SiLU(LN(h) + E(emb)): one residual block of :class:`LatentMLP`."""

    def __init__(self, width: int, emb_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.emb_proj = nn.Linear(emb_dim, width)
        self.linear = nn.Linear(width, width)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        """h (B, width), emb (B, emb_dim) -> (B, width)."""
        return h + self.linear(F.silu(self.norm(h) + self.emb_proj(emb)))


class LatentMLP(nn.Module):
    """Denoiser of latents: (z_t (B, D), t (B,)) -> (B, D * (2 if learn_sigma else 1))."""

    def __init__(self, cfg: LatentMLPConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        self.time_embed = nn.Sequential(
            nn.Linear(cfg.time_embed_dim, cfg.time_embed_dim), nn.SiLU(),
            nn.Linear(cfg.time_embed_dim, cfg.time_embed_dim), nn.SiLU(),
        )
        self.in_proj = nn.Linear(cfg.latent_dim, cfg.width)
        self.blocks = nn.ModuleList(LatentMLPBlock(cfg.width, cfg.time_embed_dim) for _ in range(cfg.depth))
        self.out_norm = nn.LayerNorm(cfg.width)
        self.out_dim = cfg.latent_dim * (2 if cfg.learn_sigma else 1)
        self.out_proj = zero_module(nn.Linear(cfg.width, self.out_dim))

    def forward(self, z_t: Tensor, t: Tensor) -> Tensor:
        """z_t (B, D), t (B,) integer or fractional timesteps -> (B, D) or (B, 2D) with learn_sigma."""
        if z_t.dim() != 2 or z_t.shape[1] != self.cfg.latent_dim:
            raise ValueError(f"z_t must be (B, {self.cfg.latent_dim}), got {tuple(z_t.shape)}")
        if tuple(t.shape) != (z_t.shape[0],):
            raise ValueError(f"t must be timesteps of shape ({z_t.shape[0]},), got {tuple(t.shape)}")
        emb = self.time_embed(timestep_embedding(t, self.cfg.time_embed_dim).to(z_t.dtype))  # (B, E)
        h = self.in_proj(z_t)  # (B, width)
        for block in self.blocks:
            h = block(h, emb)
        return self.out_proj(F.silu(self.out_norm(h)))  # (B, D or 2D)
