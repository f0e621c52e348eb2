"""``rodin text`` (workflows.text_commands; appendix B.5): prompt -> text prior z -> avatar files, and its errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from rodin_core.generation import load_avatar
from rodin_core.generation.job import GenerateInputError
from rodin_core.stage_specs import TEXT_PRIOR
from rodin_core.text.files import save_avatar_clip
from rodin_core.text.model import AvatarClip, AvatarClipConfig
from rodin_core.text.sentence import PromptError
from workflows.cli import main
from workflows.text_commands import prompt_slug, text_to_avatar

from ..generation_data import (
    commit_checkpoint,
    commit_decoder,
    generation_config,
    make_generation_root,
)

TEXT_MICRO = ["text_prior.mlp.depth=2", "text_prior.mlp.width=16", "text_prior.diffusion.steps=40",
              "text_prior.diffusion.sampling_steps=3"]
SHOW = {"views": 2, "resolution": 16}
"""Two 16-pixel turntable frames per avatar: enough to check the files."""


@pytest.fixture(scope="module")
def text_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store whose base reads the image tower of a random avatar-CLIP file (z of 8 values), with an untrained
    text prior of that encoder."""
    root = tmp_path_factory.mktemp("text-root")
    torch.manual_seed(0)
    weights = save_avatar_clip(AvatarClip(AvatarClipConfig(embed_dim=8, image_size=16, image_channels=4,
                                                           projection_hidden=8)), root / "avatar_clip.safetensors")
    cfg = generation_config("encoder.kind=avatar_clip", f"encoder.avatar_clip_weights={weights}", *TEXT_MICRO)
    out = str(root / "store")
    for stage_name in ("base", "upsampler", TEXT_PRIOR):
        commit_checkpoint(out, stage_name, cfg)
    commit_decoder(out, cfg)
    return out


def test_same_prompt_and_seed_give_the_same_avatar_and_other_prompts_other_z(text_root, tmp_path):
    prompt = "a woman with afro hair in red"
    first = text_to_avatar(text_root, prompt, tmp_path / "a", n=2, seed=3, **SHOW)
    again = text_to_avatar(text_root, prompt, tmp_path / "b", seed=3, **SHOW)
    other = text_to_avatar(text_root, "a bald man with a beard", tmp_path / "c", seed=3, **SHOW)
    assert [a["seed"] for a in first["avatars"]] == [3, 4] and first["prompt"] == prompt
    made = load_avatar(first["avatars"][0]["avatar"])
    assert Path(first["avatars"][0]["avatar"]).name == "a-woman-with-afro-hair-in-red-3.safetensors"
    assert torch.equal(made.planes, load_avatar(again["avatars"][0]["avatar"]).planes)  # bit-identical
    assert made.meta["prompt"] == prompt and made.meta["kind"] == "text" and made.meta["seed"] == 3
    assert made.meta["text_guidance_scale"] == 2.0
    assert not torch.allclose(made.z, load_avatar(other["avatars"][0]["avatar"]).z, atol=1e-4)
    assert not torch.allclose(made.z, load_avatar(first["avatars"][1]["avatar"]).z, atol=1e-4)
    assert Path(first["avatars"][1]["turntable"]).is_file() and Path(first["sheet"]).is_file()
    assert len(list((tmp_path / "a" / "a-woman-with-afro-hair-in-red-3-turntable").glob("frame_*.png"))) == 2


def test_a_prompt_longer_than_the_text_tower_reads_is_refused(text_root, tmp_path):
    long = " ".join(["a smiling woman with long red hair and a blue hat"] * 16)  # < 1,000 characters, > 128 tokens
    with pytest.raises(PromptError, match=r"^the prompt .* has \d+ tokens, more than the 128 the avatar_clip text tower reads"):
        text_to_avatar(text_root, long, tmp_path, **SHOW)


def test_a_store_without_a_text_prior_or_a_text_tower_names_what_to_train(tmp_path):
    learned = make_generation_root(tmp_path / "learned", generation_config(*TEXT_MICRO),
                                   stages=("base", "upsampler", TEXT_PRIOR))
    with pytest.raises(GenerateInputError) as info:
        text_to_avatar(learned, "a man", tmp_path / "d", **SHOW)
    message = str(info.value)
    assert "encoder.kind='learned', which has no text tower" in message
    assert "`rodin train text-embedding --out " in message and "`rodin train text-prior --out " in message
    torch.manual_seed(0)
    weights = save_avatar_clip(AvatarClip(AvatarClipConfig(embed_dim=8, image_size=16, image_channels=4,
                                                           projection_hidden=8)), tmp_path / "clip.safetensors")
    cfg = generation_config("encoder.kind=avatar_clip", f"encoder.avatar_clip_weights={weights}")
    bare = make_generation_root(tmp_path / "bare", cfg, stages=("base", "upsampler"))
    expected = f"no trained text prior under {bare}/checkpoints; train it: `rodin train text-prior --out {bare}`"
    with pytest.raises(GenerateInputError, match=re.escape(expected)):
        text_to_avatar(bare, "a man", tmp_path / "d", **SHOW)


@pytest.mark.parametrize("prompt, expected", [
    ("", "rodin: the prompt is empty (''); describe the avatar"),
    ("   ", "rodin: the prompt is empty ("),
    ("red " * 300, "characters, more than 1000; shorten it"),
])
def test_cli_refuses_an_empty_or_over_long_prompt_in_one_line(tmp_path, capsys, prompt, expected):
    assert main(["text", prompt, "--out", str(tmp_path / "nowhere"), "--dest", str(tmp_path / "d")]) == 2
    captured = capsys.readouterr()
    assert expected in captured.err and captured.err.count("\n") == 1 and captured.out == ""
    assert not (tmp_path / "d").exists()


def test_cli_writes_the_avatars(text_root, tmp_path, capsys):
    assert main(["text", "a smiling man in a green hoodie", "--out", text_root, "--dest", str(tmp_path),
                 "--n", "1", "--seed", "2", "--guidance", "0", "--views", "2", "--resolution", "16"]) == 0
    assert '"text_guidance_scale": 0.0' in capsys.readouterr().out
    assert load_avatar(tmp_path / "a-smiling-man-in-a-green-hoodie-2.safetensors").meta["text_guidance_scale"] == 0.0


def test_prompt_slug() -> None:
    assert prompt_slug("A woman, with AFRO hair!") == "a-woman-with-afro-hair"
    assert prompt_slug("???") == "prompt" and len(prompt_slug("word " * 40)) <= 40
