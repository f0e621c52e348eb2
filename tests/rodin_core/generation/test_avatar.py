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
from rodin_core.generation.avatar import avatar_digest


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


def _header_length(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def test_a_file_records_the_sha256_of_its_content():
    avatar = make_avatar()
    data = avatar_to_bytes(avatar)
    metadata = json.loads(data[8:_header_length(data)])["__metadata__"]
    assert metadata["sha256"] == avatar_digest({"planes": avatar.planes, "z": avatar.z}, metadata["meta"])
    assert len(metadata["sha256"]) == 64 and set(metadata) == {"format", "format_version", "meta", "sha256"}
    other = Avatar(avatar.planes.clone(), avatar.z.clone(), {**avatar.meta, "seed": 8})
    assert json.loads(avatar_to_bytes(other)[8:_header_length(data)])["__metadata__"]["sha256"] != metadata["sha256"]


@pytest.mark.parametrize("where", ["planes", "z", "meta", "sha256"])
def test_a_flipped_byte_is_refused_in_one_line(where: str):
    avatar = make_avatar()
    data = bytearray(avatar_to_bytes(avatar))
    start = _header_length(data)
    header = data[8:start].decode()
    if where == "planes":  # the planes come first in the data section: flip a low bit of a mantissa
        index = start + 4 * 100
    elif where == "z":
        index = len(data) - 4 * 3
    else:  # a digit inside the meta JSON ("seed": 7), or inside the recorded sha256
        index = 8 + (header.index('\\"seed\\": 7') + len('\\"seed\\": ') if where == "meta" else
                     header.index('"sha256":"') + len('"sha256":"'))
    data[index] ^= 0x01
    with pytest.raises(AvatarFileError, match=r"^flipped.safetensors is a damaged avatar file: its content does not "
                                              r"match the sha256 [0-9a-f]{12}\.\.\. it was written with; copy it "
                                              r"again or regenerate it$"):
        avatar_from_bytes(bytes(data), source="flipped.safetensors")


def test_a_file_written_before_the_checksum_still_loads():
    avatar = make_avatar()
    metadata = {"format": "rodin.avatar", "format_version": "1", "meta": json.dumps(avatar.meta, sort_keys=True)}
    older = st_save({"planes": avatar.planes, "z": avatar.z}, metadata=metadata)
    back = avatar_from_bytes(older)
    assert torch.equal(back.planes, avatar.planes) and torch.equal(back.z, avatar.z) and back.meta == avatar.meta
    renamed = {**metadata, "sha257": "0" * 64}  # a damaged key is no older file
    with pytest.raises(AvatarFileError, match=r"damaged avatar file \(unknown header entries \['sha257'\]\)"):
        avatar_from_bytes(st_save({"planes": avatar.planes}, metadata=renamed))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_planes_or_latents_are_neither_written_nor_read(value: float, tmp_path):
    avatar = make_avatar()
    avatar.planes[1, 2, 3, 4] = value
    with pytest.raises(AvatarFileError, match=r"^the avatar holds 1 NaN or infinite values in planes \(3, 4, 16, 16\); "
                                              r"it would render black"):
        save_avatar(avatar, tmp_path / "a.safetensors")
    assert list(tmp_path.iterdir()) == []
    metadata = {"format": "rodin.avatar", "format_version": "1", "meta": "{}"}
    with pytest.raises(AvatarFileError, match=r"^nan.safetensors holds 1 NaN or infinite values in planes "
                                              r"\(3, 4, 16, 16\); it cannot be rendered or meshed, regenerate it$"):
        avatar_from_bytes(st_save({"planes": avatar.planes}, metadata=metadata), source="nan.safetensors")
    latent = make_avatar()
    latent.z[0] = value
    with pytest.raises(AvatarFileError, match=r"holds 1 NaN or infinite values in z \(8,\)"):
        avatar_from_bytes(st_save({"planes": latent.planes, "z": latent.z}, metadata=metadata), source="z")
