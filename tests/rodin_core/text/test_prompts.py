"""Prompts -> text embeddings of the tower sharing the encoder's space (appendix B.3, B.5): CLIP's, avatar-CLIP's."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from rodin_core.encoders import EncoderConfig
from rodin_core.text.files import save_avatar_clip
from rodin_core.text.model import AvatarClip, AvatarClipConfig
from rodin_core.text.prompts import (
    AvatarClipPrompts,
    ClipPrompts,
    TextTowerError,
    check_prompt,
    prompt_encoder,
)
from rodin_core.text.sentence import PromptError

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}}
"""ViT-B-32 shrunk (random weights), with the real tokenizer's vocabulary and a 12-token context."""


def test_check_prompt_refuses_empty_and_absurdly_long_prompts() -> None:
    assert check_prompt("  a  smiling\twoman ") == "a smiling woman"
    for empty in ("", "   ", None):
        with pytest.raises(PromptError, match="the prompt is empty"):
            check_prompt(empty)
    with pytest.raises(PromptError, match="has 1199 characters, more than 1000"):
        check_prompt("red " * 300)


def test_clip_text_tower_embeds_counts_tokens_and_loads_local_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-B-32", pretrained=None, **TINY_CLIP).eval()
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "clip.safetensors"))
    tower = ClipPrompts("ViT-B-32", str(tmp_path / "clip.safetensors"), model_overrides=TINY_CLIP)
    assert tower.dim == 16 and tower.context_length == 12
    prompts = ["a bald man", "a woman with red hair"]
    embeddings = tower(prompts)
    assert embeddings.shape == (2, 16)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(2))
    tokens = open_clip.get_tokenizer("ViT-B-32", context_length=12)(prompts)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(reference.encode_text(tokens), dim=-1)
    torch.testing.assert_close(embeddings, expected)
    assert not torch.allclose(embeddings[0], embeddings[1], atol=1e-3)
    with pytest.raises(PromptError, match="prompt 0 .* tokens, more than the 12 CLIP's text tower reads"):
        tower(["a smiling woman with long red hair and a blue hat and round glasses"])


def test_avatar_clip_tower_and_the_encoder_kinds(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = AvatarClip(AvatarClipConfig(embed_dim=8, image_size=16, image_channels=4, projection_hidden=8))
    weights = str(save_avatar_clip(model, tmp_path / "avatar_clip.safetensors"))
    tower = prompt_encoder(EncoderConfig(kind="avatar_clip", latent_dim=8, avatar_clip_weights=weights))
    assert isinstance(tower, AvatarClipPrompts) and tower.dim == 8
    torch.testing.assert_close(tower(["a bald man"]), model.encode_text(["a bald man"]))
    with pytest.raises(TextTowerError, match="embeds to 8 dimensions but encoder.latent_dim is 16"):
        prompt_encoder(EncoderConfig(kind="avatar_clip", latent_dim=16, avatar_clip_weights=weights))
    with pytest.raises(TextTowerError) as info:
        prompt_encoder(EncoderConfig(kind="learned"))
    message = str(info.value)
    assert "encoder.kind='learned' has no text tower" in message and "\n" not in message
    assert "`rodin train text-embedding --out OUT`" in message and "`rodin train text-prior --out OUT`" in message
