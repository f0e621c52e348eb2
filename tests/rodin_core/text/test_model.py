"""The avatar-CLIP model: embedding shapes and norms, config checks, and the temperature cap."""

import math

import pytest
import torch

from rodin_core.config_dict import ConfigError
from rodin_core.text.model import MAX_LOGIT_SCALE, AvatarClip, AvatarClipConfig

CFG = AvatarClipConfig(embed_dim=12, image_size=16, image_channels=4, projection_hidden=8)


def test_embeddings_are_unit_vectors_of_embed_dim():
    model = AvatarClip(CFG)
    image, text, scale = model(torch.rand(5, 4, 32, 32), torch.randn(5, 384))
    assert image.shape == (5, 12) and text.shape == (5, 12)
    assert torch.allclose(image.norm(dim=-1), torch.ones(5)) and torch.allclose(text.norm(dim=-1), torch.ones(5))
    assert scale.item() == pytest.approx(1 / 0.07)
    assert model.encode_images(torch.rand(2, 3, 16, 16)).shape == (2, 12)


def test_temperature_is_capped_at_one_hundredth():
    model = AvatarClip(CFG)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scale().item() == pytest.approx(math.exp(MAX_LOGIT_SCALE)) == pytest.approx(100.0)


def test_sentence_embeddings_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match=r"sentence embeddings must be \(B, 384\), got \(2, 512\)"):
        AvatarClip(CFG).project_text(torch.randn(2, 512))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("embed_dim", 1, "bad value for embed_dim: 1"),
    ("init_temperature", 0.0, "bad value for init_temperature: 0.0"),
    ("image_pooling", "max", "image_pooling='max' is not a pooling"),
    ("text_model", "bert", "text_model='bert' is not available"),
])
def test_bad_config_fields_are_named(field, value, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        AvatarClipConfig(**{field: value}).validate()
