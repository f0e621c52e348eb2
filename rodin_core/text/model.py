"""The avatar-CLIP model: an image tower over frontal renders and a projected frozen sentence encoder.

Both towers end on the unit sphere of ``embed_dim`` dimensions; their cosine similarity times the
learnable ``exp(logit_scale)`` (CLIP's inverse temperature, Radford et al. 2021, initialised to
1 / ``init_temperature`` and capped at 100) is the logit of a (render, caption) pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rodin_core.config_dict import DictConfig, check_range
from rodin_core.encoders import (
    LEARNED_POOLINGS,
    LearnedImageEncoder,
    image_tower_config,
)
from rodin_core.text.sentence import SENTENCE_DIM, SENTENCE_MODEL, SentenceEncoder

MAX_LOGIT_SCALE = math.log(100.0)
"""Cap of ``logit_scale`` (CLIP's: an inverse temperature of at most 100)."""


@dataclass
class AvatarClipConfig(DictConfig):
    """The avatar-CLIP model: its image tower, the text projection and the temperature."""

    embed_dim: int = 128
    """Size of the joint embedding (and of z when it conditions the base model: ``encoder.latent_dim``)."""
    image_size: int = 64
    """Side of the square frontal render the image tower reads."""
    image_channels: int = 16
    """Base width of the image tower's convolutions (a :class:`~rodin_core.encoders.LearnedImageEncoder`)."""
    image_pooling: str = "flatten"
    """How the image tower's last feature map becomes the embedding (``mean`` or ``flatten``)."""
    text_model: str = SENTENCE_MODEL
    """The frozen sentence encoder (only the packaged all-MiniLM-L6-v2)."""
    projection_hidden: int = 256
    """Hidden width of the two-layer projection of sentence embeddings."""
    init_temperature: float = 0.07
    """Softmax temperature at the start of training (CLIP: 0.07); learned from there."""
    max_prompt_tokens: int = 128
    """Longest prompt in tokens; a longer one is an error rather than silently cut."""

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field and its value."""
        check_range("embed_dim", self.embed_dim, low=2)
        check_range("image_size", self.image_size, low=8)
        check_range("image_channels", self.image_channels, low=1)
        check_range("projection_hidden", self.projection_hidden, low=1)
        check_range("init_temperature", self.init_temperature, low=1e-3, high=1.0)
        check_range("max_prompt_tokens", self.max_prompt_tokens, low=1, high=256)
        if self.image_pooling not in LEARNED_POOLINGS:
            raise ValueError(f"image_pooling={self.image_pooling!r} is not a pooling; choose one of {LEARNED_POOLINGS}")
        if self.text_model != SENTENCE_MODEL:
            raise ValueError(f"text_model={self.text_model!r} is not available; the only text encoder is "
                             f"{SENTENCE_MODEL!r}")


class AvatarClip(nn.Module):
    """Image tower + projection of frozen sentence embeddings + learnable temperature.

    The sentence encoder itself is not a submodule (its weights ship with its package and are never
    saved): :meth:`encode_text` builds it on first use; training feeds precomputed sentence
    embeddings to :meth:`project_text`.
    """

    def __init__(self, cfg: AvatarClipConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.image_tower = LearnedImageEncoder(image_tower_config(cfg.to_dict()))
        self.text_projection = nn.Sequential(nn.Linear(SENTENCE_DIM, cfg.projection_hidden), nn.GELU(),
                                             nn.Linear(cfg.projection_hidden, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        self._sentences: SentenceEncoder | None = None

    def encode_images(self, images: Tensor) -> Tensor:
        """Frontal renders (B, 4 or 3, H, W) in [0, 1] -> (B, embed_dim) unit-norm embeddings."""
        return F.normalize(self.image_tower(images), dim=-1)

    def project_text(self, sentences: Tensor) -> Tensor:
        """Sentence embeddings (B, 384) -> (B, embed_dim) unit-norm embeddings."""
        if sentences.dim() != 2 or sentences.shape[1] != SENTENCE_DIM:
            raise ValueError(f"sentence embeddings must be (B, {SENTENCE_DIM}), got {tuple(sentences.shape)}")
        return F.normalize(self.text_projection(sentences), dim=-1)

    def use_sentence_encoder(self, encoder: SentenceEncoder) -> None:
        """Share an already loaded sentence encoder."""
        self._sentences = encoder

    def sentence_encoder(self) -> SentenceEncoder:
        """The frozen sentence encoder, loaded once."""
        if self._sentences is None:
            self._sentences = SentenceEncoder(max_tokens=self.cfg.max_prompt_tokens)
        return self._sentences

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> Tensor:
        """Prompts -> (N, embed_dim) unit-norm embeddings; an empty or over-long prompt is a PromptError."""
        device = self.logit_scale.device
        return self.project_text(self.sentence_encoder()(list(prompts)).to(device))

    def scale(self) -> Tensor:
        """The inverse temperature ``exp(logit_scale)``, at most 100."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def forward(self, images: Tensor, sentences: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(image embeddings (B, D), text embeddings (B, D), inverse temperature ()) of matched pairs."""
        return self.encode_images(images), self.project_text(sentences), self.scale()
