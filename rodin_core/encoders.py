"""Conditioning encoders: a subject's frontal view -> the latent z of the base model (paper §3.2, §4.5, B.1).

§3.2 conditions the base diffusion model on ``z = E(x_front) ∈ R^512``. Two encoders implement E:

- :class:`CLIPImageEncoder`: the paper's frozen CLIP ViT-B/32 image encoder (Radford et al. 2021),
  through open_clip, whose embedding space is shared with text prompts (text-guided editing, §4.5).
  Weights come from an open_clip pretrained tag already in the local Hugging Face cache, or from a
  local ``.safetensors`` file; the encoder never downloads on its own (no network in a training
  worker's hot path) and never unpickles: missing weights raise :class:`EncoderUnavailableError`.
- :class:`LearnedImageEncoder`: a small CNN trained jointly with the base model (the "autoencoder"
  reading of §3.2), which needs no pretrained weights.
- :class:`AvatarClipImageEncoder`: the frozen image tower of an avatar-CLIP embedding trained on the
  corpus's own renders and caption variants (:mod:`rodin_core.text`): like CLIP, its image space is
  shared with text prompts, but it needs no downloaded weights.

Both composite RGBA input over white, and both return z scaled to norm ``sqrt(latent_dim)``
(``z = sqrt(D) * e / |e|``): unit mean-square entries whatever the encoder, the scale AdaGN and the
latent prior (appendix B.4) expect, while keeping CLIP's directions (cosine geometry) intact.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rodin_core.avatar_clip_file import (
    IMAGE_TOWER_PREFIX,
    AvatarClipFileError,
    check_state,
    read_file,
)
from rodin_core.config_dict import ConfigError, check_range

CLIP_SAFE_WEIGHTS = "open_clip_model.safetensors"
"""Name of the safetensors weights in an open_clip Hugging Face repository."""
ENCODER_KINDS = ("clip", "learned", "avatar_clip")
"""Values of :attr:`EncoderConfig.kind`."""
LEARNED_POOLINGS = ("mean", "flatten")
"""Values of :attr:`EncoderConfig.learned_pooling`."""


@dataclass
class EncoderConfig:
    """The conditioning encoder that maps a subject's frontal view to z (paper §3.2, §4.5)."""

    kind: str = "clip"
    """``clip``: frozen CLIP image encoder via open_clip (paper: ViT-B/32); ``learned``: an image
    encoder trained jointly with the base model (the autoencoder reading of §3.2), no weights needed;
    ``avatar_clip``: the frozen image tower of an avatar-CLIP embedding trained on this corpus
    (``rodin train text-embedding``), read from ``avatar_clip_weights``."""
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
    learned_pooling: str = "mean"
    """How the learned encoder's last feature map becomes z: ``mean`` (global average pooling, then a linear
    map) or ``flatten`` (the whole map, its spatial layout kept, through a linear map). Frontal renders share
    most of their pixels (background, skin), and average-pooled features of a fresh encoder give z of
    different subjects a cosine similarity of about 0.96; the flattened map about 0.46 (tiny corpus)."""
    avatar_clip_weights: str = ""
    """``avatar_clip``: the ``avatar_clip.safetensors`` (local path or fsspec URI, its ``.json`` beside it)
    that ``rodin train text-embedding`` wrote; its embedding size must equal ``latent_dim``."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field, its value and the valid choices."""
        if self.kind not in ENCODER_KINDS:
            raise ConfigError(f"encoder.kind={self.kind!r} is not an encoder; choose one of {ENCODER_KINDS}")
        check_range("encoder.latent_dim", self.latent_dim, low=1)
        check_range("encoder.image_size", self.image_size, low=8)
        check_range("encoder.learned_channels", self.learned_channels, low=1)
        if self.kind == "avatar_clip" and not self.avatar_clip_weights.endswith(".safetensors"):
            raise ConfigError(f"encoder.avatar_clip_weights={self.avatar_clip_weights!r} is not an avatar-CLIP "
                              "weights file; set it to the avatar_clip.safetensors that `rodin train text-embedding` "
                              "reports")
        if self.learned_pooling not in LEARNED_POOLINGS:
            raise ConfigError(f"encoder.learned_pooling={self.learned_pooling!r} is not a pooling; choose one of "
                              f"{LEARNED_POOLINGS}")


