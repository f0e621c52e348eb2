"""Saving and loading a trained :class:`~rodin_core.networks.refiner.ConvRefiner` (paper §3.3, Fig. 8).

Two files, never pickle: the weights as safetensors and a JSON document holding the kind, format
version, :class:`~rodin_core.networks.refiner.RefinerConfig` and ``meta`` (what the refiner was
trained on: its input resolution, camera radius and background, the decoder's sha256, the training
settings and the held-out metrics). Loading checks every key and shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from rodin_core.checkpoint import state_mismatches
from rodin_core.networks.refiner import ConvRefiner, RefinerConfig

REFINER_FORMAT_VERSION = 1
KIND = "rodin.refiner"
REFINER_WEIGHTS = "refiner.safetensors"
REFINER_JSON = "refiner.json"
REQUIRED_META = ("input_resolution", "camera_radius", "background", "decoder_sha256")
"""What ``meta`` must say for the refiner to be used on the right renders."""


class RefinerLoadError(ValueError):
    """Stored refiner weights or JSON do not match what this code builds; the message says how."""


@dataclass
class TrainedRefiner:
    """A refiner and what it was trained on."""

    model: ConvRefiner
    meta: dict[str, Any] = field(default_factory=dict)
    """``input_resolution``, ``camera_radius``, ``background``, ``decoder_sha256``, and ``train``/``metrics``."""

    @property
    def scale(self) -> int:
        return self.model.cfg.scale

    @property
    def input_resolution(self) -> int:
        """Side of the renders it was trained on."""
        return int(self.meta["input_resolution"])


def refiner_to_bytes(refiner: TrainedRefiner) -> tuple[bytes, str]:
    """(safetensors bytes of the weights, JSON text of config and meta)."""
    missing = [key for key in REQUIRED_META if key not in refiner.meta]
    if missing:
        raise RefinerLoadError(f"refiner meta lacks {missing}; record what the refiner was trained on")
    state = {k: v.detach().cpu().contiguous() for k, v in refiner.model.state_dict().items()}
    body = {"kind": KIND, "format_version": REFINER_FORMAT_VERSION, "refiner": refiner.model.cfg.to_dict(),
            "meta": refiner.meta}
    return st_save(state), json.dumps(body, indent=2, sort_keys=True, allow_nan=False)


def refiner_from_bytes(tensors: bytes, config_json: str | bytes, source: str = "<bytes>") -> TrainedRefiner:
    """Rebuild a refiner from :func:`refiner_to_bytes` output; :class:`RefinerLoadError` names ``source`` and
    what does not match."""
    try:
        body = json.loads(config_json)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise RefinerLoadError(f"refiner JSON {source} is not valid JSON ({exc}); train the refiner again") from None
    if not isinstance(body, dict) or body.get("kind") != KIND:
        raise RefinerLoadError(f"{source} is not a {KIND!r} document; point at the {REFINER_JSON} the refiner "
                               "training wrote")
    if body.get("format_version") != REFINER_FORMAT_VERSION:
        raise RefinerLoadError(f"refiner {source} has format_version {body.get('format_version')!r}, this rodin "
                               f"reads {REFINER_FORMAT_VERSION}; train the refiner again")
    meta = body.get("meta")
    if not isinstance(meta, dict) or any(key not in meta for key in REQUIRED_META):
        raise RefinerLoadError(f"refiner JSON {source} must record {list(REQUIRED_META)} in 'meta'; "
                               "train the refiner again")
    try:
        cfg = RefinerConfig.from_dict(body["refiner"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RefinerLoadError(f"refiner JSON {source} has an invalid 'refiner' section ({exc})") from None
    try:
        state = st_load(tensors)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise RefinerLoadError(f"refiner weights {source} are not readable safetensors ({exc}); "
                               "train the refiner again") from None
    model = ConvRefiner(cfg)
    expected = model.state_dict()
    missing, unexpected, shapes = state_mismatches(expected, state)
    if missing or unexpected or shapes:
        raise RefinerLoadError(f"refiner weights {source} do not match the refiner its JSON builds "
                               f"({cfg.to_dict()}): missing {missing}, unexpected {unexpected}, shapes {shapes}")
    model.load_state_dict(state, strict=True)
    return TrainedRefiner(model.eval().requires_grad_(False), meta)


def save_refiner(refiner: TrainedRefiner, folder: str | Path) -> Path:
    """Write ``refiner.safetensors`` and then ``refiner.json`` into ``folder``; returns the folder."""
    tensors, text = refiner_to_bytes(refiner)
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    (target / REFINER_WEIGHTS).write_bytes(tensors)
    (target / REFINER_JSON).write_text(text)
    return target


def load_refiner(folder: str | Path) -> TrainedRefiner:
    """Read a refiner folder written by :func:`save_refiner`."""
    source = Path(folder)
    if not (source / REFINER_JSON).is_file() or not (source / REFINER_WEIGHTS).is_file():
        raise RefinerLoadError(f"no refiner at {str(source)!r} (needs {REFINER_WEIGHTS} and {REFINER_JSON}); "
                               "train one with `rodin train refiner`")
    return refiner_from_bytes((source / REFINER_WEIGHTS).read_bytes(), (source / REFINER_JSON).read_text(),
                              source=str(source))
