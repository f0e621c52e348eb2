"""Dataclass configs with named presets (`tiny`, `small`, `paper`).

Every stage of the pipeline reads one section of :class:`RodinConfig`. A config is built from a
preset, then a YAML file, then ``section.field=value`` overrides from the command line, in that
order; every step is validated and an unknown key or a bad value raises :class:`ConfigError`
naming the key, the value and the valid choices.

The ``paper`` preset carries the numbers of the Rodin paper (§4.1, appendix B.2: 300 views per
subject at 256x256).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRESETS = ("tiny", "small", "paper")
ENCODER_KINDS = ("clip", "learned")
PRECISIONS = ("bf16", "fp16", "fp32")


class ConfigError(ValueError):
    """A config key or value is invalid; the message names it and the valid choices."""


@dataclass
class CorpusConfig:
    """Which synthetic subjects exist and how they are grouped into shards (paper §4.1)."""

    subjects: int = 100_000
    """Number of subjects in the corpus (paper: 100K)."""
    seed: int = 0
    """Corpus seed: (seed, subject id) determines an avatar completely."""
    shard_size: int = 100
    """Subjects per shard: the unit of work, retry and commit."""
    asset_dir: str | None = None
    """Optional asset-library folder (one sub-folder per category of .blend/.glb/.gltf files)."""
    holdout_subjects: int = 1000
    """Evaluation subjects (paper §4.5, appendix C.5 Table 4: 1K test subjects): the last ids of the corpus,
    ``subjects - holdout_subjects`` .. ``subjects - 1``, are rendered and fitted like every subject but never
    seen by diffusion training (base, upsampler, plane statistics, the prior's latents). 0 holds none out; at
    most ``subjects - 1`` are held out (:attr:`held_out_count`)."""

    def validate(self) -> None:
        _check_range("corpus.subjects", self.subjects, low=1)
        _check_range("corpus.seed", self.seed, low=0, high=2**31 - 1)
        _check_range("corpus.shard_size", self.shard_size, low=1)
        _check_range("corpus.holdout_subjects", self.holdout_subjects, low=0)

    @property
    def held_out_count(self) -> int:
        """Subjects actually held out: ``holdout_subjects``, but at most ``subjects - 1`` so that a corpus
        shrunk with ``--subjects`` keeps at least one training subject."""
        return min(self.holdout_subjects, self.subjects - 1)

    @property
    def first_held_out(self) -> int | None:
        """Smallest held-out subject id, ``subjects - holdout_subjects``; None when no subject is held out."""
        return self.subjects - self.held_out_count if self.held_out_count else None

    def held_out_ids(self) -> list[int]:
        """Ids of the held-out evaluation subjects, ascending (§4.5, appendix C.5)."""
        return list(range(self.subjects - self.held_out_count, self.subjects))

    def is_training_subject(self, subject_id: int) -> bool:
        """Whether diffusion training may read subject ``subject_id`` (it is not held out)."""
        return self.first_held_out is None or subject_id < self.first_held_out


@dataclass
class RenderConfig:
    """Multi-view rendering of each subject with Blender Cycles on CPU (paper appendix B.2)."""

    views: int = 300
    """Views per subject; view 0 is the frontal view (paper: 300)."""
    resolution: int = 256
    """Square image side in pixels (paper: 256)."""
    samples: int = 16
    """Cycles path-tracing samples per pixel (denoised afterwards)."""
    denoise: bool = True
    """Run Cycles' OpenImageDenoise pass (lets a low sample count reach high-sample quality)."""
    max_bounces: int = 4
    """Cycles total light bounces (diffuse/glossy/transmission capped below this)."""
    fov_deg: float = 30.0
    """Horizontal = vertical field of view of the fixed pinhole intrinsics, in degrees."""
    camera_radius: float = 4.0
    """Distance of every camera from the head centre (world units, avatar in [-1, 1]^3)."""
    elevation_min_deg: float = -25.0
    """Lowest camera elevation above the head's horizontal plane, degrees."""
    elevation_max_deg: float = 50.0
    """Highest camera elevation, degrees."""
    timeout_s: float = 3600.0
    """Wall-clock limit of one Blender process rendering one shard; past it the attempt fails."""
    threads: int = 1
    """CPU threads Blender may use per shard (one shard per core scales best)."""

    def validate(self) -> None:
        _check_range("render.views", self.views, low=1)
        _check_range("render.resolution", self.resolution, low=8, high=4096)
        _check_range("render.samples", self.samples, low=1)
        _check_range("render.max_bounces", self.max_bounces, low=0, high=64)
        _check_range("render.fov_deg", self.fov_deg, low=1.0, high=120.0)
        _check_range("render.camera_radius", self.camera_radius, low=1.8)
        _check_range("render.elevation_min_deg", self.elevation_min_deg, low=-89.0, high=89.0)
        _check_range("render.elevation_max_deg", self.elevation_max_deg, low=-89.0, high=89.0)
        if self.elevation_min_deg > self.elevation_max_deg:
            raise ConfigError(
                f"render.elevation_min_deg={self.elevation_min_deg} is above "
                f"render.elevation_max_deg={self.elevation_max_deg}; swap them"
            )
        _check_range("render.timeout_s", self.timeout_s, low=1.0)
        _check_range("render.threads", self.threads, low=0)


@dataclass
class TriplaneConfig:
    """The tri-plane representation and its shared MLP decoder (paper §3.1, Eq. 1, B.2, Fig. 12)."""

    channels: int = 32
    """Feature channels C of each plane (paper: 32)."""
    resolution: int = 256
    """Plane side H = W (paper: 256)."""
    rescale_min: int = 64
    """Smallest size of random rescaling: the base diffusion resolution (paper: 64, §3.1, Fig. 3)."""
    decoder_hidden: int = 128
    """Width of the shared MLP decoder's hidden layers."""
    decoder_layers: int = 4
    """Fully connected layers of the decoder (paper: 4)."""
    feature_frequencies: int = 4
    """Octaves of the Fourier embedding applied to the queried feature (Eq. 1's ξ)."""
    direction_frequencies: int = 4
    """Octaves of the Fourier embedding of the viewing direction."""

    def validate(self) -> None:
        _check_range("triplane.channels", self.channels, low=1)
        _check_range("triplane.resolution", self.resolution, low=4)
        _check_range("triplane.rescale_min", self.rescale_min, low=2, high=self.resolution)
        _check_range("triplane.decoder_hidden", self.decoder_hidden, low=1)
        _check_range("triplane.decoder_layers", self.decoder_layers, low=2)
        _check_range("triplane.feature_frequencies", self.feature_frequencies, low=0)
        _check_range("triplane.direction_frequencies", self.direction_frequencies, low=0)


@dataclass
class FitConfig:
    """Tri-plane fitting: phase A (shared decoder) then phase B (frozen decoder), appendix B.2."""

    shared_subjects: int = 1000
    """K: subjects fitted jointly with the decoder in phase A (paper: the first 1,000)."""
    shared_steps: int = 20_000
    """Optimisation steps of phase A."""
    shared_batch: int = 8
    """Phase-A subjects rendered per step (round-robin groups; ``rays_per_step`` is split among them):
    every step then moves the decoder on several subjects at once and each subject's planes more often
    (tiny preset, same compute: +0.5 dB held out on phase A's subjects than one subject per step)."""
    steps: int = 3000
    """Most optimisation steps per subject in phase B (it stops earlier at ``target_psnr``)."""
    target_psnr: float = 30.0
    """Held-out-view PSNR (dB) at which a subject's fitting stops."""
    holdout_views: int = 8
    """Views of each subject kept out of fitting to measure its PSNR (never view 0)."""
    rays_per_step: int = 4096
    """Rays per optimisation step."""
    coarse_samples: int = 32
    """Stratified samples per ray."""
    fine_samples: int = 32
    """Importance samples per ray (the fine pass)."""
    lr_planes: float = 0.02
    """Adam learning rate of the plane features."""
    lr_decoder: float = 0.001
    """Adam learning rate of the shared decoder (phase A)."""
    rescale_prob: float = 0.5
    """Probability that a step renders randomly rescaled planes (§3.1, Fig. 3)."""
    sparsity_weight: float = 1e-4
    """Weight of the L1 density sparsity loss."""
    tv_weight: float = 1e-4
    """Weight of the total-variation smoothness loss on the planes."""
    distortion_weight: float = 1e-3
    """Weight of the Mip-NeRF 360 distortion loss."""
    background: float = 1.0
    """Grey level the RGBA renders are composited onto (and the field renders over)."""
    eval_every: int = 100
    """Steps between held-out PSNR evaluations (early stopping)."""
    patience: int = 0
    """Phase B also stops once this many evaluations in a row improved the best held-out PSNR by less
    than ``min_improvement`` (a plateau below the target); 0 never stops on a plateau."""
    min_improvement: float = 0.05
    """Smallest gain (dB) of the best held-out PSNR that counts as progress for ``patience``."""
    occupancy_resolution: int = 64
    """Cells per side of the occupancy grid that skips empty space in phase B (0: query every point)."""
    occupancy_opacity: float = 0.01
    """Most opacity one skipped cell of the occupancy grid may hide from a ray: cells whose density is below
    -ln(1 - occupancy_opacity) / cell side are skipped (Instant-NGP thresholds the same quantity)."""
    occupancy_every: int = 16
    """Phase-B steps between refreshes of the occupancy grid from the current planes."""
    shard_size: int = 100
    """Subjects per fitting shard (the unit of work, retry and commit of phase B)."""
    seed: int = 0
    """Seed of plane initialisation, ray batches and sample jitter."""

    def validate(self) -> None:
        for name in ("shared_subjects", "shared_steps", "shared_batch", "steps", "rays_per_step", "coarse_samples",
                     "eval_every", "shard_size", "occupancy_every"):
            _check_range(f"fit.{name}", getattr(self, name), low=1)
        for name in ("holdout_views", "fine_samples", "seed", "occupancy_resolution", "patience"):
            _check_range(f"fit.{name}", getattr(self, name), low=0)
        for name in ("lr_planes", "lr_decoder", "sparsity_weight", "tv_weight", "distortion_weight", "min_improvement"):
            _check_range(f"fit.{name}", getattr(self, name), low=0.0)
        _check_range("fit.target_psnr", self.target_psnr, low=0.0, high=100.0)
        if self.occupancy_resolution == 1:
            raise ConfigError("fit.occupancy_resolution=1 is not a grid; use 0 (off) or >= 2 cells per side")
        _check_range("fit.rescale_prob", self.rescale_prob, low=0.0, high=1.0)
        _check_range("fit.occupancy_opacity", self.occupancy_opacity, low=0.0, high=0.5)
        _check_range("fit.background", self.background, low=0.0, high=1.0)


@dataclass
class EncoderConfig:
    """The conditioning encoder that maps a subject's frontal view to z (paper §3.2, §4.5)."""

    kind: str = "clip"
    """``clip``: frozen CLIP image encoder via open_clip (paper: ViT-B/32); ``learned``: an image
    encoder trained jointly with the base model (the autoencoder reading of §3.2), no weights needed."""
    clip_model: str = "ViT-B-32"
    """open_clip architecture name."""
    clip_pretrained: str = "openai"
    """open_clip pretrained tag, or a local checkpoint path."""
    latent_dim: int = 512
    """Size of z (paper: 512)."""
    image_size: int = 224
    """Side of the square image the encoder reads."""
    learned_channels: int = 64
    """Base width of the learned encoder's convolutions."""

    def validate(self) -> None:
        if self.kind not in ENCODER_KINDS:
            raise ConfigError(f"encoder.kind={self.kind!r} is not an encoder; choose one of {ENCODER_KINDS}")
        _check_range("encoder.latent_dim", self.latent_dim, low=1)
        _check_range("encoder.image_size", self.image_size, low=8)
        _check_range("encoder.learned_channels", self.learned_channels, low=1)


@dataclass
class TrainConfig:
    """Optimisation settings shared by every training stage (appendix B.1, B.4)."""

    steps: int = 500_000
    """Optimisation steps of the stage."""
    batch_size: int = 48
    """Global batch size (split across Ray Train workers)."""
    lr: float = 5e-5
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up steps."""
    ema_decay: float = 0.9999
    """Decay of the exponential moving average of the weights used for sampling."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    checkpoint_every: int = 5000
    """Steps between checkpoints (the unit of resume after a failure)."""
    log_every: int = 100
    """Steps between reported metrics."""
    workers: int = 1
    """Ray Train workers (data-parallel)."""
    use_gpu: bool = False
    """One GPU per worker; on CPU training runs in fp32."""
    precision: str = "bf16"
    """Autocast dtype on GPU: bf16, fp16 or fp32 (CPU always fp32)."""
    max_failures: int = 3
    """Ray Train FailureConfig retries of a crashed run (it resumes from the last checkpoint)."""
    seed: int = 0
    """Seed of initialisation, data order and noise."""

    def validate(self, where: str) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "workers"):
            _check_range(f"{where}.{name}", getattr(self, name), low=1)
        for name in ("warmup_steps", "max_failures", "seed"):
            _check_range(f"{where}.{name}", getattr(self, name), low=0)
        for name in ("lr", "weight_decay", "grad_clip"):
            _check_range(f"{where}.{name}", getattr(self, name), low=0.0)
        _check_range(f"{where}.ema_decay", self.ema_decay, low=0.0, high=1.0)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{where}.precision={self.precision!r} is not one of {PRECISIONS}")


