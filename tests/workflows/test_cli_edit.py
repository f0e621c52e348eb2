"""``rodin edit``: the edited avatar, its turntable and comparison under --dest, and one-line errors for bad
prompts, strengths, avatar files and stores whose encoder has no text space (before any network is loaded).

The stores hold untrained but real checkpoints (tests/generation_data.py) conditioned on a tiny avatar-CLIP
file's image tower (tests/avatar_clip_data.py), or on the learned encoder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rodin_core.fitting.shard_job import torch_threads
from rodin_core.generation import load_avatar, save_avatar
from rodin_core.generation.edit import TextEdit, edit_avatar
from rodin_core.generation.job import load_pipeline, turntable_frames
from rodin_core.imaging import LABEL_HEIGHT, decode_png
from workflows.cli import main

from ..avatar_clip_data import avatar_clip_overrides, tiny_avatar_clip
from ..generation_data import generation_config, make_generation_root
from .test_cli_checks import one_line, rodin

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TARGET = "a person with blonde hair"


@pytest.fixture(scope="module")
def text_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("edit-store")
    weights = tiny_avatar_clip(folder / "avatar_clip.safetensors")
    with torch_threads(1):
        return make_generation_root(folder / "data", generation_config(*avatar_clip_overrides(weights)))


@pytest.fixture(scope="module")
def learned_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    with torch_threads(1):
        return make_generation_root(tmp_path_factory.mktemp("edit-learned") / "data")


@pytest.fixture(scope="module")
def sampled(text_root: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with torch_threads(1):
        avatar = load_pipeline(text_root).sample(1, seed=3)[0]
    return save_avatar(avatar, tmp_path_factory.mktemp("edit-sampled") / "avatar-000.safetensors")


def test_edit_writes_the_avatar_its_turntable_and_a_comparison(text_root, sampled, tmp_path, capsys) -> None:
    dest = tmp_path / "edited"
    assert main(["edit", str(sampled), "--to", TARGET, "--strength", "0.5", "--out", text_root, "--views", "3",
                 "--resolution", "16", "--dest", str(dest)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["avatar"] == str(dest / "avatar-000-edit.safetensors") and printed["seed"] == 3
    assert printed["edit"] == {"target": TARGET, "source": "a person", "strength": 0.5, "keep": 0.0}
    edited, source = load_avatar(dest / "avatar-000-edit.safetensors"), load_avatar(sampled)
    pipeline = load_pipeline(text_root)
    expected = edit_avatar(pipeline, source, TextEdit(TARGET, "a person", 0.5), name="avatar-000.safetensors")
    assert torch.equal(edited.planes, expected.planes) and edited.meta == expected.meta
    assert printed["latent_shift"] == pytest.approx(float((edited.z - source.z).norm()), rel=1e-5)
    assert printed["latent_shift"] > 0  # a prior draw, off the sphere: z + s·δ is brought onto it, direction kept
    assert math.isclose(float(edited.z.norm()), math.sqrt(source.z.numel()), rel_tol=1e-5)
    frames = sorted((dest / "avatar-000-edit-turntable").iterdir())
    assert [f.name for f in frames] == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    assert (dest / "avatar-000-edit-turntable.gif").is_file()
    turntable = turntable_frames(pipeline.cfg, pipeline.decoder, edited.planes, 3, 16)
    assert np.array_equal(decode_png(frames[2].read_bytes()), turntable[2])
    sheet = decode_png((dest / "avatar-000-edit.png").read_bytes())
    assert sheet.shape == (16 + LABEL_HEIGHT, 2 * 16, 3)
    before = turntable_frames(pipeline.cfg, pipeline.decoder, source.planes, 1, 16)[0]
    assert np.array_equal(sheet[:16, :16], before) and np.array_equal(sheet[:16, 16:], turntable[0])


def test_the_same_prompt_twice_gives_back_the_source(text_root, sampled, tmp_path, capsys) -> None:
    assert main(["edit", str(sampled), "--to", TARGET, "--from", TARGET, "--out", text_root, "--views", "1",
                 "--dest", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["direction_norm"] == 0.0
    edited, source = load_avatar(tmp_path / "avatar-000-edit.safetensors"), load_avatar(sampled)
    assert torch.equal(edited.planes, source.planes) and torch.equal(edited.z, source.z)


def test_keep_follows_the_source_z_for_that_share_of_the_base_steps(text_root, sampled, tmp_path, capsys) -> None:
    assert main(["edit", str(sampled), "--to", TARGET, "--keep", "0.5", "--out", text_root, "--views", "1",
                 "--resolution", "16", "--dest", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["edit"]["keep"] == 0.5
    edited, source = load_avatar(tmp_path / "avatar-000-edit.safetensors"), load_avatar(sampled)
    expected = edit_avatar(load_pipeline(text_root), source, TextEdit(TARGET, keep=0.5), name="avatar-000.safetensors")
    assert torch.equal(edited.planes, expected.planes) and edited.meta["edit"]["keep"] == 0.5
    err = _error(capsys, ["edit", str(sampled), "--to", TARGET, "--keep", "1.5", "--out", text_root, "--dest",
                          str(tmp_path / "x")])
    assert "argument --keep: must be a number from 0 to 1, got '1.5'" in err and not (tmp_path / "x").exists()


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    return captured.err


def test_bad_inputs_are_one_line_and_write_nothing(text_root, learned_root, sampled, tmp_path, capsys) -> None:
    dest = ["--dest", str(tmp_path / "x")]
    err = _error(capsys, ["edit", str(sampled), "--to", "", "--out", text_root, *dest])
    assert err.startswith("rodin edit: error: argument --to: must be a non-empty prompt")
    err = _error(capsys, ["edit", str(sampled), "--to", TARGET, "--strength", "nan", "--out", text_root, *dest])
    assert "argument --strength: must be a finite number, got 'nan'" in err
    long = "a person with " + "very " * 150 + "long hair"
    err = _error(capsys, ["edit", str(sampled), "--to", long, "--out", text_root, *dest])
    assert "rodin: the --to prompt ('a person with very very very very very" in err
    assert "tokens, more than the 128 the avatar_clip text tower reads; shorten it" in err
    err = _error(capsys, ["edit", str(sampled), "--to", TARGET, "--from", long, "--out", text_root, *dest])
    assert "the --from prompt" in err
    err = _error(capsys, ["edit", str(tmp_path / "missing.safetensors"), "--to", TARGET, "--out", text_root, *dest])
    assert "no avatar file at" in err
    notes = tmp_path / "notes.safetensors"
    notes.write_text("not an avatar")
    err = _error(capsys, ["edit", str(notes), "--to", TARGET, "--out", text_root, *dest])
    assert "is not an avatar file" in err
    err = _error(capsys, ["edit", str(sampled), "--to", TARGET, "--out", learned_root, *dest])
    assert ("rodin: encoder.kind=learned has no text space (it was trained on images only), so its z cannot be "
            "edited or generated from text; train the base model with encoder.kind avatar_clip or clip") in err
    err = _error(capsys, ["edit", str(sampled), "--to", TARGET, "--out", str(tmp_path / "empty"), *dest])
    assert "no committed base, upsampler checkpoints" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--to", "  "], "rodin edit: error: argument --to: must be a non-empty prompt, e.g. 'a person with blonde hair'"),
    (["--to", TARGET, "--strength", "inf"], "rodin edit: error: argument --strength: must be a finite number"),
])
def test_a_bad_prompt_or_strength_is_one_line_before_torch_is_imported(args, message, tmp_path) -> None:
    code, err, imported = rodin("edit", str(tmp_path / "a.safetensors"), *args, "--out", str(tmp_path),
                                "--dest", str(tmp_path / "x"))
    assert code == 2 and message in one_line(err) and imported == []


def test_a_store_without_a_text_space_is_refused_before_prefect_or_ray(learned_root, sampled, tmp_path) -> None:
    code, err, imported = rodin("edit", str(sampled), "--to", TARGET, "--out", learned_root, "--dest",
                                str(tmp_path / "x"))
    assert code == 2 and "encoder.kind=learned has no text space" in one_line(err)
    assert "prefect" not in imported and "ray" not in imported and not (tmp_path / "x").exists()