class EncoderUnavailableError(RuntimeError):
    """The configured encoder's weights are not available locally; the message says how to fix it."""


@runtime_checkable
class ImageEncoder(Protocol):
    """Frontal images (B, 4 or 3, H, W) in [0, 1] -> z (B, latent_dim)."""

    latent_dim: int
    trainable: bool
    """Whether the encoder is optimised with the base model (else frozen: z can be cached per subject)."""

    def __call__(self, images: Tensor) -> Tensor: ...


def composite_on_white(images: Tensor) -> Tensor:
    """(B, 4, H, W) straight-alpha RGBA or (B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) RGB over white."""
    if images.dim() != 4 or images.shape[1] not in (3, 4):
        raise ValueError(f"images must be (B, 4, H, W) RGBA or (B, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
    if images.shape[1] == 3:
        return images
    rgb, alpha = images[:, :3], images[:, 3:]  # (B, 3, H, W), (B, 1, H, W)
    return rgb * alpha + (1.0 - alpha)


def _resize(images: Tensor, size: int) -> Tensor:
    """(B, 3, H, W) -> (B, 3, size, size), bicubic with antialiasing (CLIP's interpolation)."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return out.clamp(0.0, 1.0)


def scale_to_sphere(embedding: Tensor) -> Tensor:
    """(B, D) -> (B, D) with every row of norm sqrt(D)."""
    return F.normalize(embedding, dim=-1) * math.sqrt(embedding.shape[-1])


ENCODER_REMEDY = (f"set encoder.clip_pretrained to a local {CLIP_SAFE_WEIGHTS} path, or train without CLIP: "
                  "encoder.kind=learned")
"""The last option :class:`EncoderUnavailableError` offers for the conditioning encoder."""


def _unavailable(model_name: str, pretrained: str, remedy: str, reason: str) -> EncoderUnavailableError:
    return EncoderUnavailableError(
        f"CLIP encoder {model_name!r} with pretrained={pretrained!r}: {reason}. Either cache the tag's weights once "
        f"on a machine with network access (python -c \"import open_clip; open_clip.create_model({model_name!r}, "
        f"pretrained={pretrained!r})\", then copy ~/.cache/huggingface), or {remedy}")


def names_a_file(pretrained: str) -> bool:
    """Whether ``encoder.clip_pretrained`` names a local weights file rather than an open_clip tag."""
    path = Path(pretrained).expanduser()
    return path.is_file() or path.suffix == ".safetensors" or os.sep in pretrained


def resolve_clip_weights(model_name: str, pretrained: str, cache_dir: str | os.PathLike | None = None, *,
                         remedy: str = ENCODER_REMEDY) -> tuple[str, dict]:
    """Local safetensors file of ``pretrained`` (a tag in the HF cache, or a path) and its tag config.

    Never touches the network. Raises :class:`EncoderUnavailableError` naming the tag, how to cache
    it and ``remedy`` (the caller's path option: by default the config keys) when the weights are
    not on this machine.
    """
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    path = Path(pretrained).expanduser()
    if names_a_file(pretrained):
        if not path.is_file():
            raise _unavailable(model_name, pretrained, remedy, f"the local weights file {str(path)!r} does not exist")
        if path.suffix != ".safetensors":
            raise _unavailable(model_name, pretrained, remedy, "local weights must be a .safetensors file (rodin "
                               "never unpickles weights); convert it with safetensors.torch.save_file")
        return str(path), {}
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise _unavailable(model_name, pretrained, remedy, f"it is neither an existing file nor a pretrained tag "
                           f"of {model_name!r} (tags: {tags})")
    hub = tag_cfg.get("hf_hub", "")
    if not hub:
        raise _unavailable(model_name, pretrained, remedy,
                           "the tag has no Hugging Face safetensors weights (only a pickled URL)")
    repo_id, filename = os.path.split(hub)
    name = CLIP_SAFE_WEIGHTS if not filename else str(Path(filename).with_suffix(".safetensors"))
    cached = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
    if not isinstance(cached, str) or not os.path.isfile(cached):
        raise _unavailable(model_name, pretrained, remedy, f"its weights {repo_id}/{name} are not in the local "
                           f"Hugging Face cache ({cache_dir or 'default HF cache'})")
    return cached, tag_cfg


class CLIPImageEncoder(nn.Module):
    """Frozen open_clip image tower: frontal views -> projected CLIP embeddings on the sqrt(D) sphere (§3.2).

    ``pretrained`` is an open_clip tag (e.g. ``openai``) whose weights are in the local Hugging Face
    cache, a local ``.safetensors`` path, or None for random weights (tests only: such a z carries no
    meaning). ``model_overrides`` go to ``open_clip.create_model`` as model-config overrides (e.g. a
    smaller ``vision_cfg`` in tests). Images are composited on white, resized to the model's input
    size (224 for ViT-B-32) and normalised with the tag's mean/std (OpenAI's by default). ``latent_dim``
    must equal the model's embedding size; None takes the model's.
    """

    trainable = False

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "openai",
        latent_dim: int | None = 512,
        device: str | torch.device = "cpu",
        cache_dir: str | os.PathLike | None = None,
        model_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        import open_clip

        if model_name not in open_clip.list_models():
            raise EncoderUnavailableError(f"encoder.clip_model={model_name!r} is not an open_clip architecture; "
                                          f"choose one of open_clip.list_models(), e.g. ViT-B-32")
        weights, tag_cfg = (None, {}) if pretrained is None else resolve_clip_weights(model_name, pretrained, cache_dir)
        model = open_clip.create_model(model_name, pretrained=weights, device=device,
                                       force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                                       **dict(model_overrides or {}))
        self.visual = model.visual.eval().requires_grad_(False)
        self.model_name, self.pretrained = model_name, pretrained
        size = self.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        embed_dim = int(dict(model_overrides or {}).get("embed_dim", open_clip.get_model_config(model_name)["embed_dim"]))
        if latent_dim is not None and embed_dim != latent_dim:
            raise ValueError(f"encoder.latent_dim={latent_dim} but {model_name} embeds images to {embed_dim} "
                             f"dimensions; set encoder.latent_dim={embed_dim}")
        self.latent_dim = embed_dim
        mean = torch.tensor(tag_cfg.get("mean", open_clip.OPENAI_DATASET_MEAN), dtype=torch.float32)
        std = torch.tensor(tag_cfg.get("std", open_clip.OPENAI_DATASET_STD), dtype=torch.float32)
        self.register_buffer("mean", mean.view(1, 3, 1, 1).to(device), persistent=False)  # (1, 3, 1, 1)
        self.register_buffer("std", std.view(1, 3, 1, 1).to(device), persistent=False)  # (1, 3, 1, 1)

    def train(self, mode: bool = True) -> CLIPImageEncoder:
        """The encoder is frozen: it stays in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Images (B, 4 or 3, H, W) in [0, 1] -> the image tower's projected embeddings (B, latent_dim), unscaled."""
        rgb = _resize(composite_on_white(images.to(self.mean.device).float()), self.image_size)  # (B, 3, S, S)
        return self.visual((rgb - self.mean) / self.std).float()  # (B, D)

    def forward(self, images: Tensor) -> Tensor:
        """Images (B, 4 or 3, H, W) in [0, 1] -> z (B, latent_dim), norm sqrt(latent_dim)."""
        return scale_to_sphere(self.embed(images))


def _groups(channels: int) -> int:
    return math.gcd(32, channels)


class LearnedImageEncoder(nn.Module):
    """Small CNN trained jointly with the base model (the autoencoder reading of §3.2).

    Stride-2 3x3 convolutions, each followed by GroupNorm and SiLU, halve the image until it is at most
    8x8 (width ``learned_channels`` doubling up to 8x); then a linear map of the globally average-pooled
    features (``learned_pooling = mean``) or of the whole flattened map (``flatten``, which keeps where
    things are: hair above the face, the garment below) gives z, scaled to norm sqrt(latent_dim).
    """

    trainable = True

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.image_size, self.latent_dim = cfg.image_size, cfg.latent_dim
        width = cfg.learned_channels
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.GroupNorm(_groups(width), width), nn.SiLU()]
        size, level = cfg.image_size, 0
        while size > 8:
            out = cfg.learned_channels * min(2 ** (level + 1), 8)
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1), nn.GroupNorm(_groups(out), out), nn.SiLU()]
            width, size, level = out, (size + 1) // 2, level + 1
        self.features = nn.Sequential(*layers)
        self.flatten = cfg.learned_pooling == "flatten"
        self.head = nn.Linear(width * size * size if self.flatten else width, cfg.latent_dim)

    def forward(self, images: Tensor) -> Tensor:
        """Images (B, 4 or 3, H, W) in [0, 1] -> z (B, latent_dim), norm sqrt(latent_dim)."""
        rgb = _resize(composite_on_white(images.float()), self.image_size)  # (B, 3, S, S)
        features = self.features(rgb * 2.0 - 1.0)  # (B, width, s, s)
        pooled = features.flatten(1) if self.flatten else features.mean(dim=(2, 3))  # (B, width*s*s) or (B, width)
        return scale_to_sphere(self.head(pooled))  # (B, latent_dim)