@dataclass
class UNetStageConfig:
    """A tri-plane diffusion U-Net stage: the base model (§3.2) or the upsampler (§3.3)."""

    model_channels: int = 192
    """Base width of the U-Net (paper: 192)."""
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    """Width multiplier per resolution level."""
    num_res_blocks: int = 3
    """ResBlocks per level."""
    attention_resolutions: tuple[int, ...] = (8, 16, 32)
    """Plane sizes with self-attention over the three planes (paper: 8, 16, 32)."""
    aware_resolutions: tuple[int, ...] = (64, 32)
    """Plane sizes whose ResBlocks use the 3D-aware convolution (the higher resolutions, §3.2)."""
    num_head_channels: int = 64
    """Channels per attention head."""
    dropout: float = 0.1
    """Dropout in the ResBlocks."""
    diffusion_steps: int = 1000
    """Steps of the diffusion process (paper: 1,000)."""
    schedule: str = "linear"
    """Noise schedule name (paper: linear)."""
    sampling_steps: str = "100"
    """Respacing used to sample (paper: 100 steps), e.g. ``"100"`` or ``"ddim50"``."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation."""

    def validate(self, where: str) -> None:
        for name in ("model_channels", "num_res_blocks", "num_head_channels", "diffusion_steps"):
            _check_range(f"{where}.{name}", getattr(self, name), low=1)
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ConfigError(f"{where}.channel_mult={self.channel_mult} must be a non-empty list of ints >= 1")
        _check_range(f"{where}.dropout", self.dropout, low=0.0, high=1.0)
        self.train.validate(f"{where}.train")


