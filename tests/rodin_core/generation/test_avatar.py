"""Avatar files (safetensors + JSON meta): exact byte and file round trips, and clear errors on bad files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save as st_save

from rodin_core.generation import (
    Avatar,
    AvatarFileError,
    avatar_from_bytes,
    avatar_to_bytes,
    load_avatar,
    save_avatar,
)


def make_avatar(with_z: bool = True) -> Avatar:
    generator = torch.Generator().manual_seed(0)
    planes = torch.randn(3, 4, 16, 16, generator=generator)  # (3, C, H, W)
    z = torch.randn(8, generator=generator) if with_z else None  # (D,)
    meta = {"kind": "interpolate", "seed": 7, "guidance_scale": 2.5, "sampler": "ddim", "steps": None,
            "preset": "tiny", "decoder_sha256": "ab" * 32, "t": 0.25, "sources": [{"kind": "sample", "seed": 1}]}
    return Avatar(planes, z, meta)


@pytest.mark.parametrize("with_z", [True, False])
def test_bytes_round_trip_is_exact(with_z: bool):
    avatar = make_avatar(with_z)
    back = avatar_from_bytes(avatar_to_bytes(avatar))
    assert torch.equal(back.planes, avatar.planes) and back.planes.dtype == torch.float32
    assert (back.z is None) if not with_z else torch.equal(back.z, avatar.z)
    assert back.meta == avatar.meta
    assert back.kind == "interpolate"


def test_float64_planes_are_stored_as_float32():
    avatar = make_avatar()
    wide = Avatar(avatar.planes.double(), avatar.z.double(), {})
    back = avatar_from_bytes(avatar_to_bytes(wide))
    assert back.planes.dtype == torch.float32 and torch.equal(back.planes, avatar.planes)
    assert back.z.dtype == torch.float32 and back.meta == {}


def test_file_round_trip_writes_exactly_the_path(tmp_path):
    avatar = make_avatar()
    path = tmp_path / "nested" / "a.safetensors"
    assert save_avatar(avatar, path) == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.safetensors"]
    back = load_avatar(str(path))
    assert torch.equal(back.planes, avatar.planes) and torch.equal(back.z, avatar.z) and back.meta == avatar.meta


def test_save_needs_the_safetensors_suffix(tmp_path):
    with pytest.raises(AvatarFileError, match=r"end in \.safetensors.*'a\.safetensors'"):
        save_avatar(make_avatar(), tmp_path / "a.pt")
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_an_avatar_file_error(tmp_path):
    with pytest.raises(AvatarFileError, match="no avatar file at .*missing.safetensors"):
        load_avatar(tmp_path / "missing.safetensors")


def test_other_safetensors_file_is_not_an_avatar(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(st_save({"planes": torch.zeros(3, 4, 8, 8)}))
    with pytest.raises(AvatarFileError, match=r"weights\.safetensors is not an avatar file"):
        load_avatar(path)


@pytest.mark.parametrize("data", [b"", b"not a safetensors file at all", (2**40).to_bytes(8, "little") + b"{}"])
def test_garbage_bytes_name_the_source(data: bytes):
    with pytest.raises(AvatarFileError, match="portrait.png is not an avatar file"):
        avatar_from_bytes(data, source="portrait.png")


def test_damaged_tensor_data_is_refused():
    data = avatar_to_bytes(make_avatar())
    with pytest.raises(AvatarFileError, match="damaged avatar file"):
        avatar_from_bytes(data[:-16], source="cut.safetensors")


def test_other_format_version_is_refused():
    metadata = {"format": "rodin.avatar", "format_version": "99", "meta": "{}"}
    data = st_save({"planes": torch.zeros(3, 4, 8, 8)}, metadata=metadata)
    with pytest.raises(AvatarFileError, match="format_version '99'"):
        avatar_from_bytes(data)


def test_wrong_tensors_in_an_avatar_file_are_refused():
    metadata = {"format": "rodin.avatar", "format_version": "1", "meta": json.dumps({"kind": "sample"})}
    with pytest.raises(AvatarFileError, match=r"'planes'.*got tensors \['weights'\]"):
        avatar_from_bytes(st_save({"weights": torch.zeros(2)}, metadata=metadata))
    with pytest.raises(AvatarFileError, match=r"invalid avatar: Avatar.planes must be a tri-plane tensor"):
        avatar_from_bytes(st_save({"planes": torch.zeros(4, 8, 8)}, metadata=metadata))


def test_avatar_checks_its_fields():
    planes = torch.zeros(3, 4, 8, 8)
    with pytest.raises(ValueError, match=r"\(3, C, H, W\), got \(2, 4, 8, 8\)"):
        Avatar(torch.zeros(2, 4, 8, 8), None, {})
    with pytest.raises(ValueError, match="floating point"):
        Avatar(planes.long(), None, {})
    with pytest.raises(ValueError, match=r"float vector \(D,\).*\(1, 8\)"):
        Avatar(planes, torch.zeros(1, 8), {})
    with pytest.raises(ValueError, match="kind'] must be one of"):
        Avatar(planes, None, {"kind": "dream"})
    with pytest.raises(TypeError, match="meta must be a dict"):
        Avatar(planes, None, [("kind", "sample")])


def test_meta_that_is_not_json_cannot_be_saved(tmp_path):
    avatar = Avatar(torch.zeros(3, 4, 8, 8), None, {"seed": torch.tensor(3)})
    with pytest.raises(AvatarFileError, match="JSON-serialisable"):
        save_avatar(avatar, tmp_path / "a.safetensors")
    with pytest.raises(AvatarFileError, match="finite numbers"):
        avatar_to_bytes(Avatar(torch.zeros(3, 4, 8, 8), None, {"guidance_scale": float("nan")}))
