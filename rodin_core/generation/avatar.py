"""A generated avatar and its file: the tri-plane, the latent z that made it, and how (paper §4.2, §4.5, Fig. 6).

Every generation result (an unconditional sample, a portrait inversion, a point of an
interpolation) is kept as the raw tri-plane the shared decoder reads together with the latent z it
was generated from, so it can be re-rendered, meshed, edited in latent space or interpolated later.

File format (docs/data-contracts.md: safetensors + JSON, never pickle): one ``.safetensors``
file with the tensors ``planes`` (3, C, H, W) float32 and, when known, ``z`` (D,) float32; its
header metadata holds ``format`` = ``rodin.avatar``, ``format_version``, ``meta``, the avatar's
JSON description (what made it: kind, seed, guidance scale, sampler, steps, preset, decoder hash, ...),
and ``sha256``, the :func:`avatar_digest` of the tensors and the meta, checked on every read so that a
changed byte is refused. Files written before the checksum existed have no ``sha256`` and are read
unchecked (the format version is the same: older readers read newer files and the other way round).
An avatar whose planes or z hold NaN or infinity is neither written nor read: it would render black.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

AVATAR_FORMAT = "rodin.avatar"
"""Value of the ``format`` metadata entry that marks an avatar file."""
AVATAR_FORMAT_VERSION = "1"
AVATAR_SUFFIX = ".safetensors"
AVATAR_METADATA = ("format", "format_version", "meta", "sha256")
"""The header metadata entries of an avatar file (``sha256`` is missing from files written before it existed)."""
AVATAR_KINDS = ("sample", "invert", "interpolate", "fitted", "edit", "text")
"""What made an avatar: prior sample (§3.2), portrait inversion (§4.5), interpolation (Fig. 6), a fitted subject,
a text edit of another avatar (§4.5, B.3), a prompt through the text prior (B.5)."""


class AvatarFileError(ValueError):
    """An avatar file is missing, unreadable or not an avatar; the message names it and says what to do."""


@dataclass
class Avatar:
    """One avatar: raw tri-plane ``planes`` (3, C, H, W), its latent ``z`` (D,) or None, and ``meta`` (JSON)."""

    planes: Tensor
    """(3, C, H, W) float32 in raw decoder units (what :class:`~rodin_core.triplane.field.TriplaneDecoder` reads)."""
    z: Tensor | None
    """(D,) float32 latent the avatar was generated from; None when unknown (e.g. a fitted subject)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """JSON-able description: ``kind`` (one of :data:`AVATAR_KINDS`), ``seed``, ``guidance_scale``, ``sampler``,
    ``steps``, ``preset``, ``decoder_sha256`` and kind-specific keys (interpolate: ``t``, ``sources``;
    invert: ``image``, ``image_size``; edit: ``edit``, ``encoder``, ``source``, ``source_file``; text: ``prompt``,
    ``text_guidance_scale``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.planes, Tensor) or self.planes.dim() != 4 or self.planes.shape[0] != 3:
            shown = tuple(self.planes.shape) if isinstance(self.planes, Tensor) else type(self.planes).__name__
            raise ValueError(f"Avatar.planes must be a tri-plane tensor (3, C, H, W), got {shown}")
        if not self.planes.is_floating_point():
            raise ValueError(f"Avatar.planes must be floating point, got {self.planes.dtype}")
        if self.z is not None and (not isinstance(self.z, Tensor) or self.z.dim() != 1 or not self.z.is_floating_point()):
            shown = (f"{tuple(self.z.shape)} {self.z.dtype}" if isinstance(self.z, Tensor) else type(self.z).__name__)
            raise ValueError(f"Avatar.z must be a float vector (D,) or None, got {shown}; squeeze a (1, D) batch first")
        if not isinstance(self.meta, dict):
            raise TypeError(f"Avatar.meta must be a dict, got {type(self.meta).__name__}")
        if self.meta.get("kind", AVATAR_KINDS[0]) not in AVATAR_KINDS:
            raise ValueError(f"Avatar.meta['kind'] must be one of {AVATAR_KINDS}, got {self.meta['kind']!r}")

    @property
    def kind(self) -> str | None:
        """``meta["kind"]``: what made the avatar (None when not recorded)."""
        return self.meta.get("kind")


def _meta_json(meta: dict[str, Any]) -> str:
    try:
        return json.dumps(meta, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AvatarFileError(f"avatar meta must be JSON-serialisable with finite numbers ({exc}); convert tensors "
                              "and numpy values to plain Python numbers and lists first") from exc


def avatar_digest(tensors: dict[str, Tensor], meta_json: str) -> str:
    """sha256 (hex) of an avatar file's content: each tensor's name, dtype, shape and bytes (in name order), then
    the meta JSON string as stored."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{str(tensor.dtype).removeprefix('torch.')}:{list(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    digest.update(meta_json.encode("utf-8"))
    return digest.hexdigest()


def _non_finite(tensors: dict[str, Tensor]) -> str | None:
    """``"N NaN or infinite values in planes"`` for the first tensor holding any, else None."""
    for name, tensor in tensors.items():
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            return f"{bad} NaN or infinite values in {name} {tuple(tensor.shape)}"
    return None


