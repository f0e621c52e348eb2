"""Text towers: prompts -> unit embeddings in the space of the base model's conditioning encoder
(paper §4.5, appendix B.3, B.5).

Text edits (B.3) and the text prior (B.5) read a prompt through the text tower whose space the
encoder that made z shares; it must match ``encoder.kind``:

- ``avatar_clip``: the projected sentence encoder of the same avatar-CLIP file
  (``encoder.avatar_clip_weights``), prompts of at most its ``max_prompt_tokens`` tokens;
- ``clip``: CLIP's own text tower (open_clip ``encode_text``), with the same weights as the image
  tower (``encoder.clip_model``, ``encoder.clip_pretrained``: a tag in the local Hugging Face
  cache or a local ``.safetensors``; never downloaded), prompts of at most its context length;
- ``learned``: trained on images only, it has no text space: :class:`NoTextSpaceError`.

Shapes: a tower embeds N prompts to (N, D) float32 unit vectors on the CPU, D = ``encoder.latent_dim``.
:func:`clean_prompt` refuses an empty or absurdly long prompt before any model is loaded;
:func:`check_prompt` then counts the tower's tokens.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from rodin_core.avatar_clip_file import AvatarClipFileError
from rodin_core.encoders import (
    CLIP_SAFE_WEIGHTS,
    EncoderConfig,
    EncoderUnavailableError,
    resolve_clip_weights,
)
from rodin_core.text.files import load_avatar_clip
from rodin_core.text.model import AvatarClip
from rodin_core.text.sentence import PromptError, SentenceEncoder

TEXT_KINDS = ("avatar_clip", "clip")
"""The ``encoder.kind`` values whose z space has a text tower."""
CLIP_TEXT_REMEDY = (f"put the {CLIP_SAFE_WEIGHTS} the base model was trained with at the path its "
                    "encoder.clip_pretrained names")
"""The last option the CLIP text tower's :class:`EncoderUnavailableError` offers."""


TEXT_REMEDY = ("train avatar-CLIP (`rodin train text-embedding --out OUT`), train the base with "
               "encoder.kind=avatar_clip and encoder.avatar_clip_weights=<the avatar_clip.safetensors it reports>, "
               "then `rodin train text-prior --out OUT`")
"""The steps from a store whose base model reads ``encoder.kind=learned`` to one that text-to-avatar can use."""
MAX_PROMPT_CHARS = 1000
"""Longest prompt in characters, refused before any tokenizer is loaded (every tower reads far fewer tokens)."""


class NoTextSpaceError(ValueError):
    """The encoder that made z has no text tower; the message names the encoder kinds that do."""


class TextTower(Protocol):
    """Prompts -> (N, D) unit embeddings in the space the conditioning encoder's z lives in."""

    kind: str
    """The ``encoder.kind`` it belongs to."""
    latent_dim: int
    max_tokens: int
    """Longest prompt in tokens (start and end tokens included where the tower has them)."""

    def token_count(self, prompt: str) -> int: ...

    def embed(self, prompts: list[str]) -> Tensor: ...


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No progress bars while Hugging Face weights load (they would print to stderr)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


class AvatarClipTextTower:
    """The text side of an avatar-CLIP model: frozen sentence encoder + trained projection."""

    kind = "avatar_clip"

    def __init__(self, model: AvatarClip) -> None:
        self.model = model.eval()
        with quiet_loading():  # a command's error stays one line
            model.use_sentence_encoder(SentenceEncoder(max_tokens=model.cfg.max_prompt_tokens))
        self.latent_dim = model.cfg.embed_dim
        self.max_tokens = model.cfg.max_prompt_tokens

    def token_count(self, prompt: str) -> int:
        return len(self.model.sentence_encoder().model.tokenizer(prompt)["input_ids"])

    def embed(self, prompts: list[str]) -> Tensor:
        """(N, D) unit embeddings (on the CPU)."""
        return self.model.encode_text(prompts).float().cpu()


