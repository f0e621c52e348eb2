"""Saving and loading the shared tri-plane MLP decoder (paper §3.1, Eq. 1; appendix B.2, Fig. 12).

Phase A of fitting produces one decoder shared by every subject; it is stored once and read by
every phase-B worker and by the diffusion stages that render generated tri-planes. Format
(docs/data-contracts.md): the weights as safetensors and a JSON document holding the format
version and the :class:`~rodin_core.triplane.field.DecoderConfig`, so the model can be rebuilt
and loaded with strict key checking. Never pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from rodin_core.checkpoint import state_mismatches
from rodin_core.triplane.field import DecoderConfig, TriplaneDecoder

DECODER_FORMAT_VERSION = 2
"""Version of the decoder JSON; 2: written with the nested ``triplane.decoder`` config."""
KIND = "rodin.triplane_decoder"


class DecoderLoadError(ValueError):
    """Stored decoder weights or config do not match what this code builds; the message says how."""


def decoder_to_bytes(decoder: TriplaneDecoder) -> tuple[bytes, str]:
    """(safetensors bytes of the weights, JSON text of the config) — e.g. for ShardWriter.write_bytes."""
    state = {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
    config = {"kind": KIND, "format_version": DECODER_FORMAT_VERSION, "decoder": decoder.cfg.to_dict()}
    return st_save(state), json.dumps(config, indent=2, sort_keys=True)


def decoder_from_bytes(tensors: bytes, config_json: str, source: str = "<bytes>") -> TriplaneDecoder:
    """Rebuild a decoder from :func:`decoder_to_bytes` output, checking every key and shape.

    Raises :class:`DecoderLoadError` naming ``source`` and the missing / unexpected keys, the
    mismatched shapes, or the bad config field.
    """
    try:
        config = json.loads(config_json)
    except (json.JSONDecodeError, TypeError) as exc:
        raise DecoderLoadError(f"decoder config {source} is not valid JSON ({exc}); re-save the decoder") from exc
    if not isinstance(config, dict) or config.get("kind") != KIND:
        raise DecoderLoadError(f"decoder config {source} is not a {KIND!r} document (got kind "
                               f"{config.get('kind') if isinstance(config, dict) else config!r}); "
                               "point at the .json written by save_decoder")
    if config.get("format_version") != DECODER_FORMAT_VERSION:
        raise DecoderLoadError(f"decoder config {source} has format_version {config.get('format_version')!r}, "
                               f"this rodin reads {DECODER_FORMAT_VERSION}; fit the tri-planes again, which writes a "
                               "new decoder: `rodin fit --renders <renders root> --out <dataset root>`")
    try:
        cfg = DecoderConfig.from_dict(config["decoder"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DecoderLoadError(f"decoder config {source} has an invalid 'decoder' section "
                               f"{config.get('decoder')!r} ({exc})") from exc
    try:
        state = st_load(tensors)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise DecoderLoadError(f"decoder weights {source} are not readable safetensors ({exc}); "
                               "re-save the decoder") from exc
    decoder = TriplaneDecoder(cfg)
    _check_state(decoder, state, source)
    decoder.load_state_dict(state, strict=True)
    return decoder


def _check_state(decoder: TriplaneDecoder, state: dict[str, torch.Tensor], source: str) -> None:
    expected = decoder.state_dict()
    missing, unexpected, shapes = state_mismatches(expected, state)
    if missing or unexpected or shapes:
        raise DecoderLoadError(
            f"decoder weights {source} do not match the decoder its config builds ({decoder.cfg.to_dict()}): "
            f"missing keys {missing}, unexpected keys {unexpected}, shape mismatches {shapes}; "
            "the weights and config must come from the same save_decoder call")


def _paths(prefix: str | Path) -> tuple[Path, Path]:
    base = Path(prefix)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def save_decoder(decoder: TriplaneDecoder, path_prefix: str | Path) -> tuple[Path, Path]:
    """Write ``<prefix>.safetensors`` and ``<prefix>.json``; returns both paths."""
    weights_path, config_path = _paths(path_prefix)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors, config_json = decoder_to_bytes(decoder)
    weights_path.write_bytes(tensors)
    config_path.write_text(config_json)
    return weights_path, config_path


def load_decoder(path_prefix: str | Path) -> TriplaneDecoder:
    """Rebuild the decoder written by :func:`save_decoder` (strict key and shape checks), in eval mode."""
    weights_path, config_path = _paths(path_prefix)
    for path in (weights_path, config_path):
        if not path.is_file():
            raise FileNotFoundError(f"decoder file {str(path)!r} does not exist; save_decoder writes "
                                    f"{weights_path.name} and {config_path.name} side by side")
    decoder = decoder_from_bytes(weights_path.read_bytes(), config_path.read_text(), source=str(weights_path))
    return decoder.eval()
