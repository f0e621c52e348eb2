"""Training of the latent diffusion prior for unconditional sampling (paper §3.2 last paragraph, appendix B.4).

Unconditional generation draws z first, from a diffusion model over the latents of the training
subjects: a residual MLP (paper: 20 layers, 2,048 hidden channels, after the latent DDIM of
Preechakul et al. 2022) predicting ε with the simple loss over a 1,000-step linear schedule, AdamW
(batch 96, lr 4e-5) and EMA 0.9999.

The latents are those the base model was conditioned on: frozen-CLIP embeddings, or the trained
base's learned encoder applied to every subject's frontal view (:func:`encode_latents`). Their scale
is whatever the encoder produces, so the prior diffuses standardised latents

    z_n = (z − μ) / s,   μ (D,) the per-dimension mean, s the RMS over all dimensions of z − μ,

with one scalar s rather than a per-dimension std: it stays well defined with fewer subjects than
dimensions and keeps the relative geometry of z (directions used for text edits, appendix B.3).
μ and s live in the ``latent_norm`` module, so they are saved and restored with the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from rodin_core.config import RodinConfig
from rodin_core.datasets.triplanes import TriplaneBatch
from rodin_core.networks import LatentMLP
from rodin_core.networks.latent_normalizer import LatentNormalizer
from rodin_core.training.optimisation import (
    step_generator,
)
from rodin_core.training.stage import DiffusionStage


def latent_batches(latents: Tensor, batch_size: int, seed: int = 0, rank: int = 0,
                   world_size: int = 1) -> Iterator[Tensor]:
    """Endless batches (B, D) of this rank's rows ``latents[rank::world_size]``, reshuffled each epoch
    with ``seed + epoch``; the last partial batch of an epoch is dropped unless it is the only one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    rows = latents[rank::world_size]  # (N_r, D)
    if rows.shape[0] == 0:
        raise ValueError(f"rank {rank} of {world_size} gets no latents out of {latents.shape[0]}; use fewer workers")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    epoch = 0
    while True:
        order = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(seed + epoch))
        full = max(1, rows.shape[0] // batch_size)
        for index in range(full):
            yield rows[order[index * batch_size:(index + 1) * batch_size]]  # (B, D)
        epoch += 1


@torch.no_grad()
def encode_latents(encoder: nn.Module, batches: Iterable[TriplaneBatch],
                   device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Subject ids (N,) and latents (N, D) of a finite stream of batches through a frozen ``encoder``
    (e.g. the trained base's ``encoder_ema``); a subject seen twice is kept once."""
    encoder = encoder.to(device).eval()
    seen: dict[int, Tensor] = {}
    for batch in batches:
        z = encoder(batch.frontal.to(device)).float().cpu()  # (B, D)
        for subject, latent in zip(batch.subject_ids.tolist(), z, strict=True):
            seen.setdefault(int(subject), latent)
    if not seen:
        raise ValueError("encode_latents got no batches; pass one epoch of the training subjects")
    ids = sorted(seen)
    return torch.tensor(ids, dtype=torch.int64), torch.stack([seen[s] for s in ids])  # (N,), (N, D)


class PriorStage(DiffusionStage):
    """The prior stage: ``model`` (LatentMLP), ``ema`` and ``latent_norm`` (fitted on ``latents``)."""

    name = "prior"

    def __init__(self, cfg: RodinConfig, latents: Tensor, device: torch.device | str = "cpu", *,
                 rank: int = 0) -> None:
        super().__init__(cfg, device, rank, lambda: LatentMLP(cfg.prior.mlp))
        self.mlp_cfg = cfg.prior.mlp
        self.latent_norm = LatentNormalizer(self.mlp_cfg.latent_dim).to(self.device).fit(latents)
        self.optimise({"model": self.model}, kept={"latent_norm": self.latent_norm})

    def train_step(self, batch: Tensor, step: int) -> dict[str, float]:
        """One AdamW step on raw latents (B, D); returns loss, mse, lr, grad_norm."""
        if not isinstance(batch, Tensor) or batch.dim() != 2 or batch.shape[1] != self.mlp_cfg.latent_dim:
            shown = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
            raise ValueError(f"the prior stage trains on latents (B, {self.mlp_cfg.latent_dim}), got {shown}")
        generator = step_generator(self.train_cfg.seed, self.rank, step, self.device)
        self.model.train()
        z0 = self.latent_norm.normalize(batch.to(self.device, torch.float32))  # (B, D)
        t = torch.randint(0, self.diffusion.num_timesteps, (z0.shape[0],), generator=generator, device=self.device)
        noise = torch.randn(z0.shape, generator=generator, device=self.device)  # (B, D)
        terms = self.diffusion.training_losses(self._forward, z0, t, noise=noise)
        loss = terms["loss"].mean()
        update = self.optimisation.step(loss, step, terms, self.name)
        return {"loss": loss.item(), "mse": terms["mse"].mean().item(), **update}
