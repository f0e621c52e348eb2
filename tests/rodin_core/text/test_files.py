"""Avatar-CLIP files: a save/reload round trip, strict keys, and the frozen image tower as the conditioning encoder."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from rodin_core.avatar_clip_file import AvatarClipFileError
from rodin_core.config_dict import ConfigError
from rodin_core.encoders import (
    AvatarClipImageEncoder,
    EncoderConfig,
    EncoderUnavailableError,
    build_encoder,
)
from rodin_core.text.files import load_avatar_clip, save_avatar_clip
from rodin_core.text.model import AvatarClip, AvatarClipConfig

CFG = AvatarClipConfig(embed_dim=8, image_size=16, image_channels=4, projection_hidden=8)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = AvatarClip(CFG).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.5)
    return model, save_avatar_clip(model, tmp_path / "avatar_clip.safetensors", {"heldout": {"top1": 0.5}})


def test_round_trip_gives_the_same_embeddings_and_temperature(saved):
    model, path = saved
    loaded = load_avatar_clip(str(path))
    images, sentences = torch.rand(3, 4, 24, 24), torch.randn(3, 384)
    assert loaded.cfg == CFG and not loaded.training
    assert torch.equal(loaded.encode_images(images), model.encode_images(images))
    assert torch.equal(loaded.project_text(sentences), model.project_text(sentences))
    assert loaded.logit_scale.item() == 2.5
    assert json.loads(path.with_suffix(".json").read_text())["metrics"] == {"heldout": {"top1": 0.5}}


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_a_missing_or_extra_key_is_one_line(saved, change):
    _, path = saved
    state = load_file(path)
    if change == "extra":
        state["stray.weight"] = torch.zeros(2)
    else:
        del state["text_projection.0.weight"]
    save_file(state, path)
    with pytest.raises(AvatarClipFileError) as info:
        load_avatar_clip(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert ("unexpected keys ['stray.weight']" if change == "extra" else
            "missing keys ['text_projection.0.weight']") in message


def test_an_unknown_config_key_or_a_foreign_document_is_one_line(saved):
    _, path = saved
    document = json.loads(path.with_suffix(".json").read_text())
    document["model"]["depth"] = 3
    path.with_suffix(".json").write_text(json.dumps(document))
    with pytest.raises(AvatarClipFileError, match=r"bad avatar-CLIP config \(unknown AvatarClipConfig keys \['depth'\]"):
        load_avatar_clip(str(path))
    path.with_suffix(".json").write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(AvatarClipFileError, match="is not a 'rodin.avatar_clip' document"):
        load_avatar_clip(str(path))


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(AvatarClipFileError, match="does not exist; train one with `rodin train text-embedding"):
        load_avatar_clip(str(tmp_path / "none.safetensors"))
    with pytest.raises(AvatarClipFileError, match="must be a .safetensors file"):
        load_avatar_clip(str(tmp_path / "weights.pt"))


def test_the_encoder_kind_avatar_clip_is_the_frozen_image_tower(saved):
    model, path = saved
    encoder = build_encoder(EncoderConfig(kind="avatar_clip", latent_dim=8, avatar_clip_weights=str(path)))
    assert isinstance(encoder, AvatarClipImageEncoder) and encoder.trainable is False
    encoder.train()
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    images = torch.rand(2, 4, 16, 16)
    z = encoder(images)
    assert z.shape == (2, 8)
    assert torch.allclose(z.norm(dim=-1), torch.full((2,), 8 ** 0.5))
    assert torch.allclose(z / 8 ** 0.5, model.encode_images(images), atol=1e-6)


def test_the_encoder_refuses_a_wrong_size_or_an_absent_file(saved, tmp_path):
    _, path = saved
    with pytest.raises(ConfigError, match="encoder.latent_dim=512 but the avatar-CLIP file .* embeds to 8 dimensions; "
                                          "set encoder.latent_dim=8"):
        build_encoder(EncoderConfig(kind="avatar_clip", latent_dim=512, avatar_clip_weights=str(path)))
    with pytest.raises(EncoderUnavailableError, match="does not exist"):
        build_encoder(EncoderConfig(kind="avatar_clip", latent_dim=8,
                                    avatar_clip_weights=str(tmp_path / "gone.safetensors")))
    with pytest.raises(ConfigError, match="encoder.avatar_clip_weights='' is not an avatar-CLIP weights file"):
        EncoderConfig(kind="avatar_clip").validate()
