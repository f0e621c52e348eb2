"""Text edit directions in the base model's z space (paper §4.5, appendix B.3).

The paper edits an avatar along ``δ = E_T(T_tgt) − E_T(T_src)``, the difference of two prompts'
embeddings in the text tower whose space the conditioning encoder shares. The text tower must
match the encoder that made z (``encoder.kind``):

- ``avatar_clip``: the projected sentence encoder of the same avatar-CLIP file
  (``encoder.avatar_clip_weights``);
- ``clip``: CLIP's own text tower (open_clip ``encode_text``), with the same weights as the image
  tower (``encoder.clip_model``, ``encoder.clip_pretrained``: a tag in the local Hugging Face
  cache or a local ``.safetensors``; never downloaded);
- ``learned``: trained on images only, it has no text space: :class:`NoTextSpaceError`.

Shapes and scale: a text tower embeds N prompts to (N, D) unit vectors e_T in the joint space.
The image encoder's z is the image embedding scaled to norm sqrt(D)
(:func:`rodin_core.encoders.scale_to_sphere`), so the direction is mapped the same way:
``δ = scale_to_sphere(e_T(T_tgt)) − scale_to_sphere(e_T(T_src))``, (D,) float32 in the raw units of
``Avatar.z`` and ``GenerationPipeline.generate``. The prior's latent normaliser is not involved: it
standardises z for the prior only, and the base model reads raw z.
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
    scale_to_sphere,
)
from rodin_core.text.files import load_avatar_clip
from rodin_core.text.model import AvatarClip
from rodin_core.text.sentence import PromptError, SentenceEncoder

TEXT_KINDS = ("avatar_clip", "clip")
"""The ``encoder.kind`` values whose z space has a text tower."""
TEXT_REMEDY = (f"put the {CLIP_SAFE_WEIGHTS} the base model was trained with at the path its encoder.clip_pretrained "
               "names")
"""The last option the CLIP text tower's :class:`EncoderUnavailableError` offers."""


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
                            else resolve_clip_weights(model_name, pretrained, cache_dir, remedy=TEXT_REMEDY))
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
                           f"cannot be edited with text; train the base model with encoder.kind "
                           f"{' or '.join(TEXT_KINDS)}")


def check_prompt(tower: TextTower, prompt: object, name: str) -> str:
    """``prompt`` when ``tower`` can embed it; :class:`PromptError` naming ``name`` when empty or over-long."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError(f"the {name} prompt is empty ({prompt!r}); describe the avatar, e.g. 'a person with "
                          "blonde hair'")
    tokens = tower.token_count(prompt)
    if tokens > tower.max_tokens:
        raise PromptError(f"the {name} prompt ({prompt[:40]!r}...) has {tokens} tokens, more than the "
                          f"{tower.max_tokens} the {tower.kind} text tower reads; shorten it")
    return prompt


def text_direction(tower: TextTower, target: str, source: str, names: tuple[str, str] = ("target", "source")) -> Tensor:
    """δ (D,) float32 = scale_to_sphere(e_T(target)) − scale_to_sphere(e_T(source)) in z units.

    Each distinct prompt is embedded once, on its own, so identical prompts give exactly zero and
    swapping them exactly negates δ. ``names`` label the prompts in a :class:`PromptError`.
    """
    for prompt, name in zip((target, source), names, strict=True):
        check_prompt(tower, prompt, name)
    points = {prompt: scale_to_sphere(tower.embed([prompt]))[0] for prompt in dict.fromkeys((target, source))}  # (D,)
    delta = points[target] - points[source]  # (D,)
    if tuple(delta.shape) != (tower.latent_dim,):
        raise EncoderUnavailableError(f"the {tower.kind} text tower returned embeddings of shape {tuple(delta.shape)},"
                                      f" expected ({tower.latent_dim},)")
    return delta.float()
