"""The frozen sentence encoder: embedding shapes, and one-line errors for empty or over-long prompts."""

import pytest
import torch

from rodin_core.text.model import AvatarClip, AvatarClipConfig
from rodin_core.text.sentence import SENTENCE_DIM, PromptError, SentenceEncoder


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder(max_tokens=32)


def test_prompts_become_unit_embeddings_whose_meaning_is_kept(encoder):
    out = encoder(["a smiling man with short brown hair", "a smiling man with brown hair", "a red striped hoodie"])
    assert out.shape == (3, SENTENCE_DIM) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)
    similarity = out @ out.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2


@pytest.mark.parametrize(("prompts", "message"), [
    (["a man", "   "], r"prompt 1 is empty \('   '\); describe the avatar"),
    ([""], r"prompt 0 is empty"),
    ([], r"no prompt given"),
    (["a man with " + "very " * 40 + "long hair"],
     r"prompt 0 \('a man with very very .*\) has \d+ tokens, more than the 32 the text encoder reads; shorten it"),
])
def test_empty_or_over_long_prompts_are_one_line(encoder, prompts, message):
    with pytest.raises(PromptError, match=message) as info:
        encoder(prompts)
    assert "\n" not in str(info.value)


def test_the_model_embeds_prompts_in_its_joint_space(encoder):
    model = AvatarClip(AvatarClipConfig(embed_dim=6, image_size=16, image_channels=4, projection_hidden=8))
    model.use_sentence_encoder(encoder)
    text = model.encode_text(["a bald man", "a woman with a bun"])
    assert text.shape == (2, 6) and torch.allclose(text.norm(dim=-1), torch.ones(2))
    with pytest.raises(PromptError, match="prompt 0 is empty"):
        model.encode_text([""])