class CLIPTextTower:
    """CLIP's own text tower through open_clip, with the weights the image tower reads (same loading rules).

    ``pretrained`` None gives random weights (tests only); ``model_overrides`` go to
    ``open_clip.create_model`` (a smaller ``text_cfg`` in tests). The image tower is dropped after loading.
    """

    kind = "clip"

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = "openai", latent_dim: int | None = None,
                 device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None,
                 model_overrides: Mapping[str, Any] | None = None) -> None:
        import open_clip

        if model_name not in open_clip.list_models():
            raise EncoderUnavailableError(f"encoder.clip_model={model_name!r} is not an open_clip architecture; "
                                          "choose one of open_clip.list_models(), e.g. ViT-B-32")
        weights, tag_cfg = ((None, {}) if pretrained is None
                            else resolve_clip_weights(model_name, pretrained, cache_dir, remedy=CLIP_TEXT_REMEDY))
        model = open_clip.create_model(model_name, pretrained=weights, device=device,
                                       force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                                       **dict(model_overrides or {}))
        model.visual = torch.nn.Identity()  # only encode_text is used
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name, context_length=model.context_length)
        self.max_tokens = int(model.context_length)
        self.latent_dim = int(dict(model_overrides or {}).get("embed_dim",
                                                          open_clip.get_model_config(model_name)["embed_dim"]))
        if latent_dim is not None and latent_dim != self.latent_dim:
            raise EncoderUnavailableError(f"{model_name}'s text tower embeds to {self.latent_dim} dimensions but z "
                                          f"has {latent_dim} (encoder.latent_dim); use the checkpoints' CLIP model")
        self.device = device

    def token_count(self, prompt: str) -> int:
        """Tokens of ``prompt`` with CLIP's start and end tokens."""
        if hasattr(self.tokenizer, "sot_token_id"):  # open_clip's byte-pair tokenizer
            return len(self.tokenizer.encode(prompt)) + 2
        return len(self.tokenizer.tokenizer(prompt)["input_ids"])

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> Tensor:
        """(N, D) unit embeddings (on the CPU)."""
        tokens = self.tokenizer(list(prompts)).to(self.device)  # (N, context_length)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()


def text_tower(cfg: EncoderConfig, device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None,
               storage_options: dict | None = None) -> TextTower:
    """The text tower of the encoder ``cfg`` describes; :class:`NoTextSpaceError` for ``learned``,
    :class:`EncoderUnavailableError` when its weights are not on this machine."""
    if cfg.kind == "clip":
        return CLIPTextTower(cfg.clip_model, cfg.clip_pretrained, cfg.latent_dim, device, cache_dir)
    if cfg.kind == "avatar_clip":
        try:
            model = load_avatar_clip(cfg.avatar_clip_weights, storage_options)
        except AvatarClipFileError as exc:
            raise EncoderUnavailableError(f"the text tower of encoder.kind=avatar_clip: {exc}") from exc
        if model.cfg.embed_dim != cfg.latent_dim:
            raise EncoderUnavailableError(f"the avatar-CLIP file {cfg.avatar_clip_weights} embeds to "
                                          f"{model.cfg.embed_dim} dimensions, z has {cfg.latent_dim}; use the file "
                                          "the base model was trained with")
        return AvatarClipTextTower(model.to(device))
    raise NoTextSpaceError(f"encoder.kind={cfg.kind} has no text space (it was trained on images only), so its z "
                           f"cannot be edited or generated from text; train the base model with encoder.kind "
                           f"{' or '.join(TEXT_KINDS)}")


def clean_prompt(prompt: object, name: str | None = None) -> str:
    """``prompt`` with its whitespace collapsed; :class:`PromptError` when it is empty or longer than
    :data:`MAX_PROMPT_CHARS` characters. Needs no model: commands call it before loading one. ``name`` labels
    the prompt in the message (e.g. ``--to``)."""
    label = f"the {name} prompt" if name else "the prompt"
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError(f"{label} is empty ({prompt!r}); describe the avatar, e.g. 'a person with blonde hair'")
    text = " ".join(prompt.split())
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptError(f"{label} ({text[:40]!r}...) has {len(text)} characters, more than {MAX_PROMPT_CHARS}; "
                          "shorten it to one sentence about the avatar")
    return text


def check_prompt(tower: TextTower, prompt: object, name: str | None = None) -> str:
    """``prompt`` as :func:`clean_prompt` returns it when ``tower`` can embed it; :class:`PromptError` naming ``name``
    when it is empty, or longer than the tower reads in tokens."""
    text = clean_prompt(prompt, name)
    tokens = tower.token_count(text)
    if tokens > tower.max_tokens:
        label = f"the {name} prompt" if name else "the prompt"
        raise PromptError(f"{label} ({text[:40]!r}...) has {tokens} tokens, more than the {tower.max_tokens} the "
                          f"{tower.kind} text tower reads; shorten it")
    return text
