"""The pipeline's configuration: one section per stage, each nesting the configs of the classes it builds.

Defaults are the paper's numbers (§4.1, appendix B.1, B.2, B.4): the base U-Net with 192 channels
and attention at 8, 16 and 32 on 64^2 tri-planes, a 1,000-step linear schedule sampled in 100
steps, AdamW at 5e-5 with batch 48 and EMA 0.9999, 20% classifier-free-guidance dropout (§3.2);
the upsampler predicting x_0 with batch 16 (§3.3); the latent prior, a 20 x 2,048 residual MLP at
batch 96 and learning rate 4e-5 (appendix B.4).

A stage section holds its network's config (:class:`~rodin_core.networks.unet.UNetConfig`,
:class:`~rodin_core.networks.latent_mlp.LatentMLPConfig`), its
:class:`~rodin_core.diffusion.config.DiffusionConfig` and its :class:`TrainConfig`; the fields
another section determines are filled by :mod:`rodin_core.config.derived`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rodin_core.config.corpus import CorpusConfig, RenderConfig
from rodin_core.config.derived import derive, derived_note
from rodin_core.config.fit import FitConfig
from rodin_core.config.keys import merge
from rodin_core.config.preset_names import PRESETS
from rodin_core.config.text_embedding import TextEmbeddingSection
from rodin_core.config.text_prior import TextPriorSection
from rodin_core.config.train import TrainConfig
from rodin_core.config_dict import ConfigError, check_component, check_range
from rodin_core.diffusion.config import DiffusionConfig
from rodin_core.encoders import EncoderConfig
from rodin_core.networks.latent_mlp import LatentMLPConfig
from rodin_core.networks.unet import UNetConfig
from rodin_core.triplane.config import TriplaneConfig


def _x0_simple() -> DiffusionConfig:
    return DiffusionConfig(mean_type="x0", var_type="fixed_small", loss="simple")


def _eps_simple() -> DiffusionConfig:
    return DiffusionConfig(mean_type="eps", var_type="fixed_small", loss="simple")


def _check_stage(where: str, network: str, section: Any) -> None:
    """Check the network config (field ``network``), the diffusion and the train config of a stage section."""
    check_component(f"{where}.{network}", getattr(section, network), derived_note(f"{where}.{network}"))
    check_component(f"{where}.diffusion", section.diffusion)
    section.train.validate(f"{where}.train")


@dataclass
class BaseStageConfig:
    """The latent-conditioned base diffusion model at the lowest resolution (§3.2, appendix B.1)."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    """The U-Net (paper: 192 channels, attention at 8, 16, 32, 3D-aware convolution at 64 and 32, roll-out layout); its
    channels, latent_dim, image_size and learn_sigma are derived."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    """ε prediction, learned-range variance and the hybrid loss (§3.2); 1,000 linear steps, 100 to sample."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation (paper: AdamW 5e-5, batch 48, EMA 0.9999)."""
    cfg_drop: float = 0.2
    """Probability of zeroing z in a training sample (classifier-free guidance, §3.2: 20%)."""
    guidance_scale: float = 3.0
    """Default CFG scale λ of Eq. 3 when sampling."""
    latent_conditioning: bool = True
    """Condition the U-Net on z from the frontal view (§3.2); false: an unconditional model with no encoder, the
    baseline of Table 2 (``unet.latent_dim`` becomes 0; ``cfg_drop`` and ``guidance_scale`` are then unused)."""
    latent_noise: float = 0.0
    """Largest std of the Gaussian noise added to each training z before it is brought back to the sphere of radius
    sqrt(D), in units of z's per-dimension RMS, drawn per sample in [0, latent_noise]
    (:func:`rodin_core.training.augment.noisy_latents`); 0: z as encoded (the paper's)."""

    def validate(self, where: str = "base") -> None:
        """Raise :class:`ConfigError` naming the first bad key, its value and the valid range."""
        if type(self.latent_conditioning) is not bool:
            raise ConfigError(f"bad value for {where}.latent_conditioning: {self.latent_conditioning!r} is not a "
                              "bool; set true or false")
        _check_stage(where, "unet", self)
        check_range(f"{where}.cfg_drop", self.cfg_drop, low=0.0, high=1.0)
        check_range(f"{where}.latent_noise", self.latent_noise, low=0.0, high=10.0)
        check_range(f"{where}.guidance_scale", self.guidance_scale, low=0.0)


