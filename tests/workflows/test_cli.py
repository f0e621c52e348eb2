"""The `rodin` command: config printing, errors as one line with exit code 2, status and contact sheets,
and the generation commands (sample is run through the flow in tests/workflows/test_generate.py)."""

import json
import logging
import os

import numpy as np
import pyarrow as pa
import pytest
import torch
import trimesh
from PIL import Image
from safetensors.torch import save as st_save

from rodin_core.datasets.layout import VIEWS_TABLE
from rodin_core.datasets.renders import VIEWS_SCHEMA
from rodin_core.fitting.shard_job import torch_threads
from rodin_core.generation import SAMPLERS, Avatar, load_avatar, save_avatar
from rodin_core.generation.job import load_pipeline, turntable_frames
from rodin_core.imaging import LABEL_HEIGHT, decode_png, encode_png
from rodin_core.mesh import density_grid, extract_mesh
from rodin_core.mesh_preview import mesh_preview
from rodin_core.storage import open_store
from workflows.cli import main
from workflows.cli_parser import SAMPLER_CHOICES

from ..generation_data import generation_config, make_generation_root

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the commands run torch on one thread, as core tests do


def test_config_prints_the_resolved_config(capsys):
    assert main(["config", "--preset", "tiny", "--set", "render.views=7"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["preset"] == "tiny" and printed["render"]["views"] == 7


def test_bad_override_is_one_line_and_exit_code_2(capsys):
    assert main(["config", "--set", "render.viewz=7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "render.viewz" in err and "views" in err


def test_render_refuses_a_bad_config_before_starting_anything(tmp_path, capsys):
    assert main(["render", "--out", str(tmp_path / "data"), "--set", "render.resolution=2"]) == 2
    assert "render.resolution" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def _commit_fake_renders(root: str, subjects: list[int], colour: int) -> None:
    stage = open_store(root).stage("renders")
    rows = []
    for sid in subjects:
        for view in range(2):
            rgba = np.zeros((8, 8, 4), np.uint8)
            rgba[2:6, 2:6] = (colour, 0, sid, 255)
            rows.append({"subject_id": sid, "view_index": view, "png": encode_png(rgba), "c2w": np.eye(4).ravel().tolist(),
                         "intrinsics": np.eye(3).ravel().tolist(), "width": 8, "height": 8})
    writer = stage.begin(f"shard-{subjects[0]:06d}")
    writer.write_table(VIEWS_TABLE, pa.Table.from_pylist(rows, schema=VIEWS_SCHEMA))
    writer.commit(subjects, "test")


def test_status_and_contact_sheet(tmp_path, capsys):
    root = str(tmp_path / "data")
    assert main(["contact-sheet", "--out", root, "--dest", str(tmp_path / "s.png")]) == 1
    assert "no committed renders shard" in capsys.readouterr().err
    _commit_fake_renders(root, [0, 1], colour=200)
    _commit_fake_renders(root, [2], colour=100)
    assert main(["status", "--out", root]) == 0
    assert "2 committed shards, 3 subjects" in capsys.readouterr().out
    dest = tmp_path / "sheet.png"
    assert main(["contact-sheet", "--out", root, "--dest", str(dest), "--columns", "2", "--no-labels"]) == 0
    sheet = decode_png(dest.read_bytes())
    assert sheet.shape[:2] == (16, 16)  # 3 tiles of 8 px in 2 columns -> 2 rows
    assert tuple(sheet[4, 4, :3]) == (200, 0, 0) and tuple(sheet[4, 12, :3]) == (200, 0, 1)
    assert tuple(sheet[12, 4, :3]) == (100, 0, 2)
    assert tuple(sheet[12, 12, :3]) == (255, 255, 255)  # empty cell is background


def _flip_byte(root: str, stage_name: str, shard: str, name: str) -> None:
    stage = open_store(root).stage(stage_name)
    path = f"{stage.root}/{stage.read_manifest(shard).file(name).path}"
    data = bytearray(stage.fs.cat_file(path))
    data[len(data) // 2] ^= 0x10
    stage.fs.pipe_file(path, bytes(data))


def test_status_refuses_an_unknown_stage_and_a_missing_root(tmp_path, capsys):
    root = str(tmp_path / "data")
    _commit_fake_renders(root, [0, 1], colour=200)
    assert main(["status", "--out", root, "--stage", "tripanes"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "unknown stage 'tripanes'; the stages are renders, decoder, triplanes," in captured.err
    assert main(["status", "--out", str(tmp_path / "nowhere")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"rodin: no dataset root at {tmp_path / 'nowhere'} (nothing is " \
        "there); pass the --out of a render or fit run\n"
    assert main(["verify", "--out", root, "--stage", "renders", "frontal"]) == 2
    assert "unknown stage 'frontal'" in capsys.readouterr().err


def test_status_marks_recovered_failures_and_verifies_the_stage(tmp_path, capsys):
    root = str(tmp_path / "data")
    stage = open_store(root).stage("renders")
    stage.record_failure("shard-000000", "20260101T000000Z-aaaaaaaa", OSError("blender crashed"))
    _commit_fake_renders(root, [0, 1], colour=200)  # the retry committed shard 0
    stage.record_failure("shard-000002", "20260101T000000Z-bbbbbbbb", OSError("blender hung"))
    assert main(["status", "--out", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("renders: 1 committed shards, 2 subjects; 2 failure records (1 recovered by a later commit)")
    attempt = stage.read_manifest("shard-000000").attempt_id
    assert lines[1:] == [
        (f"  recovered attempt shard-000000/20260101T000000Z-aaaaaaaa (committed since by attempt {attempt}): "
         "blender crashed"),
        "  failed attempt shard-000002/20260101T000000Z-bbbbbbbb: blender hung"]

    assert main(["status", "--out", root, "--verify"]) == 0
    assert "  verified 1 shards (1 files, " in capsys.readouterr().out
    _flip_byte(root, "renders", "shard-000000", VIEWS_TABLE)
    assert main(["status", "--out", root, "--verify"]) == 1
    out = capsys.readouterr().out
    assert "1 damaged" in out
    damaged = [line for line in out.splitlines() if "damaged renders/shard-000000" in line]
    assert len(damaged) == 1 and "views.parquet has sha256" in damaged[0]
    assert damaged[0].endswith(f"re-render it with the options the corpus was rendered with: `rodin render --out {root}`")


def test_store_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    from workflows import store_commands

    root = str(tmp_path / "data")
    _commit_fake_renders(root, [0, 1], colour=200)
    (tmp_path / "data" / "renders" / "manifests" / "shard-000000.json").write_text("{not json")
    assert main(["status", "--out", root]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "ShardCorruptError: stage 'renders' shard 'shard-000000'" in captured.err

    def unreachable(uri):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    monkeypatch.setattr(store_commands, "open_store", unreachable)
    for command in ("status", "verify", "gc"):
        assert main([command, "--out", "s3://bucket/corpus"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("rodin: cannot read the dataset root s3://bucket/corpus: "
                                                        "EndpointConnectionError: Could not connect")


def test_verify_prints_a_table_and_fails_on_a_damaged_file(tmp_path, capsys):
    root = str(tmp_path / "data")
    _commit_fake_renders(root, [0, 1], colour=200)
    _commit_fake_renders(root, [2], colour=100)
    assert main(["verify", "--out", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["stage", "shards", "files", "bytes", "damaged"]
    assert lines[1].split()[:3] == ["renders", "2", "2"] and lines[1].split()[-1] == "0"
    assert lines[-1].startswith(f"{root}: 2 committed shards in 1 stages verified (2 files, ")
    assert lines[-1].endswith("2 ok, 0 damaged")
    stage = open_store(root).stage("renders")
    path = f"{stage.root}/{stage.read_manifest('shard-000002').file(VIEWS_TABLE).path}"
    stage.fs.pipe_file(path, stage.fs.cat_file(path)[:-3])
    assert main(["verify", "--out", root, "--stage", "renders"]) == 1
    out = capsys.readouterr().out
    assert "damaged renders/shard-000002: stage 'renders' shard 'shard-000002': data file " in out
    assert "views.parquet has" in out and out.strip().endswith("1 ok, 1 damaged")


def test_gc_removes_only_what_no_manifest_references(tmp_path, capsys):
    root = str(tmp_path / "data")
    _commit_fake_renders(root, [0, 1], colour=200)
    stage = open_store(root).stage("renders")
    stray = stage.begin("shard-000000")
    stray.write_bytes(VIEWS_TABLE, b"a failed attempt")
    folder = f"{stage.uri}/data/shard-000000/{stray.attempt_id}/"

    assert main(["gc", "--out", root, "--dry-run"]) == 0  # written just now: it may still be being written
    assert capsys.readouterr().out.splitlines() == [
        f"{root}: would remove 0 unreferenced attempt folders and 0 files (0 B)",
        ("kept 1 more written in the last 60 minutes (a stage may still be writing them); `--min-age 0` removes "
         "them too")]
    assert main(["gc", "--out", root, "--dry-run", "--min-age", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"would remove {folder} (16 B)"
    assert stage.find_garbage() != []
    assert main(["gc", "--out", root, "--min-age", "0"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"removed {folder} (16 B)", f"{root}: removed 1 unreferenced attempt folders and 0 files (16 B)"]
    assert stage.find_garbage() == [] and stage.verify_shard("shard-000000").ok


def test_unknown_command_is_one_line_pointing_at_the_usage(capsys):
    assert main(["paint"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'paint'" in err and err.endswith("see `rodin --help`\n")


# Generation commands on untrained but real checkpoints: see tests/generation_data.py.

@pytest.fixture(scope="module")
def generation_root(tmp_path_factory):
    with torch_threads(1):
        return make_generation_root(tmp_path_factory.mktemp("cli-generation") / "data")


@pytest.fixture(scope="module")
def sampled(generation_root, tmp_path_factory):
    """Two avatars of the prior (seeds 0 and 1) saved as files, as `rodin sample --dest` leaves them."""
    folder = tmp_path_factory.mktemp("sampled")
    with torch_threads(1):  # as the tests (conftest): CPU results depend on the thread count in the last bits
        avatars = load_pipeline(generation_root).sample(2, seed=0)
    return [save_avatar(avatar, folder / f"avatar-00{i}.safetensors") for i, avatar in enumerate(avatars)]


def _portrait(path, height=40, width=30):
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[10:30, 5:25] = (200, 120, 80, 255)
    path.write_bytes(encode_png(rgba))
    return path


def _printed(capsys):
    return json.loads(capsys.readouterr().out)


def test_invert_writes_the_avatar_its_turntable_and_a_comparison(generation_root, tmp_path, capsys):
    image = _portrait(tmp_path / "portrait.png")
    argv = ["invert", str(image), "--out", generation_root, "--views", "3", "--resolution", "16", "--seed", "7"]
    assert main([*argv, "--dest", str(tmp_path / "a")]) == 0
    printed = _printed(capsys)
    assert printed["avatar"] == str(tmp_path / "a" / "portrait.safetensors") and printed["frames"] == 3
    assert main([*argv, "--dest", str(tmp_path / "b")]) == 0
    first, second = load_avatar(tmp_path / "a" / "portrait.safetensors"), load_avatar(tmp_path / "b" / "portrait.safetensors")
    assert torch.equal(first.planes, second.planes) and torch.equal(first.z, second.z)  # same image and seed
    assert first.planes.shape == (3, 4, 8, 8) and first.z.shape == (8,)
    assert (first.meta["kind"], first.meta["seed"], first.meta["image"], first.meta["image_size"]) == (
        "invert", 7, "portrait.png", [40, 30])
    gif = Image.open(tmp_path / "a" / "portrait-turntable.gif")
    assert (gif.n_frames, gif.size) == (3, (16, 16))
    frames = sorted((tmp_path / "a" / "portrait-turntable").iterdir())
    assert [f.name for f in frames] == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    pipeline = load_pipeline(generation_root)
    expected = turntable_frames(pipeline.cfg, pipeline.decoder, first.planes, 3, 16)
    assert np.array_equal(decode_png(frames[1].read_bytes()), expected[1])
    comparison = decode_png((tmp_path / "a" / "portrait-inversion.png").read_bytes())
    assert comparison.shape == (16 + LABEL_HEIGHT, 2 * 16, 3)  # the input scaled to 16 px high (12 wide), the avatar
    assert np.array_equal(comparison[:16, 16:], expected[0])


def test_interpolate_writes_the_path_and_reproduces_the_start(generation_root, sampled, tmp_path, capsys):
    dest = tmp_path / "interp"
    assert main(["interpolate", str(sampled[0]), str(sampled[1]), "--out", generation_root, "--frames", "5",
                 "--resolution", "16", "--dest", str(dest)]) == 0
    printed = _printed(capsys)
    assert printed["t"] == [0.0, 0.25, 0.5, 0.75, 1.0] and printed["seed"] == 0  # avatar A's seed
    path = [load_avatar(dest / f"interp-0{k}.safetensors") for k in range(5)]
    a, b = load_avatar(sampled[0]), load_avatar(sampled[1])
    assert torch.equal(path[0].planes, a.planes) and torch.equal(path[0].z, a.z)  # t = 0 with A's seed is A
    assert torch.equal(path[-1].z, b.z) and [p.meta["t"] for p in path] == printed["t"]
    assert all(p.meta["kind"] == "interpolate" and p.meta["seed"] == 0 for p in path)
    strip = decode_png((dest / "interpolation.png").read_bytes())
    assert strip.shape == (16 + LABEL_HEIGHT, 5 * 16, 3)


def test_mesh_writes_a_glb_that_trimesh_loads(generation_root, sampled, tmp_path, capsys):
    decoder = load_pipeline(generation_root).decoder
    planes = load_avatar(sampled[0]).planes
    grid = density_grid(planes, decoder, 24)
    threshold = float(grid.min() + grid.max()) / 2.0
    dest = tmp_path / "avatar.glb"
    assert main(["mesh", str(sampled[0]), "--out", generation_root, "--resolution", "24", "--threshold",
                 str(threshold), "--dest", str(dest)]) == 0
    printed = _printed(capsys)
    loaded = trimesh.load(dest, force="mesh")
    expected = extract_mesh(planes, decoder, 24, threshold)
    assert len(loaded.faces) == len(expected.faces) == printed["faces"] > 0
    assert np.allclose(np.sort(loaded.vertices, axis=0), np.sort(expected.vertices, axis=0), atol=1e-6)
    assert np.abs(loaded.vertices).max() <= 1.0 and printed["watertight"] == loaded.is_watertight is True
    preview = decode_png((tmp_path / "avatar-preview.png").read_bytes())
    assert printed["preview"] == str(tmp_path / "avatar-preview.png")
    assert np.array_equal(preview, mesh_preview(expected))  # four sides of the mesh just written
    assert main(["mesh", str(sampled[0]), "--out", generation_root, "--resolution", "24", "--dest",
                 str(tmp_path / "ply.ply"), "--threshold", str(float(grid.max()) + 1.0)]) == 2
    assert "pass a lower threshold" in capsys.readouterr().err


def test_render_avatar_writes_the_turntable_and_the_x0_strip(generation_root, sampled, tmp_path, capsys):
    dest = tmp_path / "views"
    assert main(["render-avatar", str(sampled[1]), "--out", generation_root, "--views", "4", "--resolution", "16",
                 "--x0", "--dest", str(dest)]) == 0
    printed = _printed(capsys)
    assert printed["x0_planes_max_difference"] == 0.0  # the re-run from z and seed ends at the avatar's planes
    pipeline = load_pipeline(generation_root)
    expected = turntable_frames(pipeline.cfg, pipeline.decoder, load_avatar(sampled[1]).planes, 4, 16)
    frames = [decode_png(p.read_bytes()) for p in sorted((dest / "avatar-001-turntable").iterdir())]
    assert len(frames) == 4 and all(np.array_equal(f, e) for f, e in zip(frames, expected, strict=True))
    strip = decode_png((dest / "avatar-001-x0.png").read_bytes())
    assert strip.shape == (16 + LABEL_HEIGHT, (3 + 3) * 16, 3)  # every x0 of the 3 base and 3 upsampler steps
    assert np.array_equal(strip[:16, -16:], expected[0])  # the last x0 is the avatar, seen from the front


def test_invert_reads_a_16_bit_greyscale_portrait_at_its_depth(generation_root, tmp_path, capsys):
    grey = np.full((40, 30), 20000, np.uint16)
    grey[10:30, 5:25] = 50000
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert main(["invert", str(tmp_path / "grey16.png"), "--out", generation_root, "--views", "1",
                 "--dest", str(tmp_path / "a")]) == 0
    avatar = load_avatar(_printed(capsys)["avatar"])
    expected = np.repeat((grey / 65535.0).astype(np.float32)[..., None], 3, axis=-1)  # not clipped to white
    assert torch.equal(avatar.z, load_pipeline(generation_root).encode_image(expected))


def test_invert_refuses_a_tiny_portrait_and_warns_about_a_small_one(tmp_path, capsys, caplog):
    with torch_threads(1):
        root = make_generation_root(tmp_path / "data", generation_config("encoder.image_size=64"))
    tiny = tmp_path / "dot.png"
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tiny)
    err = _one_line_error(capsys, ["invert", str(tiny), "--out", root, "--dest", str(tmp_path / "x")])
    assert f"rodin: {str(tiny)!r}: the portrait is 1x1 pixels, too small to hold a face" in err
    far = tmp_path / "far.png"
    Image.fromarray(np.zeros((7, 5, 3), np.uint8)).save(far)
    err = _one_line_error(capsys, ["invert", str(far), "--out", root, "--dest", str(tmp_path / "x")])
    assert "the portrait is 5x7 pixels, too small" in err and "(best: 64 or more)" not in err
    assert not (tmp_path / "x").exists()
    small = _portrait(tmp_path / "small.png", height=20, width=18)
    with caplog.at_level(logging.WARNING, logger="workflows.avatar_commands"):  # on stderr in the command
        assert main(["invert", str(small), "--out", root, "--views", "1", "--dest", str(tmp_path / "y")]) == 0
    assert (f"{small}: the portrait is 18x20 pixels, smaller than the encoder's 64x64 input: it is enlarged 3.2x"
            in caplog.text)


def _one_line_error(capsys, argv):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    return captured.err


def test_generation_input_errors_are_one_line_with_exit_code_2(generation_root, sampled, tmp_path, capsys):
    out = ["--out", generation_root]
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    err = _one_line_error(capsys, ["invert", str(text), *out, "--dest", str(tmp_path / "x")])
    assert "is not an image file PIL can read" in err and "PNG or JPEG" in err
    err = _one_line_error(capsys, ["invert", str(_portrait(tmp_path / "p.png")), "--out", str(tmp_path / "empty"),
                                   "--dest", str(tmp_path / "x")])
    assert "no committed base, upsampler checkpoints" in err and "`rodin train all --out" in err
    err = _one_line_error(capsys, ["invert", str(tmp_path / "p.png"), *out, "--preset", "small", "--dest",
                                   str(tmp_path / "x")])
    assert "trained with preset 'tiny', not 'small'; pass --preset tiny" in err
    err = _one_line_error(capsys, ["render-avatar", str(tmp_path / "missing.safetensors"), *out, "--dest",
                                   str(tmp_path / "x")])
    assert "no avatar file at" in err
    err = _one_line_error(capsys, ["mesh", str(text), *out, "--dest", str(tmp_path / "m.glb")])
    assert "is not an avatar file" in err
    other = load_avatar(sampled[0])
    other.meta["decoder_sha256"] = "f" * 64
    foreign = save_avatar(other, tmp_path / "foreign.safetensors")
    err = _one_line_error(capsys, ["interpolate", str(foreign), str(sampled[1]), *out, "--dest", str(tmp_path / "x")])
    assert "was made for decoder ffffffffffff" in err and "pass the --out dataset root it was generated from" in err
    err = _one_line_error(capsys, ["mesh", str(sampled[0]), *out, "--dest", str(tmp_path / "m.obj")])
    assert "--dest must end in .ply or .glb" in err
    assert not (tmp_path / "x").exists()


def test_avatar_files_that_cannot_be_drawn_are_refused_in_one_line(generation_root, sampled, tmp_path, capsys):
    out = ["--out", generation_root]
    data = bytearray(sampled[0].read_bytes())
    data[8 + int.from_bytes(data[:8], "little") + 40] ^= 0x01  # one bit of the planes
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(data))
    err = _one_line_error(capsys, ["mesh", str(flipped), *out, "--dest", str(tmp_path / "x" / "m.glb")])
    assert f"{flipped} is a damaged avatar file: its content does not match the sha256" in err
    avatar = load_avatar(sampled[0])
    planes = avatar.planes.clone()
    planes[0, 0, 0, 0] = float("nan")
    nan = tmp_path / "nan.safetensors"  # as a file written before the checksum existed
    nan.write_bytes(st_save({"planes": planes, "z": avatar.z}, metadata={
        "format": "rodin.avatar", "format_version": "1", "meta": json.dumps(avatar.meta)}))
    for command in (["mesh", str(nan), *out, "--dest", str(tmp_path / "x" / "m.glb")],
                    ["render-avatar", str(nan), *out, "--dest", str(tmp_path / "x")]):
        err = _one_line_error(capsys, command)
        assert f"{nan} holds 1 NaN or infinite values in planes (3, 4, 8, 8); it cannot be rendered or meshed" in err
    other = save_avatar(Avatar(avatar.planes, avatar.z, {**avatar.meta, "preset": "paper"}), tmp_path / "paper.safetensors")
    err = _one_line_error(capsys, ["render-avatar", str(other), *out, "--dest", str(tmp_path / "x")])
    assert (f"{str(other)!r} is an avatar of preset 'paper' with planes (3, 4, 8, 8), but the checkpoints under "
            f"{generation_root} are of preset 'tiny' with planes (3, 4, 8, 8); pass the --out dataset root" in err)
    bigger = save_avatar(Avatar(avatar.planes.repeat(1, 1, 2, 2), avatar.z, avatar.meta), tmp_path / "big.safetensors")
    for command in (["mesh", str(bigger), *out, "--dest", str(tmp_path / "x" / "m.glb")],
                    ["interpolate", str(sampled[0]), str(bigger), *out, "--dest", str(tmp_path / "x")]):
        err = _one_line_error(capsys, command)
        assert "is an avatar of preset 'tiny' with planes (3, 4, 16, 16), but the checkpoints" in err
        assert "preset 'tiny' with planes (3, 4, 8, 8)" in err
    assert not (tmp_path / "x").exists()


def test_sampler_choices_are_the_pipelines():
    assert SAMPLER_CHOICES == SAMPLERS


def test_embedded_server_defaults_leave_a_users_settings_alone(monkeypatch, capsys):
    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    assert main(["config", "--preset", "tiny"]) == 0
    assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "180"  # the first start migrates a database
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"  # set by the user: kept


def test_failed_shards_end_with_the_exact_command_to_run_again(tmp_path, monkeypatch, capsys):
    from contextlib import nullcontext

    import workflows.render_avatars as render_flow
    from workflows import cli
    from workflows.shards import FailureWording, ShardsFailedError

    wording = FailureWording("render", "renders", 2, "re-run the flow to retry only the failed ones", "Failure records")
    summary = {"shards_total": 2, "shards_failed": {"shard-000001": "BlenderCrashError: exited with code -11\nlog"},
               "store": str(tmp_path)}

    def failing(**parameters):
        raise ShardsFailedError(summary, wording)

    monkeypatch.setattr(render_flow, "render_avatars", failing)
    monkeypatch.setattr(cli, "prefect_backend", nullcontext)
    args = ["render", "--out", str(tmp_path / "my data"), "--subjects", "2", "--set", "render.samples=2"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rodin: 1 of 2 render shards failed") and "shard-000001" in err
    assert err.endswith(f"Then run `rodin render --out '{tmp_path / 'my data'}' --subjects 2 --set render.samples=2` "
                        "again: it redoes only what is not committed\n")


def test_a_local_ray_that_does_not_start_is_one_line_naming_the_command(tmp_path, monkeypatch, capsys):
    from contextlib import nullcontext

    import ray

    import workflows.render_avatars as render_flow
    from workflows import cli
    from workflows.ray_runner import RayStartError, build_ray_task_runner

    def stalled(**kwargs):
        raise Exception("The current node timed out during startup. This could happen because some of the raylet "  # noqa: TRY002
                        "failed to startup or the GCS has become overloaded.")

    monkeypatch.setattr(ray, "init", stalled)
    with pytest.raises(RayStartError) as raised, build_ray_task_runner(None, num_cpus=1, include_dashboard=False):
        pass
    message = str(raised.value)
    assert message.startswith("the local Ray instance of this run did not start (Exception: The current node timed out")
    assert "--runner threads" in message and "\n" not in message

    def failing(**parameters):
        raise raised.value

    monkeypatch.setattr(render_flow, "render_avatars", failing)
    monkeypatch.setattr(cli, "prefect_backend", nullcontext)
    capsys.readouterr()  # the runner's own log lines
    assert main(["render", "--out", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"rodin: {message}. Then run `rodin render --out {tmp_path / 'data'}`")


def test_a_local_ray_that_times_out_once_is_started_again(monkeypatch):
    import ray

    from workflows.ray_runner import build_ray_task_runner

    calls, workers = [], []
    monkeypatch.delenv("RAY_GCS_SERVER_PORT", raising=False)

    def slow_then_up(**kwargs):
        calls.append(kwargs["address"])
        workers.append((kwargs["runtime_env"]["env_vars"], os.environ.get("RAY_GCS_SERVER_PORT")))
        if len(calls) == 1:
            raise Exception("The current node timed out during startup.")  # noqa: TRY002 (Ray's own type)

    monkeypatch.setattr(ray, "init", slow_then_up)
    monkeypatch.setattr(ray, "nodes", lambda: [{"alive": True}])
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    runner = build_ray_task_runner(None, num_cpus=1, include_dashboard=False)
    assert runner.__enter__() is runner
    assert calls == ["local", "local"]
    # each start puts its GCS on a port chosen for it and gives that address to its workers, beside their PYTHONPATH
    assert [env["RAY_ADDRESS"] for env, _ in workers] == [f"127.0.0.1:{port}" for _, port in workers]
    assert all("PYTHONPATH" in env for env, _ in workers) and "RAY_GCS_SERVER_PORT" not in os.environ