@dataclass
class BaseStageConfig(UNetStageConfig):
    """The latent-conditioned base diffusion model at the lowest resolution (§3.2, appendix B.1)."""

    cfg_drop: float = 0.2
    """Probability of zeroing z in a training sample (classifier-free guidance, §3.2: 20%)."""
    guidance_scale: float = 3.0
    """Default CFG scale λ of Eq. 3 when sampling."""

    def validate(self, where: str = "base") -> None:
        super().validate(where)
        _check_range(f"{where}.cfg_drop", self.cfg_drop, low=0.0, high=1.0)
        _check_range(f"{where}.guidance_scale", self.guidance_scale, low=0.0)


@dataclass
class UpsamplerStageConfig(UNetStageConfig):
    """The diffusion upsampler from the base resolution to the full tri-plane (§3.3, appendix B.1)."""

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

    def validate(self, where: str = "upsampler") -> None:
        super().validate(where)
        for name in ("perceptual_weight", "aug_blur_sigma", "aug_noise_std"):
            _check_range(f"{where}.{name}", getattr(self, name), low=0.0)
        _check_range(f"{where}.patch_size", self.patch_size, low=4)
        _check_range(f"{where}.face_patch_prob", self.face_patch_prob, low=0.0, high=1.0)


@dataclass
class PriorStageConfig:
    """The latent diffusion prior over z, a residual MLP denoiser (appendix B.4)."""

    depth: int = 20
    """Residual blocks (paper: 20 layers)."""
    width: int = 2048
    """Hidden width (paper: 2,048)."""
    diffusion_steps: int = 1000
    """Steps of the diffusion process."""
    schedule: str = "linear"
    """Noise schedule name."""
    sampling_steps: str = "100"
    """Respacing used to sample z."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=96, lr=4e-5))
    """Optimisation (paper: batch 96, lr 4e-5)."""

    def validate(self, where: str = "prior") -> None:
        for name in ("depth", "width", "diffusion_steps"):
            _check_range(f"{where}.{name}", getattr(self, name), low=1)
        self.train.validate(f"{where}.train")


@dataclass
class RodinConfig:
    """The whole pipeline's configuration: one section per stage."""

    preset: str = "paper"
    """Name of the preset this config started from."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    triplane: TriplaneConfig = field(default_factory=TriplaneConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    base: BaseStageConfig = field(default_factory=lambda: BaseStageConfig(train=TrainConfig(batch_size=48)))
    upsampler: UpsamplerStageConfig = field(
        default_factory=lambda: UpsamplerStageConfig(attention_resolutions=(32,), aware_resolutions=(256, 128),
                                                     sampling_steps="100", train=TrainConfig(batch_size=16)))
    prior: PriorStageConfig = field(default_factory=PriorStageConfig)

    def validate(self) -> RodinConfig:
        if self.preset not in PRESETS:
            raise ConfigError(f"preset={self.preset!r} is not a preset; choose one of {PRESETS}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RodinConfig:
        """Rebuild a config saved by :meth:`to_dict` (unknown keys are errors)."""
        preset = data.get("preset", "paper")
        cfg = preset_config(preset) if preset in PRESETS else cls(preset=preset)
        _merge(cfg, {k: v for k, v in data.items() if k != "preset"}, prefix="")
        return cfg.validate()


def saved_held_out_from(saved: Mapping[str, Any]) -> int | None:
    """The first held-out subject id (§4.5, appendix C.5) of a saved ``RodinConfig.to_dict()``, read as saved.

    None when it held no subject out, also for configs saved before ``corpus.holdout_subjects`` existed
    (whatever the preset says now, their training read every subject).
    """
    corpus = saved.get("corpus") or {}
    subjects = int(corpus["subjects"])
    holdout = min(int(corpus.get("holdout_subjects", 0)), subjects - 1)  # CorpusConfig.held_out_count
    return subjects - holdout if holdout else None


def preset_config(name: str) -> RodinConfig:
    """The named preset: ``tiny`` (minutes on 2 CPU cores), ``small``, ``paper`` (§4.1)."""
    if name == "paper":
        return RodinConfig(preset="paper").validate()
    if name == "small":
        return RodinConfig(
            preset="small",
            corpus=CorpusConfig(subjects=2_000, shard_size=50, holdout_subjects=50),
            render=RenderConfig(views=100, resolution=128, samples=12, timeout_s=3600.0),
            triplane=TriplaneConfig(channels=16, resolution=128, rescale_min=32, decoder_hidden=64),
            fit=FitConfig(shared_subjects=100, shared_steps=5000, steps=1500, target_psnr=29.0, shard_size=50),
            base=BaseStageConfig(model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attention_resolutions=(8, 16),
                                 aware_resolutions=(32,), train=TrainConfig(steps=50_000, batch_size=16, lr=1e-4,
                                                                            checkpoint_every=2000)),
            upsampler=UpsamplerStageConfig(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                                           attention_resolutions=(), aware_resolutions=(128,), patch_size=56,
                                           train=TrainConfig(steps=50_000, batch_size=8, lr=1e-4,
                                                             checkpoint_every=2000)),
            prior=PriorStageConfig(depth=8, width=1024,
                                   train=TrainConfig(steps=50_000, batch_size=96, lr=1e-4, checkpoint_every=2000)),
        ).validate()
    if name == "tiny":
        return RodinConfig(
            preset="tiny",
            corpus=CorpusConfig(subjects=16, shard_size=4, holdout_subjects=2),
            render=RenderConfig(views=64, resolution=64, samples=16, max_bounces=3, timeout_s=900.0),
            triplane=TriplaneConfig(channels=8, resolution=64, rescale_min=32, decoder_hidden=64, feature_frequencies=0),
            fit=FitConfig(shared_subjects=4, shared_steps=2000, shared_batch=4, steps=800, target_psnr=28.5, holdout_views=4,
                          rays_per_step=2048, coarse_samples=16, fine_samples=16, lr_planes=0.1, lr_decoder=0.003,
                          rescale_prob=0.6, eval_every=50, patience=3, shard_size=4, occupancy_resolution=32,
                          occupancy_opacity=0.03),
            encoder=EncoderConfig(kind="learned", image_size=64, learned_channels=16),
            base=BaseStageConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
                                 aware_resolutions=(32,), num_head_channels=32, dropout=0.0, sampling_steps="50",
                                 train=TrainConfig(steps=400, batch_size=8, lr=2e-4, ema_decay=0.99,
                                                   checkpoint_every=200, log_every=20)),
            upsampler=UpsamplerStageConfig(model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                                           attention_resolutions=(), aware_resolutions=(64,), num_head_channels=16,
                                           dropout=0.0, sampling_steps="20", patch_size=28,
                                           train=TrainConfig(steps=400, batch_size=4, lr=2e-4, ema_decay=0.99,
                                                             checkpoint_every=200, log_every=20)),
            prior=PriorStageConfig(depth=4, width=256, sampling_steps="50",
                                   train=TrainConfig(steps=1000, batch_size=16, lr=4e-4, ema_decay=0.99,
                                                     checkpoint_every=250, log_every=50)),
        ).validate()
    raise ConfigError(f"unknown preset {name!r}; choose one of {PRESETS}")


def load_config(
    preset: str = "tiny",
    yaml_path: str | Path | None = None,
    overrides: Iterable[str] = (),
) -> RodinConfig:
    """Preset, then YAML file, then ``section.field=value`` overrides; validated at each step."""
    cfg = preset_config(preset)
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}")
        if "preset" in data and data["preset"] != preset:
            cfg = preset_config(str(data["preset"]))
        _merge(cfg, {k: v for k, v in data.items() if k != "preset"}, prefix="")
        cfg.validate()
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: RodinConfig, overrides: Iterable[str]) -> RodinConfig:
    """Apply ``section.field=value`` strings (values parsed as YAML scalars) and validate."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.field=value, e.g. render.views=32")
        path = key.strip().split(".")
        target: Any = cfg
        for depth, part in enumerate(path[:-1]):
            target = _get_section(target, part, ".".join(path[:depth]))
        _set_field(target, path[-1], yaml.safe_load(raw) if raw.strip() else None, ".".join(path[:-1]))
    return cfg.validate()


