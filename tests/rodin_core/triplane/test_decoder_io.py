"""Saving and strictly reloading the shared tri-plane decoder (paper Eq. 1, appendix B.2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from rodin_core.triplane.decoder_io import (
    DecoderLoadError,
    decoder_from_bytes,
    decoder_to_bytes,
    load_decoder,
    save_decoder,
)
from rodin_core.triplane.field import DecoderConfig, TriplaneDecoder


def _decoder(hidden: int = 16) -> TriplaneDecoder:
    torch.manual_seed(0)
    return TriplaneDecoder(DecoderConfig(channels=4, hidden=hidden, layers=3, feature_frequencies=2,
                                         direction_frequencies=1)).eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(32, 4, generator=generator)
    directions = torch.nn.functional.normalize(torch.randn(32, 3, generator=generator), dim=-1)
    return features, directions


def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    decoder = _decoder()
    weights, config = save_decoder(decoder, tmp_path / "ckpt" / "decoder")
    assert weights.name == "decoder.safetensors" and config.name == "decoder.json"
    assert json.loads(config.read_text())["decoder"] == decoder.cfg.to_dict()
    loaded = load_decoder(tmp_path / "ckpt" / "decoder")
    assert loaded.cfg == decoder.cfg and not loaded.training
    with torch.no_grad():
        for a, b in zip(decoder(*_inputs()), loaded(*_inputs())):
            assert torch.equal(a, b)


def test_bytes_round_trip_matches_the_file_format() -> None:
    decoder = _decoder()
    tensors, config_json = decoder_to_bytes(decoder)
    loaded = decoder_from_bytes(tensors, config_json)
    with torch.no_grad():
        assert torch.equal(decoder(*_inputs())[1], loaded(*_inputs())[1])


def test_mismatched_state_dict_names_missing_unexpected_and_shapes() -> None:
    decoder = _decoder()
    _, config_json = decoder_to_bytes(decoder)
    state = {k: v.clone() for k, v in decoder.state_dict().items()}
    missing = next(iter(state))
    del state[missing]
    state["extra.weight"] = torch.zeros(2)
    state["colour.weight"] = torch.zeros(3, 5)
    with pytest.raises(DecoderLoadError) as info:
        decoder_from_bytes(st_save(state), config_json, source="shard-7/decoder.safetensors")
    text = str(info.value)
    assert "shard-7/decoder.safetensors" in text and missing in text and "extra.weight" in text
    assert "colour.weight: stored (3, 5)" in text


def test_weights_of_another_width_are_rejected(tmp_path: Path) -> None:
    save_decoder(_decoder(hidden=16), tmp_path / "a")
    tensors, _ = decoder_to_bytes(_decoder(hidden=8))
    (tmp_path / "a.safetensors").write_bytes(tensors)
    with pytest.raises(DecoderLoadError, match="shape mismatches"):
        load_decoder(tmp_path / "a")


def test_bad_config_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    tensors, config_json = decoder_to_bytes(_decoder())
    with pytest.raises(DecoderLoadError, match="not valid JSON"):
        decoder_from_bytes(tensors, "{")
    wrong_version = json.loads(config_json) | {"format_version": 99}
    with pytest.raises(DecoderLoadError, match="format_version 99"):
        decoder_from_bytes(tensors, json.dumps(wrong_version))
    with pytest.raises(DecoderLoadError, match="not readable safetensors"):
        decoder_from_bytes(b"junk", config_json)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_decoder(tmp_path / "missing")


def test_a_decoder_of_the_previous_format_is_refused_naming_the_command() -> None:
    tensors, config_json = decoder_to_bytes(_decoder())
    previous = json.loads(config_json) | {"format_version": 1}
    with pytest.raises(DecoderLoadError) as info:
        decoder_from_bytes(tensors, json.dumps(previous), source="data/tiny/decoder/decoder")
    message = str(info.value)
    assert "\n" not in message and "data/tiny/decoder/decoder has format_version 1, this rodin reads 2" in message
    assert "`rodin fit --renders <renders root> --out <dataset root>`" in message