def avatar_to_bytes(avatar: Avatar) -> bytes:
    """safetensors bytes of ``avatar``: tensors ``planes`` [+ ``z``] in float32, metadata ``meta`` as JSON and the
    ``sha256`` of both; :class:`AvatarFileError` when a tensor holds NaN or infinity."""
    tensors = {"planes": avatar.planes.detach().to("cpu", torch.float32).contiguous()}  # (3, C, H, W)
    if avatar.z is not None:
        tensors["z"] = avatar.z.detach().to("cpu", torch.float32).contiguous()  # (D,)
    bad = _non_finite(tensors)
    if bad:
        raise AvatarFileError(f"the avatar holds {bad}; it would render black and mesh nothing, so it is not "
                              "written: sample it again (another --seed, fewer --steps or a smaller --cfg)")
    meta = _meta_json(avatar.meta)
    metadata = {"format": AVATAR_FORMAT, "format_version": AVATAR_FORMAT_VERSION, "meta": meta,
                "sha256": avatar_digest(tensors, meta)}
    return st_save(tensors, metadata=metadata)


def _header_metadata(data: bytes, source: str) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (8-byte little-endian length, then JSON)."""
    if len(data) < 8:
        raise AvatarFileError(f"{source} is not an avatar file: {len(data)} bytes is too short for safetensors")
    length = int.from_bytes(data[:8], "little")
    if length > len(data) - 8:
        raise AvatarFileError(f"{source} is not an avatar file: its safetensors header claims {length} bytes, "
                              f"the file has {len(data) - 8}")
    try:
        header = json.loads(data[8:8 + length])
    except (UnicodeDecodeError, ValueError) as exc:
        raise AvatarFileError(f"{source} is not an avatar file: its header is not JSON ({exc})") from exc
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def avatar_from_bytes(data: bytes, source: str = "<bytes>") -> Avatar:
    """Read :func:`avatar_to_bytes` output; :class:`AvatarFileError` naming ``source`` when it is not an avatar."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AvatarFileError(f"{source}: an avatar is read from bytes, got {type(data).__name__}")
    data = bytes(data)
    metadata = _header_metadata(data, source)
    if metadata.get("format") != AVATAR_FORMAT:
        raise AvatarFileError(f"{source} is not an avatar file (safetensors metadata format="
                              f"{metadata.get('format')!r}, expected {AVATAR_FORMAT!r}); pass a file written by "
                              "`rodin sample`, `rodin invert` or `rodin interpolate`")
    if metadata.get("format_version") != AVATAR_FORMAT_VERSION:
        raise AvatarFileError(f"{source} has avatar format_version {metadata.get('format_version')!r}; this code "
                              f"reads {AVATAR_FORMAT_VERSION!r}. Regenerate it with this version of rodin")
    unknown = sorted(set(metadata) - set(AVATAR_METADATA))
    if unknown:
        raise AvatarFileError(f"{source} is a damaged avatar file (unknown header entries {unknown}); regenerate it")
    try:
        meta = json.loads(metadata.get("meta", ""))
        tensors = st_load(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise AvatarFileError(f"{source} is a damaged avatar file ({exc}); regenerate it") from exc
    recorded = metadata.get("sha256")
    if recorded is not None and recorded != avatar_digest(tensors, metadata.get("meta", "")):
        raise AvatarFileError(f"{source} is a damaged avatar file: its content does not match the sha256 "
                              f"{str(recorded)[:12]}... it was written with; copy it again or regenerate it")
    unknown = sorted(set(tensors) - {"planes", "z"})
    if "planes" not in tensors or unknown or not isinstance(meta, dict):
        raise AvatarFileError(f"{source} must hold the tensor 'planes' (and optionally 'z') and a JSON object meta, "
                              f"got tensors {sorted(tensors)} and meta of type {type(meta).__name__}; regenerate it")
    bad = _non_finite(tensors)
    if bad:
        raise AvatarFileError(f"{source} holds {bad}; it cannot be rendered or meshed, regenerate it")
    try:
        return Avatar(planes=tensors["planes"], z=tensors.get("z"), meta=meta)
    except ValueError as exc:
        raise AvatarFileError(f"{source} holds an invalid avatar: {exc}") from exc


def _check_suffix(path: Path) -> Path:
    if path.suffix != AVATAR_SUFFIX:
        raise AvatarFileError(f"avatar files end in {AVATAR_SUFFIX}, got {str(path)!r}; "
                              f"name it e.g. {path.with_suffix(AVATAR_SUFFIX).name!r}")
    return path


def save_avatar(avatar: Avatar, path: str | os.PathLike) -> Path:
    """Write ``avatar`` to exactly ``path`` (which must end in ``.safetensors``; parents are created); returns it.

    The bytes go to a temporary sibling first and are renamed into place, so a reader never sees half a file.
    """
    target = _check_suffix(Path(path))
    data = avatar_to_bytes(avatar)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp")
    temp.write_bytes(data)
    temp.replace(target)
    return target


def load_avatar(path: str | os.PathLike) -> Avatar:
    """Read an avatar file; :class:`AvatarFileError` when it is missing or not an avatar."""
    source = Path(path)
    if not source.is_file():
        raise AvatarFileError(f"no avatar file at {str(source)!r}; check the path (avatars are the .safetensors "
                              "files `rodin sample`, `rodin invert` and `rodin interpolate` write)")
    return avatar_from_bytes(source.read_bytes(), source=str(source))