def _merge(target: Any, data: Mapping[str, Any], prefix: str) -> None:
    for key, value in data.items():
        name = f"{prefix}{key}"
        current = getattr(target, key) if key in _field_names(target) else None
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name} must be a mapping of fields, got {value!r}")
            _merge(current, value, prefix=f"{name}.")
        else:
            _set_field(target, key, value, prefix.rstrip("."))


def _field_names(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def _get_section(obj: Any, name: str, where: str) -> Any:
    _check_key(obj, name, where)
    section = getattr(obj, name)
    if not dataclasses.is_dataclass(section):
        raise ConfigError(f"{_join(where, name)} is a field, not a section; write {_join(where, name)}=VALUE")
    return section


def _check_key(obj: Any, name: str, where: str) -> None:
    names = _field_names(obj)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown config key {_join(where, name)!r}{hint}; valid keys"
            f"{' in ' + repr(where) if where else ''}: {', '.join(names)}"
        )


def _set_field(obj: Any, name: str, value: Any, where: str) -> None:
    _check_key(obj, name, where)
    if dataclasses.is_dataclass(getattr(obj, name)):
        raise ConfigError(f"{_join(where, name)} is a section; set its fields, e.g. {_join(where, name)}.FIELD=VALUE")
    hints = typing.get_type_hints(type(obj))
    setattr(obj, name, _coerce(_join(where, name), value, hints[name]))


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's annotation; ints are accepted for floats."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple:  # tuple[int, ...] fields: a YAML list or a single int
        items = [value] if isinstance(value, int) else value
        if isinstance(items, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return tuple(items)
        raise ConfigError(f"bad value for {key}: {value!r} is not a list of ints, e.g. {key}=[1,2]")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads exponents without a dot ("1e-3") as strings
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"bad value for {key}: {value!r} is not a {getattr(hint, '__name__', hint)}")


def _check_range(key: str, value: float, low: float | None = None, high: float | None = None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"bad value for {key}: {value!r} is outside the valid range {bounds}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
