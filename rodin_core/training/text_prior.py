"""Training of the text prior: z from a text embedding (appendix B.5, DALL-E 2's prior).

The data are pairs (c_k, z_k): c_k (E,) the text embedding of a caption variant of a training
subject, z_k (D,) the latent the base model was conditioned on for that subject's frontal view
(:mod:`rodin_core.training.text_pairs`). The denoiser is the latent prior's residual MLP with a text
input (:class:`~rodin_core.networks.latent_mlp.TextLatentMLPConfig`); it predicts ε of the
standardised z_n = (z − μ) / s (as the latent prior, :mod:`rodin_core.training.prior`) with the simple
loss, and each sample's text is replaced by zeros with probability ``text_prior.text_drop`` so that
the same network also predicts unconditionally (classifier-free guidance).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from rodin_core.config import RodinConfig
from rodin_core.networks import LatentMLP
from rodin_core.networks.latent_normalizer import LatentNormalizer
from rodin_core.stage_specs import TEXT_PRIOR
from rodin_core.training.optimisation import step_generator
from rodin_core.training.prior import latent_batches
from rodin_core.training.stage import DiffusionStage


@dataclass(frozen=True)
class TextLatentBatch:
    """Matched rows: text embeddings (B, E) and the latents z (B, D) they describe."""

    text: Tensor
    z: Tensor


def text_latent_batches(text: Tensor, z: Tensor, batch_size: int, seed: int = 0, rank: int = 0,
                        world_size: int = 1) -> Iterator[TextLatentBatch]:
    """Endless batches of this rank's pairs ``(text[k], z[k])``, as :func:`~rodin_core.training.prior.latent_batches`
    draws rows."""
    if text.dim() != 2 or z.dim() != 2 or text.shape[0] != z.shape[0]:
        raise ValueError(f"text (N, E) and z (N, D) must have one row per pair, got {tuple(text.shape)} and "
                         f"{tuple(z.shape)}")
    width = text.shape[1]
    for rows in latent_batches(torch.cat([text, z], dim=1), batch_size, seed, rank, world_size):  # (B, E + D)
        yield TextLatentBatch(rows[:, :width], rows[:, width:])


class TextPriorStage(DiffusionStage):
    """The text prior stage: ``model`` (LatentMLP with a text input), ``ema`` and ``latent_norm`` (fitted on ``z``)."""

    name = TEXT_PRIOR

    def __init__(self, cfg: RodinConfig, z: Tensor, device: torch.device | str = "cpu", *, rank: int = 0) -> None:
        super().__init__(cfg, device, rank, lambda: LatentMLP(cfg.text_prior.mlp))
        self.mlp_cfg = cfg.text_prior.mlp
        self.text_drop = cfg.text_prior.text_drop
        self.latent_norm = LatentNormalizer(self.mlp_cfg.latent_dim).to(self.device).fit(z)
        self.optimise({"model": self.model}, kept={"latent_norm": self.latent_norm})

    def train_step(self, batch: TextLatentBatch, step: int) -> dict[str, float]:
        """One AdamW step on matched text embeddings and raw latents; returns loss, mse, lr, grad_norm."""
        if not isinstance(batch, TextLatentBatch):
            raise TypeError(f"the text prior trains on TextLatentBatch (text, z), got {type(batch).__name__}")
        text_dim, latent_dim = self.mlp_cfg.text_dim, self.mlp_cfg.latent_dim
        if batch.text.shape[1:] != (text_dim,) or batch.z.shape[1:] != (latent_dim,):
            raise ValueError(f"the text prior trains on text ({text_dim},) and z ({latent_dim},) rows, got "
                             f"{tuple(batch.text.shape)} and {tuple(batch.z.shape)}")
        generator = step_generator(self.train_cfg.seed, self.rank, step, self.device)
        self.model.train()
        z0 = self.latent_norm.normalize(batch.z.to(self.device, torch.float32))  # (B, D)
        text = batch.text.to(self.device, torch.float32)  # (B, E)
        keep = torch.rand(text.shape[0], generator=generator, device=self.device) >= self.text_drop  # (B,)
        text = text * keep[:, None].to(text.dtype)  # dropped rows: zeros, the null text
        t = torch.randint(0, self.diffusion.num_timesteps, (z0.shape[0],), generator=generator, device=self.device)
        noise = torch.randn(z0.shape, generator=generator, device=self.device)  # (B, D)
        terms = self.diffusion.training_losses(self._forward, z0, t, noise=noise, model_kwargs={"text": text})
        loss = terms["loss"].mean()
        update = self.optimisation.step(loss, step, terms, self.name)
        return {"loss": loss.item(), "mse": terms["mse"].mean().item(), **update}
