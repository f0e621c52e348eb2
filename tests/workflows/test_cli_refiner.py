"""``rodin train refiner`` and ``rodin render-avatar --refine`` (paper §3.3, Fig. 8): wiring and one-line errors."""

import json

import numpy as np
import pytest
import torch

from rodin_core.config import preset_config
from rodin_core.datasets.decoder import load_decoder
from rodin_core.datasets.refiner_store import commit_refiner, read_refiner
from rodin_core.datasets.triplanes import iter_planes
from rodin_core.generation import Avatar, save_avatar
from rodin_core.generation.job import render_settings
from rodin_core.imaging import decode_png, to_uint8
from rodin_core.networks.refiner import ConvRefiner, RefinerConfig, bilinear_upsample
from rodin_core.networks.refiner_io import TrainedRefiner
from rodin_core.rendering.renderer import render_image
from rodin_core.turntable import orbit_cameras
from workflows.cli import main
from workflows.cli_parser import build_parser

from ..refiner_data import LOW_SIDE, make_refiner_corpora


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return make_refiner_corpora(tmp_path_factory.mktemp("refiner"))


def _one_line(capsys, argv, code=2):
    assert main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    return captured.err


def test_the_flags_reach_the_commands() -> None:
    args = build_parser().parse_args(["render-avatar", "a.safetensors", "--out", "o", "--dest", "d", "--refine"])
    assert args.refine is True and args.resolution is None
    assert build_parser().parse_args(["render-avatar", "a", "--out", "o", "--dest", "d"]).refine is False
    args = build_parser().parse_args(["train", "refiner", "--out", "o", "--hr-renders", "h", "--pairs-cache", "c"])
    assert (args.stage, args.hr_renders, args.pairs_cache) == ("refiner", "h", "c")


def test_train_refiner_commits_a_refiner_and_refuses_bad_input_in_one_line(corpora, tmp_path, capsys) -> None:
    out, high = corpora
    settings = ["--set", "refiner.steps=2", "--set", "refiner.perceptual_weight=0", "--set", "refiner.patch=6",
                "--set", "refiner.net.channels=4", "--set", "refiner.net.blocks=1", "--set", "fit.fine_samples=0"]
    assert main(["train", "refiner", "--out", out, "--hr-renders", high, *settings]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["scale"] == 2 and summary["input_resolution"] == LOW_SIDE and summary["last"]["step"] == 2.0
    assert summary["held_out_subjects"] == [5, 6, 7, 8] and summary["train_subjects"] == [0, 1, 2, 3]
    assert read_refiner(out).model.cfg == RefinerConfig(scale=2, channels=4, blocks=1)
    err = _one_line(capsys, ["train", "refiner", "--out", out])
    assert "rodin train refiner: needs --hr-renders" in err
    err = _one_line(capsys, ["train", "refiner", "--out", out, "--hr-renders", high, "--workers", "2"])
    assert "--workers apply to the Ray Train stages" in err
    err = _one_line(capsys, ["train", "base", "--out", out, "--hr-renders", high])
    assert "--hr-renders is the refiner's" in err
    err = _one_line(capsys, ["train", "refiner", "--out", out, "--hr-renders", str(tmp_path / "none")])
    assert f"--hr-renders {tmp_path / 'none'} is no folder" in err
    err = _one_line(capsys, ["train", "refiner", "--out", out, "--hr-renders", high, "--set", "refiner.net.scale=3"])
    assert "rodin: config error: unknown refiner key 'refiner.net.scale'" in err
    _, three = make_refiner_corpora(tmp_path, high_side=3 * LOW_SIDE)
    err = _one_line(capsys, ["train", "refiner", "--out", out, "--hr-renders", three, *settings], code=1)
    assert "the refiner up-samples by 2 or 4" in err


def test_render_avatar_refine_writes_frames_at_twice_the_side(corpora, tmp_path, capsys) -> None:
    out, _ = corpora
    _, sha256 = load_decoder(out)
    planes = dict(iter_planes(out))[0]
    avatar = save_avatar(Avatar(planes, None, {"kind": "fitted", "preset": "tiny", "decoder_sha256": sha256}),
                         tmp_path / "subject.safetensors")
    commit_refiner(out, TrainedRefiner(ConvRefiner(RefinerConfig(channels=4, blocks=1)), {
        "input_resolution": LOW_SIDE, "camera_radius": 4.0, "background": 1.0, "decoder_sha256": sha256}))
    dest = tmp_path / "views"
    assert main(["render-avatar", str(avatar), "--out", out, "--views", "2", "--refine", "--dest", str(dest)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["frame_size"] == 2 * LOW_SIDE and printed["refine_comparison"].endswith("subject-refine.png")
    frames = [decode_png(p.read_bytes()) for p in sorted((dest / "subject-turntable").iterdir())]
    cfg = preset_config("tiny")
    c2w, intrinsics = orbit_cameras(2, 10.0, cfg.render.camera_radius, cfg.render.fov_deg, LOW_SIDE)
    decoder, _ = load_decoder(out)
    for frame, pose, matrix in zip(frames, c2w, intrinsics, strict=True):
        rgb, _ = render_image(planes[None], decoder, torch.as_tensor(pose), torch.as_tensor(matrix), LOW_SIDE,
                              LOW_SIDE, render_settings(cfg), cfg.fit.background)
        up = bilinear_upsample(rgb.permute(2, 0, 1)[None], 2)[0].clamp(0, 1).permute(1, 2, 0).contiguous()
        assert np.array_equal(frame, to_uint8(up))  # an untrained refiner is the bilinear up-sample
    assert decode_png((dest / "subject-refine.png").read_bytes()).shape[1] == 2 * 2 * LOW_SIDE
    commit_refiner(out, TrainedRefiner(ConvRefiner(RefinerConfig(channels=4, blocks=1)), {
        "input_resolution": LOW_SIDE, "camera_radius": 4.0, "background": 1.0, "decoder_sha256": "0" * 64}))
    err = _one_line(capsys, ["render-avatar", str(avatar), "--out", out, "--refine", "--dest", str(dest)])
    assert "was trained on renders of decoder 000000000000" in err and "rodin train refiner --out" in err


def test_render_avatar_refine_without_a_refiner_is_one_line(tmp_path, capsys) -> None:
    out, _ = make_refiner_corpora(tmp_path)
    avatar = save_avatar(Avatar(dict(iter_planes(out))[0], None, {"kind": "fitted", "preset": "tiny"}),
                         tmp_path / "a.safetensors")
    err = _one_line(capsys, ["render-avatar", str(avatar), "--out", out, "--refine", "--dest", str(tmp_path / "d")])
    assert "no committed refiner under" in err and "`rodin train refiner --out" in err
