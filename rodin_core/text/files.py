"""Saving and loading an avatar-CLIP model: safetensors + JSON (:mod:`rodin_core.avatar_clip_file`).

Loading rebuilds the model from the JSON's config and checks every key and shape: a missing or
extra key is one :class:`~rodin_core.avatar_clip_file.AvatarClipFileError` line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rodin_core.avatar_clip_file import (
    AvatarClipFileError,
    check_state,
    from_bytes,
    read_file,
    to_bytes,
)
from rodin_core.text.model import AvatarClip, AvatarClipConfig


def avatar_clip_to_bytes(model: AvatarClip, metrics: Mapping[str, Any] | None = None) -> tuple[bytes, str]:
    """(safetensors bytes, JSON text) of ``model`` and the ``metrics`` measured on it."""
    return to_bytes(model.state_dict(), model.cfg.to_dict(), metrics)


def _build(document: dict[str, Any], state: dict, source: str) -> AvatarClip:
    try:
        cfg = AvatarClipConfig.from_dict(document["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AvatarClipFileError(f"{source}: bad avatar-CLIP config ({' '.join(str(exc).split())}); train it "
                                  "again: `rodin train text-embedding --out OUT`") from exc
    model = AvatarClip(cfg)
    check_state(model.state_dict(), state, source)
    model.load_state_dict(state, strict=True)
    return model.eval()


def avatar_clip_from_bytes(tensors: bytes, config_json: str, source: str = "<bytes>") -> AvatarClip:
    """Rebuild the model :func:`avatar_clip_to_bytes` wrote, in eval mode (strict keys and shapes)."""
    document, state = from_bytes(tensors, config_json, source)
    return _build(document, state, source)


def save_avatar_clip(model: AvatarClip, weights: str | Path, metrics: Mapping[str, Any] | None = None) -> Path:
    """Write ``weights`` (``.safetensors``) and the ``.json`` beside it; returns the weights path."""
    path = Path(weights)
    if path.suffix != ".safetensors":
        raise ValueError(f"avatar-CLIP weights path {str(path)!r} must end in .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, text = avatar_clip_to_bytes(model, metrics)
    path.write_bytes(tensors)
    path.with_suffix(".json").write_text(text)
    return path


def load_avatar_clip(weights: str | Path, storage_options: dict | None = None) -> AvatarClip:
    """The model saved at ``weights`` (local path or fsspec URI of the ``.safetensors``), in eval mode."""
    document, state = read_file(str(weights), storage_options)
    return _build(document, state, str(weights))
