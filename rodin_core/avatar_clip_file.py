"""The avatar-CLIP file: a joint text-image embedding's weights as safetensors plus a JSON document.

Format (docs/data-contracts.md): ``<name>.safetensors`` holds every tensor of the model
(``image_tower.*`` the image tower, ``text_projection.*`` the trained projection of the frozen
sentence encoder, ``logit_scale``); ``<name>.json`` beside it holds the kind, the format version,
the model config and the retrieval figures measured when it was trained. Reading is strict: a
missing or unexpected key, a shape mismatch or a bad document is one :class:`AvatarClipFileError`
line. Never pickle. This module imports nothing of rodin, so that both the conditioning encoder
(which reads only the image tower) and the text package read the same format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import fsspec
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from rodin_core.checkpoint import state_mismatches

AVATAR_CLIP_KIND = "rodin.avatar_clip"
AVATAR_CLIP_FORMAT_VERSION = 1
IMAGE_TOWER_PREFIX = "image_tower."
"""Key prefix of the image tower's tensors."""


class AvatarClipFileError(ValueError):
    """An avatar-CLIP file is missing, unreadable or does not match the model its config builds."""


def config_path(weights: str) -> str:
    """The JSON beside a ``.safetensors`` weights path."""
    return weights[: -len(".safetensors")] + ".json"


def to_bytes(state: Mapping[str, torch.Tensor], config: Mapping[str, Any],
             metrics: Mapping[str, Any] | None = None) -> tuple[bytes, str]:
    """(safetensors bytes of ``state``, JSON text of the config and metrics)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    document = {"kind": AVATAR_CLIP_KIND, "format_version": AVATAR_CLIP_FORMAT_VERSION, "model": dict(config),
                "metrics": dict(metrics or {})}
    return st_save(tensors), json.dumps(document, indent=2, sort_keys=True, allow_nan=False)


def from_bytes(tensors: bytes, config_json: str, source: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(the JSON document, the tensors) of an avatar-CLIP file; its kind and version are checked."""
    try:
        document = json.loads(config_json)
    except (json.JSONDecodeError, TypeError) as exc:
        raise AvatarClipFileError(f"avatar-CLIP config of {source} is not valid JSON ({exc}); train it again: "
                                  "`rodin train text-embedding --out OUT`") from exc
    if not isinstance(document, dict) or document.get("kind") != AVATAR_CLIP_KIND:
        raise AvatarClipFileError(f"{config_path(source)} is not a {AVATAR_CLIP_KIND!r} document; point at the "
                                  "avatar_clip.safetensors that `rodin train text-embedding` wrote")
    if document.get("format_version") != AVATAR_CLIP_FORMAT_VERSION or not isinstance(document.get("model"), dict):
        raise AvatarClipFileError(f"{config_path(source)} has format_version {document.get('format_version')!r}, "
                                  f"this rodin reads {AVATAR_CLIP_FORMAT_VERSION}; train it again: "
                                  "`rodin train text-embedding --out OUT`")
    try:
        state = st_load(tensors)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise AvatarClipFileError(f"avatar-CLIP weights {source} are not readable safetensors ({exc}); train it "
                                  "again: `rodin train text-embedding --out OUT`") from exc
    return document, state


def read_file(weights: str, storage_options: dict | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """:func:`from_bytes` of ``weights`` (a local path or fsspec URI of a ``.safetensors``) and its JSON."""
    if not weights.endswith(".safetensors"):
        raise AvatarClipFileError(f"avatar-CLIP weights {weights!r} must be a .safetensors file with its .json "
                                  "beside it, as `rodin train text-embedding` writes them")
    try:
        with fsspec.open(weights, "rb", **(storage_options or {})) as f:
            tensors = f.read()
        with fsspec.open(config_path(weights), "rt", **(storage_options or {})) as f:
            text = f.read()
    except FileNotFoundError as exc:
        raise AvatarClipFileError(f"avatar-CLIP file {exc.filename or weights!r} does not exist; train one with "
                                  "`rodin train text-embedding --out OUT` and pass the avatar_clip.safetensors it "
                                  "reports") from exc
    return from_bytes(tensors, text, weights)


def check_state(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise one :class:`AvatarClipFileError` line naming missing, unexpected and mis-shaped keys."""
    missing, unexpected, shapes = state_mismatches(expected, state)
    if missing or unexpected or shapes:
        raise AvatarClipFileError(f"avatar-CLIP weights {source} do not match the model its config builds: missing "
                                  f"keys {missing[:8]}, unexpected keys {unexpected[:8]}, shape mismatches "
                                  f"{shapes[:8]}; the .safetensors and .json must come from the same training run")
