"""Training of the latent-conditioned base diffusion model (paper §3.2, Eq. 2-3; appendix B.1).

The base model generates the rolled-out tri-plane at the base resolution h = ``triplane.rescale_min``
(paper: 64). One step:

    x_0 = roll_out(down_h(normalize(planes)))                 (B, C, h, 3h)   §3.2 roll-out
    z   = E(frontal) · keep,  keep_i ~ Bernoulli(1 - cfg_drop) (B, D)          §3.2 latent, CFG drop 20%
    z   = sphere(z + s·ε), s ~ U(0, latent_noise)              (B, D)          only with base.latent_noise > 0
    L   = L_simple(ε) + λ L_vlb                                               §3.2 hybrid loss (Eq. 2 + [41])

ε is predicted by the tri-plane U-Net with AdaGN latent conditioning; its learned-range variance is
trained by the λ·L_vlb term only (Nichol & Dhariwal 2021). z comes from the subject's frontal view:
with ``encoder.kind = learned`` the image encoder is trained jointly, in the same AdamW, with its own
EMA (the autoencoder reading of §3.2); with ``clip`` it is frozen and z is cached per subject id.
Dropped samples get z = 0 (``keep`` multiplies z), the unconditional branch of classifier-free
guidance (Eq. 3). The random draws of a step come from :func:`~.stages.step_generator` in the
order: keep mask, timesteps, noise, then the latent noise of ``base.latent_noise`` (condition augmentation of z,
:func:`~rodin_core.training.augment.noisy_latents`; the paper has none, so its draws come last and a model without
it trains exactly as before). With ``base.latent_conditioning`` false (the baseline of Table 2)
there is no encoder and no z; the keep mask is still drawn, so that the timesteps and noise of every
step are those of the conditioned model with the same seed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rodin_core.config import RodinConfig
from rodin_core.datasets.triplanes import TriplaneBatch
from rodin_core.encoders import build_encoder
from rodin_core.networks import TriplaneUNet
from rodin_core.training.augment import noisy_latents
from rodin_core.training.optimisation import (
    seeded_init,
)
from rodin_core.training.stage import DiffusionStage
from rodin_core.triplane.rescale import downsample_planes
from rodin_core.triplane.rollout import roll_out
from rodin_core.triplane.stats import PlaneStats


def cfg_dropout_mask(batch: int, drop_prob: float, generator: torch.Generator) -> Tensor:
    """Which samples keep their latent: (B,) bool, each False with probability ``drop_prob`` (§3.2)."""
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"cfg drop probability must be in [0, 1], got {drop_prob!r} (base.cfg_drop)")
    return torch.rand(batch, generator=generator, device=generator.device) >= drop_prob  # (B,)


class BaseStage(DiffusionStage):
    """The base stage: ``model`` (TriplaneUNet), ``ema``, and ``encoder``/``encoder_ema`` when learned (``encoder`` is
    None without latent conditioning)."""

    name = "base"

    def __init__(self, cfg: RodinConfig, stats: PlaneStats, device: torch.device | str = "cpu", *,
                 rank: int = 0) -> None:
        super().__init__(cfg, device, rank, lambda: TriplaneUNet(cfg.base.unet), stats)
        self.unet_cfg = cfg.base.unet
        self._latent_cache: dict[int, Tensor] = {}
        self.encoder: nn.Module | None = None
        self.learned_encoder = False
        if not cfg.base.latent_conditioning:
            self.optimise({"model": self.model})
            return
        self.encoder = seeded_init(self.train_cfg.seed + 1, lambda: build_encoder(cfg.encoder, self.device)).to(
            self.device)
        self.learned_encoder = bool(getattr(self.encoder, "trainable", False))
        if self.learned_encoder:
            self.optimise({"model": self.model, "encoder": self.encoder})
        else:
            self.encoder.eval().requires_grad_(False)
            self.optimise({"model": self.model})

    def targets(self, planes: Tensor) -> Tensor:
        """Raw planes (B, 3, C, H, W) -> the diffusion data x_0, rolled at the base resolution (B, C, h, 3h)."""
        low = downsample_planes(self.stats.normalize(planes), self.cfg.triplane.rescale_min)  # (B, 3, C, h, h)
        return roll_out(low)  # (B, C, h, 3h)

    def encode(self, frontal: Tensor, subject_ids: Tensor | None = None) -> Tensor:
        """z (B, D) of frontal views (B, 4, Hi, Wi): through the learned encoder (with gradient), or the
        frozen one with a per-subject cache when ``subject_ids`` (B,) are given."""
        if self.encoder is None:
            raise ValueError("this base model has no latent conditioning (base.latent_conditioning=false), so it "
                             "encodes no frontal views; set base.latent_conditioning=true to condition it on z")
        if self.learned_encoder:
            return self.encoder(frontal)  # (B, D)
        if subject_ids is None:
            with torch.no_grad():
                return self.encoder(frontal).float()  # (B, D)
        ids = [int(s) for s in subject_ids.tolist()]
        todo = [i for i, s in enumerate(ids) if s not in self._latent_cache]
        if todo:
            with torch.no_grad():
                fresh = self.encoder(frontal[todo]).float().cpu()  # (b, D)
            for index, latent in zip(todo, fresh, strict=True):
                self._latent_cache[ids[index]] = latent
        return torch.stack([self._latent_cache[s] for s in ids]).to(self.device)  # (B, D)

    def train_step(self, batch: TriplaneBatch, step: int) -> dict[str, float]:
        """One AdamW step on a batch of subjects; returns loss, mse, vb (hybrid loss only), cfg_kept (with latent
        conditioning), lr, grad_norm."""
        batch, generator = self.start_step(batch, step)
        if self.learned_encoder:
            self.encoder.train()
        x0 = self.targets(batch.planes)  # (B, C, h, 3h)
        size = x0.shape[0]
        keep = cfg_dropout_mask(size, self.cfg.base.cfg_drop, generator)  # (B,)
        z = None
        if self.encoder is not None:
            z = self.encode(batch.frontal, batch.subject_ids) * keep[:, None].to(x0.dtype)  # (B, D)
        t = torch.randint(0, self.diffusion.num_timesteps, (size,), generator=generator, device=self.device)
        noise = torch.randn(x0.shape, generator=generator, device=self.device)  # (B, C, h, 3h)
        if z is not None and self.cfg.base.latent_noise > 0:
            z = noisy_latents(z, self.cfg.base.latent_noise, generator)  # (B, D), CFG-dropped rows stay 0
        terms = self.diffusion.training_losses(self._forward, x0, t, noise=noise, model_kwargs={"z": z})
        loss = terms["loss"].mean()
        update = self.optimisation.step(loss, step, terms, self.name)
        vb = {"vb": terms["vb"].mean().item()} if "vb" in terms else {}  # the hybrid loss's L_vlb term
        kept = {"cfg_kept": float(keep.float().mean())} if z is not None else {}
        return {"loss": loss.item(), "mse": terms["mse"].mean().item(), **vb, **kept, **update}