@dataclass
class UpsamplerStageConfig:
    """The diffusion upsampler from the base resolution to the full tri-plane (§3.3, appendix B.1)."""

    unet: UNetConfig = field(default_factory=lambda: UNetConfig(attention_resolutions=(32,),
                                                                aware_resolutions=(256, 128), image_size=256))
    """The U-Net (paper: attention at 32, 3D-aware convolution at 256 and 128); its channels, latent_dim,
    cond_channels, image_size and learn_sigma are derived (image_size=256 keeps this default valid alone)."""
    diffusion: DiffusionConfig = field(default_factory=_x0_simple)
    """x_0 prediction, fixed-small variance and the simple loss (§3.3); 1,000 linear steps, 100 to sample."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=16))
    """Optimisation (paper: batch 16)."""
    perceptual_weight: float = 1.0
    """Weight of the image-level perceptual loss of Eq. 4."""
    patch_size: int = 112
    """Side of the random image patches rendered for the perceptual loss (paper: 112 at 256 px)."""
    face_patch_prob: float = 0.5
    """Probability that a patch is centred on the subject's foreground rather than anywhere."""
    aug_blur_sigma: float = 1.0
    """Largest Gaussian-blur sigma (in low-resolution pixels) of the condition augmentation."""
    aug_noise_std: float = 0.1
    """Largest Gaussian noise std of the condition augmentation (normalised units)."""
    residual: bool = False
    """Diffuse the scaled difference to the bilinear up-sample of the condition instead of the tri-plane itself
    (:mod:`rodin_core.triplane.residual`); False is the paper's direct x_0 (§3.3)."""
    residual_scale: float = 1.0
    """s of the residual parameterisation: the residual is multiplied by s before it is diffused (about the
    inverse of its standard deviation in normalised units)."""

    def validate(self, where: str = "upsampler") -> None:
        """Raise :class:`ConfigError` naming the first bad key, its value and the valid range."""
        _check_stage(where, "unet", self)
        for name in ("perceptual_weight", "aug_blur_sigma", "aug_noise_std"):
            check_range(f"{where}.{name}", getattr(self, name), low=0.0)
        check_range(f"{where}.patch_size", self.patch_size, low=4)
        check_range(f"{where}.residual_scale", self.residual_scale, low=1e-6)
        check_range(f"{where}.face_patch_prob", self.face_patch_prob, low=0.0, high=1.0)


@dataclass
class PriorStageConfig:
    """The latent diffusion prior over z, a residual MLP denoiser (appendix B.4)."""

    mlp: LatentMLPConfig = field(default_factory=LatentMLPConfig)
    """The denoiser (paper: 20 layers x 2,048); its latent_dim and learn_sigma are derived."""
    diffusion: DiffusionConfig = field(default_factory=_eps_simple)
    """ε prediction, fixed-small variance and the simple loss; 1,000 linear steps, 100 to sample."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=96, lr=4e-5))
    """Optimisation (paper: batch 96, lr 4e-5)."""

    def validate(self, where: str = "prior") -> None:
        """Raise :class:`ConfigError` naming the first bad key, its value and the valid range."""
        _check_stage(where, "mlp", self)


@dataclass
class RodinConfig:
    """The whole pipeline's configuration: one section per stage."""

    preset: str = "paper"
    """Name of the preset this config started from."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """The synthetic subjects and their shards (§4.1)."""
    render: RenderConfig = field(default_factory=RenderConfig)
    """Multi-view rendering of each subject (appendix B.2)."""
    triplane: TriplaneConfig = field(default_factory=TriplaneConfig)
    """The tri-plane and its shared decoder (§3.1)."""
    fit: FitConfig = field(default_factory=FitConfig)
    """Tri-plane fitting (appendix B.2)."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """The frontal-view encoder that gives z (§3.2)."""
    base: BaseStageConfig = field(default_factory=BaseStageConfig)
    """The base diffusion model (§3.2)."""
    upsampler: UpsamplerStageConfig = field(default_factory=UpsamplerStageConfig)
    """The diffusion upsampler (§3.3)."""
    prior: PriorStageConfig = field(default_factory=PriorStageConfig)
    """The latent prior (appendix B.4)."""
    text_embedding: TextEmbeddingSection = field(default_factory=TextEmbeddingSection)
    """The avatar-CLIP text-image embedding (§4.5, B.3, B.5)."""
    text_prior: TextPriorSection = field(default_factory=TextPriorSection)
    """The text prior: z from a text embedding (appendix B.5)."""

    def __post_init__(self) -> None:
        derive(self, {})

    def validate(self, given: Mapping[str, Any] | None = None) -> RodinConfig:
        """Fill the derived fields, check them against ``given`` (dotted key -> value a user set), then
        check every section; raise :class:`ConfigError` naming the first bad key. Returns self."""
        if self.preset not in PRESETS:
            raise ConfigError(f"preset={self.preset!r} is not a preset; choose one of {PRESETS}")
        derive(self, given or {})
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        """Every section as nested JSON-ready dicts (the inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as strict JSON (no NaN or infinity) with sorted keys."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RodinConfig:
        """Rebuild a config saved by :meth:`to_dict`; keys left out keep the paper's defaults, unknown keys
        and derived fields that disagree with their source raise :class:`ConfigError`."""
        cfg = cls(preset=str(data.get("preset", "paper")))
        given: dict[str, Any] = {}
        merge(cfg, {k: v for k, v in data.items() if k != "preset"}, "", given)
        return cfg.validate(given)
