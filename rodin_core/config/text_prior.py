"""The ``text_prior`` section: the text-conditioned diffusion prior over z (appendix B.5).

Like DALL-E 2's prior, a diffusion model generates the base model's latent z (D,) from a text
embedding (E,): avatar-CLIP's text tower with ``encoder.kind = avatar_clip``, CLIP's with
``encoder.kind = clip``. Both towers share the image tower's space, so E = D = ``encoder.latent_dim``
(derived). The denoiser is the latent prior's residual MLP (:mod:`rodin_core.networks.latent_mlp`)
with a text input; the text is dropped with probability ``text_drop`` while training, so that
sampling can use classifier-free guidance with scale ``guidance_scale``. Its data are (caption
variant, z) pairs of the training subjects: ``variants`` captions per subject, partial ones leaving
out each attribute with probability ``drop`` (:mod:`render.caption_variants`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rodin_core.config.derived import derived_note
from rodin_core.config.train import TrainConfig
from rodin_core.config_dict import check_component, check_range
from rodin_core.diffusion.config import DiffusionConfig
from rodin_core.networks.latent_mlp import TextLatentMLPConfig


def _eps_simple() -> DiffusionConfig:
    return DiffusionConfig(mean_type="eps", var_type="fixed_small", loss="simple")


@dataclass
class TextPriorSection:
    """The text prior: z from a text embedding (appendix B.5; paper: 1,000 linear steps, AdamW batch 96,
    lr 4e-5, EMA 0.9999)."""

    mlp: TextLatentMLPConfig = field(default_factory=TextLatentMLPConfig)
    """The denoiser (paper's prior: 20 layers x 2,048); its latent_dim, text_dim and learn_sigma are derived."""
    diffusion: DiffusionConfig = field(default_factory=_eps_simple)
    """ε prediction, fixed-small variance and the simple loss; 1,000 linear steps, 100 to sample."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=96, lr=4e-5))
    """Optimisation (paper: AdamW, batch 96, lr 4e-5, EMA 0.9999)."""
    text_drop: float = 0.1
    """Probability of dropping a training sample's text (classifier-free guidance)."""
    guidance_scale: float = 2.0
    """Default CFG scale when sampling z (0: unconditional, 1: conditional, > 1: stronger guidance)."""
    variants: int = 8
    """Caption variants per training subject (the first names every attribute)."""
    drop: float = 0.3
    """Probability that a partial variant leaves out an attribute."""
    seed: int = 0
    """Seed of the caption variants."""

    def validate(self, where: str = "text_prior") -> None:
        """Raise ConfigError naming the first bad key, its value and the valid range."""
        check_component(f"{where}.mlp", self.mlp, derived_note(f"{where}.mlp"))
        check_component(f"{where}.diffusion", self.diffusion)
        self.train.validate(f"{where}.train")
        check_range(f"{where}.text_drop", self.text_drop, low=0.0, high=1.0)
        check_range(f"{where}.guidance_scale", self.guidance_scale, low=0.0)
        check_range(f"{where}.variants", self.variants, low=1)
        check_range(f"{where}.drop", self.drop, low=0.0, high=0.99)
        check_range(f"{where}.seed", self.seed, low=0)
