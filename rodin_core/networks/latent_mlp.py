"""The latent diffusion denoiser for unconditional sampling (paper §3.2 last paragraph, appendix B.4).

Unconditional generation first samples the conditioning latent z in R^512 with a second diffusion
model, a deep MLP (paper: 20 layers, 2048 hidden channels, after the latent DDIM of Preechakul et
al. 2022, "Diffusion Autoencoders"). Here:

    h = W_in z_t
    h = h + W_k SiLU(LN(h) + E_k(emb))      for k = 1 .. depth   (residual blocks)
    out = W_out SiLU(LN(h))                  (W_out zero-initialised)

with emb the MLP of the sinusoidal timestep embedding (as in the U-Net) injected into every block
by its own linear layer E_k, as DDPM's residual blocks add the timestep (Ho et al. 2020).

The text prior (appendix B.5, DALL-E 2's prior) is the same denoiser conditioned on a text embedding
c (E,): with a :class:`TextLatentMLPConfig`, ``emb = MLP(sinusoid(t)) + W_c c``. A dropped text is
c = 0, so W_c's bias is the learned null embedding of classifier-free guidance.
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


@dataclass
class TextLatentMLPConfig(LatentMLPConfig):
    """A :class:`LatentMLP` conditioned on a text embedding of ``text_dim`` values (appendix B.5)."""

    text_dim: int = 512
    """Size E of the text embedding added (through a linear map) to the timestep embedding."""

    def validate(self) -> TextLatentMLPConfig:
        """Raise ``ValueError`` naming the first invalid field and its value; return self."""
        super().validate()
        if not isinstance(self.text_dim, int) or isinstance(self.text_dim, bool) or self.text_dim < 1:
            raise ValueError(f"TextLatentMLPConfig.text_dim must be an int >= 1, got {self.text_dim!r}")
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
    """Denoiser of latents: (z_t (B, D), t (B,)[, text (B, E)]) -> (B, D * (2 if learn_sigma else 1)).

    ``text`` is read only when the config is a :class:`TextLatentMLPConfig` (``text_dim`` E > 0).
    """

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
        self.text_dim = cfg.text_dim if isinstance(cfg, TextLatentMLPConfig) else 0
        if self.text_dim:
            self.text_proj = nn.Linear(self.text_dim, cfg.time_embed_dim)

    def forward(self, z_t: Tensor, t: Tensor, text: Tensor | None = None) -> Tensor:
        """z_t (B, D), t (B,) integer or fractional timesteps, text (B, E) embeddings (rows of zeros, or None
        for all rows: no text) -> (B, D) or (B, 2D) with learn_sigma."""
        if z_t.dim() != 2 or z_t.shape[1] != self.cfg.latent_dim:
            raise ValueError(f"z_t must be (B, {self.cfg.latent_dim}), got {tuple(z_t.shape)}")
        if tuple(t.shape) != (z_t.shape[0],):
            raise ValueError(f"t must be timesteps of shape ({z_t.shape[0]},), got {tuple(t.shape)}")
        emb = self.time_embed(timestep_embedding(t, self.cfg.time_embed_dim).to(z_t.dtype))  # (B, T)
        if self.text_dim:
            text = z_t.new_zeros(z_t.shape[0], self.text_dim) if text is None else text
            if tuple(text.shape) != (z_t.shape[0], self.text_dim):
                raise ValueError(f"text must be embeddings ({z_t.shape[0]}, {self.text_dim}), got {tuple(text.shape)}")
            emb = emb + self.text_proj(text.to(emb.dtype))  # (B, T)
        elif text is not None:
            raise ValueError("this latent denoiser has no text input (text_dim 0); build it with a "
                             "TextLatentMLPConfig to condition it on text")
        h = self.in_proj(z_t)  # (B, width)
        for block in self.blocks:
            h = block(h, emb)
        return self.out_proj(F.silu(self.out_norm(h)))  # (B, D or 2D)
