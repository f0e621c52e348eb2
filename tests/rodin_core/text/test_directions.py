"""Text edit directions (appendix B.3): δ in z units from the text tower of the store's encoder, exactly zero for
identical prompts and antisymmetric; prompts checked with the flag they came from; δ through CLIP's text tower.

CLIP tests use open_clip's ViT-B-32 with a tiny config (its real vocabulary, so that the tokenizer's ids fit) and
never touch the network.
"""

import math
import socket
from pathlib import Path

import open_clip
import pytest
import torch

from rodin_core.encoders import (
    AvatarClipImageEncoder,
    EncoderConfig,
)
from rodin_core.text.directions import text_direction
from rodin_core.text.files import load_avatar_clip
from rodin_core.text.sentence import PromptError
from rodin_core.text.towers import AvatarClipTextTower, CLIPTextTower, text_tower

from ...avatar_clip_data import tiny_avatar_clip
from ...clip_data import TINY_CLIP, save_tiny_clip


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("text direction tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_avatar_clip(tmp_path_factory.mktemp("avatar-clip") / "avatar_clip.safetensors", max_prompt_tokens=16)


@pytest.fixture(scope="module")
def tower(weights: str) -> AvatarClipTextTower:
    return text_tower(EncoderConfig(kind="avatar_clip", latent_dim=8, avatar_clip_weights=weights))


def test_delta_is_the_text_difference_on_the_sphere_z_lives_on(weights: str, tower: AvatarClipTextTower) -> None:
    model = load_avatar_clip(weights)
    delta = text_direction(tower, "a person with blonde hair", "a person")
    text = model.encode_text(["a person with blonde hair", "a person"])  # (2, 8) unit vectors
    assert delta.shape == (8,) and delta.dtype == torch.float32
    torch.testing.assert_close(delta, math.sqrt(8) * (text[0] - text[1]))
    assert float(delta.norm()) > 1e-3
    images = torch.rand(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    z = AvatarClipImageEncoder(weights, latent_dim=8)(images)  # the base model's z of these images
    torch.testing.assert_close(z, math.sqrt(8) * model.encode_images(images))  # the same scale as δ's endpoints


def test_identical_prompts_give_exactly_zero_and_swapping_negates_exactly(tower: AvatarClipTextTower) -> None:
    assert torch.equal(text_direction(tower, "a man with a full beard", "a man with a full beard"), torch.zeros(8))
    forward = text_direction(tower, "a person with glasses", "a person")
    backward = text_direction(tower, "a person", "a person with glasses")
    assert torch.equal(backward, -forward) and forward.abs().max() > 0


@pytest.mark.parametrize(("target", "source", "message"), [
    ("", "a person", r"^the --to prompt is empty \(''\); describe the avatar"),
    ("a person", "   ", r"^the --from prompt is empty \('   '\)"),
    ("a person with " + "very " * 20 + "long hair", "a person",
     (r"^the --to prompt \('a person with very .*\) has \d+ tokens, more than the 16 the avatar_clip text tower "
      r"reads; shorten it$")),
])
def test_empty_or_over_long_prompts_are_one_line_naming_the_flag(tower: AvatarClipTextTower, target: str,
                                                                 source: str, message: str) -> None:
    with pytest.raises(PromptError, match=message) as info:
        text_direction(tower, target, source, ("--to", "--from"))
    assert "\n" not in str(info.value)


def test_clip_text_tower_reads_the_image_towers_weights_and_embeds_on_the_sphere(tmp_path: Path) -> None:
    reference = save_tiny_clip(tmp_path / "clip.safetensors", seed=1)
    tower = CLIPTextTower("ViT-B-32", str(tmp_path / "clip.safetensors"), 16, model_overrides=TINY_CLIP)
    prompts = ["a person with glasses", "a person"]
    tokens = open_clip.get_tokenizer("ViT-B-32", context_length=12)(prompts)
    with torch.no_grad():
        expected = reference.encode_text(tokens, normalize=True)  # (2, 16)
    torch.testing.assert_close(tower.embed(prompts), expected)
    delta = text_direction(tower, *prompts)
    torch.testing.assert_close(delta, 4.0 * (expected[0] - expected[1]))  # sqrt(16) * the unit difference
    assert torch.equal(text_direction(tower, "a person", "a person"), torch.zeros(16))
    assert tower.token_count("a person") == 4  # start, "a", "person", end
    with pytest.raises(PromptError, match=r"has 1[3-9] tokens, more than the 12 the clip text tower reads"):
        text_direction(tower, "a person with " + "very " * 10 + "long hair", "a person")