def image_tower_config(model: Mapping[str, Any]) -> EncoderConfig:
    """The :class:`EncoderConfig` of the image tower an avatar-CLIP model config (its JSON ``model``) describes."""
    return EncoderConfig(kind="learned", latent_dim=int(model["embed_dim"]), image_size=int(model["image_size"]),
                         learned_channels=int(model["image_channels"]), learned_pooling=str(model["image_pooling"]))


class AvatarClipImageEncoder(nn.Module):
    """Frozen image tower of an avatar-CLIP file: frontal views -> z on the sqrt(D) sphere (§3.2, §4.5).

    z is the direction the avatar-CLIP text tower maps prompts to, scaled to norm sqrt(latent_dim).
    A file whose embedding size differs from ``latent_dim`` (when given) raises ConfigError.
    """

    trainable = False

    def __init__(self, weights: str, latent_dim: int | None = None, storage_options: dict | None = None) -> None:
        super().__init__()
        try:
            document, state = read_file(weights, storage_options)
        except AvatarClipFileError as exc:
            raise EncoderUnavailableError(str(exc)) from exc
        try:
            cfg = image_tower_config(document["model"])
            cfg.validate()
        except (KeyError, TypeError, ValueError) as exc:
            raise EncoderUnavailableError(f"{weights}: the model config {document['model']} has no valid image "
                                          f"tower ({exc}); train it again: `rodin train text-embedding --out OUT`"
                                          ) from exc
        if latent_dim is not None and cfg.latent_dim != latent_dim:
            raise ConfigError(f"encoder.latent_dim={latent_dim} but the avatar-CLIP file {weights} embeds to "
                              f"{cfg.latent_dim} dimensions; set encoder.latent_dim={cfg.latent_dim}")
        self.tower = LearnedImageEncoder(cfg)
        tower_state = {k[len(IMAGE_TOWER_PREFIX):]: v for k, v in state.items() if k.startswith(IMAGE_TOWER_PREFIX)}
        try:
            check_state(self.tower.state_dict(), tower_state, weights)
        except AvatarClipFileError as exc:
            raise EncoderUnavailableError(str(exc)) from exc
        self.tower.load_state_dict(tower_state)
        self.tower.eval().requires_grad_(False)
        self.latent_dim, self.image_size, self.weights = cfg.latent_dim, cfg.image_size, weights

    def train(self, mode: bool = True) -> AvatarClipImageEncoder:
        """The encoder is frozen: it stays in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Images (B, 4 or 3, H, W) in [0, 1] -> z (B, latent_dim), norm sqrt(latent_dim)."""
        return self.tower(images)


def build_encoder(cfg: EncoderConfig, device: str | torch.device = "cpu",
                  cache_dir: str | os.PathLike | None = None) -> nn.Module:
    """The encoder of ``cfg.kind``: frozen CLIP (``clip``), a fresh :class:`LearnedImageEncoder` (``learned``)
    or the frozen avatar-CLIP image tower (``avatar_clip``)."""
    cfg.validate()
    if cfg.kind == "clip":
        return CLIPImageEncoder(cfg.clip_model, cfg.clip_pretrained, cfg.latent_dim, device, cache_dir=cache_dir)
    if cfg.kind == "avatar_clip":
        return AvatarClipImageEncoder(cfg.avatar_clip_weights, cfg.latent_dim).to(device)
    return LearnedImageEncoder(cfg).to(device)
