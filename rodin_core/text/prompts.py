"""Prompts -> text embeddings in the space of the base model's encoder (appendix B.3, B.5).

The text prior conditions on the text tower that shares the conditioning encoder's space:

- ``encoder.kind = avatar_clip``: the text tower of the same avatar-CLIP file (frozen sentence
  encoder + trained projection), prompts of at most its ``max_prompt_tokens`` tokens;
- ``encoder.kind = clip``: CLIP's own text tower (open_clip ``encode_text``), weights found by the
  image encoder's rules (a tag in the local cache or a local ``.safetensors``), prompts of at most its
  context length in tokens;
- ``encoder.kind = learned``: no text tower; :class:`TextTowerError` names what to train.

Every tower returns unit vectors (N, E) with E = ``encoder.latent_dim``. :func:`check_prompt` refuses
an empty or absurdly long prompt before any model is loaded; each tower then counts tokens.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from rodin_core.encoders import EncoderConfig, resolve_clip_weights
from rodin_core.text.files import load_avatar_clip
from rodin_core.text.sentence import PromptError

MAX_PROMPT_CHARS = 1000
"""Longest prompt in characters, refused before any tokenizer is loaded (every tower reads far fewer)."""
TEXT_REMEDY = ("train avatar-CLIP (`rodin train text-embedding --out OUT`), train the base with "
               "encoder.kind=avatar_clip and encoder.avatar_clip_weights=<the avatar_clip.safetensors it reports>, "
               "then `rodin train text-prior --out OUT`")
"""What to do when the base model's encoder has no text tower."""


class TextTowerError(RuntimeError):
    """The configured encoder has no usable text tower; the message says what to train or install."""


class PromptEncoder(Protocol):
    """A frozen text tower: prompts -> (N, dim) unit vectors."""

    dim: int

    def check(self, prompts: list[str]) -> None:
        """Raise :class:`PromptError` for the first prompt it cannot embed."""
        ...

    def __call__(self, prompts: list[str]) -> Tensor: ...


def check_prompt(prompt: object) -> str:
    """``prompt`` stripped; :class:`PromptError` when it is empty or longer than :data:`MAX_PROMPT_CHARS`."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError(f"the prompt is empty ({prompt!r}); describe the avatar, e.g. "
                          "'a smiling woman with long red hair'")
    text = " ".join(prompt.split())
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptError(f"the prompt ({text[:40]!r}...) has {len(text)} characters, more than {MAX_PROMPT_CHARS}; "
                          "shorten it to one sentence about the avatar")
    return text


class AvatarClipPrompts:
    """The text tower of an avatar-CLIP file (``encoder.avatar_clip_weights``)."""

    def __init__(self, weights: str, storage_options: dict | None = None, device: str | torch.device = "cpu") -> None:
        self.model = load_avatar_clip(weights, storage_options).to(device)
        self.dim = self.model.cfg.embed_dim

    def check(self, prompts: list[str]) -> None:
        self.model.sentence_encoder().check(list(prompts))

    def __call__(self, prompts: list[str]) -> Tensor:
        """Prompts -> (N, embed_dim) unit vectors on the CPU."""
        return self.model.encode_text(list(prompts)).float().cpu()


class ClipPrompts:
    """CLIP's text tower through open_clip: ``pretrained`` a cached tag, a local ``.safetensors``, or None for random
    weights (tests only); ``model_overrides`` as for :class:`~rodin_core.encoders.CLIPImageEncoder`."""

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = "openai",
                 device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None,
                 model_overrides: Mapping[str, Any] | None = None) -> None:
        import open_clip

        if model_name not in open_clip.list_models():
            raise TextTowerError(f"encoder.clip_model={model_name!r} is not an open_clip architecture; choose one of "
                                 "open_clip.list_models(), e.g. ViT-B-32")
        remedy = f"set encoder.clip_pretrained to a local .safetensors path, or {TEXT_REMEDY}"
        weights, tag_cfg = (None, {}) if pretrained is None else resolve_clip_weights(model_name, pretrained, cache_dir,
                                                                                      remedy=remedy)
        model = open_clip.create_model(model_name, pretrained=weights, device=device,
                                       force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                                       **dict(model_overrides or {}))
        model.visual = None  # the image side is the conditioning encoder's
        self.model = model.eval().requires_grad_(False)
        self.context_length = int(model.context_length)
        self.tokenizer = open_clip.get_tokenizer(model_name, context_length=self.context_length)
        self.dim = int(model.text_projection.shape[1]) if model.text_projection is not None else int(
            model.transformer.width)

    def check(self, prompts: list[str]) -> None:
        for i, prompt in enumerate(prompts):
            check_prompt(prompt)
            tokens = len(self.tokenizer.encode(prompt)) + 2  # with the start and end tokens
            if tokens > self.context_length:
                raise PromptError(f"prompt {i} ({prompt[:40]!r}...) has {tokens} tokens, more than the "
                                  f"{self.context_length} CLIP's text tower reads; shorten it")

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> Tensor:
        """Prompts -> (N, dim) unit vectors on the CPU."""
        self.check(list(prompts))
        device = next(self.model.parameters()).device
        return F.normalize(self.model.encode_text(self.tokenizer(list(prompts)).to(device)).float(), dim=-1).cpu()


def prompt_encoder(cfg: EncoderConfig, storage_options: dict | None = None,
                   device: str | torch.device = "cpu") -> PromptEncoder:
    """The text tower that shares the space of the encoder ``cfg`` (see the module docstring)."""
    if cfg.kind == "learned":
        raise TextTowerError(f"encoder.kind='learned' has no text tower: its z lives in no text-image space; "
                             f"{TEXT_REMEDY}")
    if cfg.kind == "avatar_clip":
        tower: PromptEncoder = AvatarClipPrompts(cfg.avatar_clip_weights, storage_options, device)
    else:
        tower = ClipPrompts(cfg.clip_model, cfg.clip_pretrained, device)
    if tower.dim != cfg.latent_dim:
        raise TextTowerError(f"the text tower of encoder.kind={cfg.kind!r} embeds to {tower.dim} dimensions but "
                             f"encoder.latent_dim is {cfg.latent_dim}; use the encoder the base model was trained with")
    return tower
