"""Text towers (appendix B.3, B.5): prompts -> unit embeddings of the tower sharing the encoder's space (avatar-CLIP's,
CLIP's); prompts checked before and after a tower is loaded; encoders without a text space or weights refused.

CLIP tests use open_clip's ViT-B-32 with a tiny config (its real vocabulary, so that the tokenizer's ids fit) and
never touch the network.
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch

from rodin_core.encoders import EncoderConfig, EncoderUnavailableError
from rodin_core.text.files import load_avatar_clip
from rodin_core.text.sentence import PromptError
from rodin_core.text.towers import (
    AvatarClipTextTower,
    CLIPTextTower,
    NoTextSpaceError,
    check_prompt,
    clean_prompt,
    text_tower,
)

from ...avatar_clip_data import tiny_avatar_clip
from ...clip_data import TINY_CLIP, save_tiny_clip


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_avatar_clip(tmp_path_factory.mktemp("avatar-clip") / "avatar_clip.safetensors", max_prompt_tokens=16)


def test_clean_prompt_collapses_whitespace_and_refuses_empty_and_absurdly_long_prompts() -> None:
    assert clean_prompt("  a  smiling\twoman ") == "a smiling woman"
    for empty in ("", "   ", None):
        with pytest.raises(PromptError, match="^the prompt is empty"):
            clean_prompt(empty)
    with pytest.raises(PromptError, match="^the --to prompt is empty"):
        clean_prompt(" ", "--to")
    with pytest.raises(PromptError, match="has 1199 characters, more than 1000"):
        clean_prompt("red " * 300)


def test_avatar_clip_tower_embeds_as_its_model_and_counts_its_tokens(weights: str) -> None:
    tower = text_tower(EncoderConfig(kind="avatar_clip", latent_dim=8, avatar_clip_weights=weights))
    assert isinstance(tower, AvatarClipTextTower) and tower.latent_dim == 8 and tower.max_tokens == 16
    embeddings = tower.embed(["a bald man", "a woman with red hair"])  # (2, 8)
    torch.testing.assert_close(embeddings, load_avatar_clip(weights).encode_text(["a bald man", "a woman with red hair"]))
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(2))
    assert check_prompt(tower, " a  bald man ") == "a bald man"
    with pytest.raises(PromptError, match=r"^the prompt \('a person with very .*\) has \d+ tokens, more than the 16"):
        check_prompt(tower, "a person with " + "very " * 20 + "long hair")


def test_the_learned_encoder_has_no_text_space() -> None:
    with pytest.raises(NoTextSpaceError, match=r"^encoder.kind=learned has no text space .*; train the base model "
                                               r"with encoder.kind avatar_clip or clip$"):
        text_tower(EncoderConfig(kind="learned", latent_dim=8))


def test_an_avatar_clip_file_of_another_size_or_missing_is_refused(weights: str, tmp_path: Path) -> None:
    with pytest.raises(EncoderUnavailableError, match="embeds to 8 dimensions, z has 16"):
        text_tower(EncoderConfig(kind="avatar_clip", latent_dim=16, avatar_clip_weights=weights))
    missing = str(tmp_path / "avatar_clip.safetensors")
    with pytest.raises(EncoderUnavailableError, match="avatar_clip.safetensors' does not exist"):
        text_tower(EncoderConfig(kind="avatar_clip", latent_dim=8, avatar_clip_weights=missing))


def test_clip_text_tower_reads_local_weights_and_embeds_on_the_sphere(tmp_path: Path) -> None:
    reference = save_tiny_clip(tmp_path / "clip.safetensors")
    tower = CLIPTextTower("ViT-B-32", str(tmp_path / "clip.safetensors"), 16, model_overrides=TINY_CLIP)
    assert tower.latent_dim == 16 and tower.max_tokens == 12
    prompts = ["a bald man", "a woman with red hair"]
    with torch.no_grad():
        expected = reference.encode_text(open_clip.get_tokenizer("ViT-B-32", context_length=12)(prompts), normalize=True)
    torch.testing.assert_close(tower.embed(prompts), expected)
    assert not torch.allclose(expected[0], expected[1], atol=1e-3)
    assert tower.token_count("a person") == 4  # start, "a", "person", end
    with pytest.raises(PromptError, match=r"has 1[3-9] tokens, more than the 12 the clip text tower reads"):
        check_prompt(tower, "a smiling woman with long red hair and a blue hat and round glasses")
    with pytest.raises(EncoderUnavailableError, match="embeds to 16 dimensions but z has 8"):
        CLIPTextTower("ViT-B-32", str(tmp_path / "clip.safetensors"), 8, model_overrides=TINY_CLIP)


def test_clip_weights_that_are_not_here_are_one_error_naming_the_tag_and_the_path(tmp_path: Path) -> None:
    with pytest.raises(EncoderUnavailableError) as info:
        text_tower(EncoderConfig(kind="clip", clip_pretrained="openai"), cache_dir=tmp_path)
    message = str(info.value)
    for part in ("'openai'", "not in the local Hugging Face cache", "cache the tag's weights",
                 "open_clip_model.safetensors the base model was trained with", "encoder.clip_pretrained"):
        assert part in message
    assert "\n" not in message and "encoder.kind=learned" not in message  # no way out through a text-less encoder
    with pytest.raises(EncoderUnavailableError, match="the local weights file .*missing.safetensors' does not exist"):
        text_tower(EncoderConfig(kind="clip", clip_pretrained=str(tmp_path / "missing.safetensors")))
