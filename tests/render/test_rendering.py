"""Shard rendering (paper §4.1, appendix B.2): Blender scene, isolated worker, launcher and store.

One tiny shard (2 subjects x 6 views at 64x64) is rendered twice, once through
``render_shard_to_store`` and once straight through the launcher, and reused by every test.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from render import launcher, shard_job
from render.anatomy import anatomy_for
from render.caption import caption_for
from render.recipe import AvatarRecipe, sample_recipe
from rodin_core.cameras import make_rig, project_points
from rodin_core.config import preset_config
from rodin_core.datasets import renders as corpus
from rodin_core.imaging import encode_png
from rodin_core.storage import open_store

pytestmark = pytest.mark.skipif(importlib.util.find_spec("bpy") is None,
                                reason="needs the bpy module (pip install 'rodin[render]')")

VIEWS, RES = 6, 64


def tiny_config():
    cfg = preset_config("tiny")
    cfg.corpus.subjects, cfg.corpus.shard_size, cfg.corpus.seed = 3, 2, 7
    cfg.render.views, cfg.render.resolution, cfg.render.samples = VIEWS, RES, 4
    return cfg.validate()


def worker_spec(cfg, subject_ids):
    return {"subject_ids": subject_ids, "seed": cfg.corpus.seed, "render": dataclasses.asdict(cfg.render),
            "asset_dir": None, "asset_catalog": {}}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Shard 0 rendered into a local store: (cfg, stage, report)."""
    cfg = tiny_config()
    uri = str(tmp_path_factory.mktemp("store"))
    report = shard_job.render_shard_to_store(cfg, uri, 0)
    return cfg, open_store(uri).stage("renders"), report


@pytest.fixture(scope="module")
def views(stored):
    cfg, stage, report = stored
    return corpus.read_views(stage, report.shard_id)


@pytest.fixture(scope="module")
def direct_run(tmp_path_factory, stored):
    """The same subjects rendered again by a separate Blender process, straight through the launcher."""
    cfg, _, report = stored
    workdir = tmp_path_factory.mktemp("direct")
    run = launcher.run_blender_shard(worker_spec(cfg, report.subject_ids), workdir, timeout_s=300)
    return cfg, run


def alpha_at(rgba: np.ndarray, uv: np.ndarray, radius: int = 0) -> float:
    """Largest alpha (0..1) in the (2 radius + 1)^2 pixels around image point ``uv``."""
    j, i = int(np.floor(uv[0])), int(np.floor(uv[1]))
    patch = rgba[max(i - radius, 0): i + radius + 1, max(j - radius, 0): j + radius + 1, 3]
    return float(patch.max()) / 255.0 if patch.size else 0.0


# --- store round trip -------------------------------------------------------------------------------


def test_shard_plan_covers_every_subject_once():
    cfg = tiny_config()
    assert shard_job.shard_plan(cfg) == [(0, [0, 1]), (1, [2])]
    with pytest.raises(ValueError, match="shard index 5"):
        shard_job.render_shard_to_store(cfg, "memory://unused", 5)


def test_committed_shard_has_every_view_and_subject(stored, views):
    cfg, stage, report = stored
    assert not report.skipped and report.subject_ids == [0, 1] and report.views == VIEWS
    manifest = stage.read_manifest(report.shard_id)
    assert manifest.subject_ids == (0, 1)
    assert {f.name: f.rows for f in manifest.files} == {"views.parquet": 2 * VIEWS, "subjects.parquet": 2}
    assert manifest.extra["views"] == VIEWS and manifest.extra["resolution"] == RES
    assert manifest.extra["blender_version"] and manifest.extra["preset"] == "tiny"
    assert manifest.extra["corpus_subjects"] == cfg.corpus.subjects == 3  # the whole corpus, not this shard
    assert [(v.subject_id, v.view_index) for v in views] == [(s, k) for s in (0, 1) for k in range(VIEWS)]
    rig = make_rig(VIEWS, RES, cfg.render.fov_deg, cfg.render.camera_radius,
                   cfg.render.elevation_min_deg, cfg.render.elevation_max_deg)
    for v in views:
        assert v.rgba.shape == (RES, RES, 4) and v.rgba.dtype == np.uint8
        assert np.allclose(v.c2w, rig.c2w[v.view_index]) and np.allclose(v.intrinsics, rig.intrinsics)
        assert (v.rgba[..., 3] > 127).any() and (v.rgba[..., 3] == 0).any()  # avatar on transparent background


def test_subjects_table_holds_recipe_and_caption(stored):
    cfg, stage, report = stored
    rows = corpus.read_subjects(stage, report.shard_id)
    assert [r["subject_id"] for r in rows] == [0, 1]
    for row in rows:
        recipe = AvatarRecipe.from_json(row["recipe_json"])
        assert recipe == sample_recipe(cfg.corpus.seed, row["subject_id"])
        assert row["caption"] == caption_for(recipe) and row["caption"]
        assert row["render_seconds"] > 0


def test_second_call_skips_committed_shard(stored):
    cfg, stage, report = stored
    again = shard_job.render_shard_to_store(cfg, stage.store.uri, 0)
    assert again.skipped and again.attempt_id == report.attempt_id
    assert stage.read_manifest(report.shard_id).attempt_id == report.attempt_id


def test_shard_round_trips_through_s3(s3_store_uri):
    prefix, options = s3_store_uri
    cfg = tiny_config()
    cfg.render.views = 2
    uri = f"{prefix}/renders-{os.getpid()}"
    report = shard_job.render_shard_to_store(cfg, uri, 1, storage_options=options)
    stage = open_store(uri, options).stage("renders")
    assert stage.committed_shards() == ["shard-000001"] and report.subject_ids == [2]
    views = corpus.read_views(stage, "shard-000001", subject_id=2)
    assert [v.view_index for v in views] == [0, 1] and all((v.rgba[..., 3] > 127).any() for v in views)
    assert shard_job.render_shard_to_store(cfg, uri, 1, storage_options=options).skipped
    with pytest.raises(KeyError, match="no subject 5"):
        corpus.read_views(stage, "shard-000001", subject_id=5)


def test_only_pixel_settings_invalidate_a_committed_shard(stored, monkeypatch):
    cfg, stage, report = stored

    def refuse(spec, workdir, timeout_s):
        raise launcher.BlenderCrashError("re-rendered", 1)

    monkeypatch.setattr(shard_job, "run_blender_shard", refuse)
    same_pixels = tiny_config()
    same_pixels.render.threads, same_pixels.render.timeout_s = 2, 99.0
    assert shard_job.render_shard_to_store(same_pixels, stage.store.uri, 0).skipped
    more_samples = tiny_config()
    more_samples.render.samples = 5
    with pytest.raises(launcher.BlenderCrashError, match="re-rendered"):
        shard_job.render_shard_to_store(more_samples, stage.store.uri, 0)
    assert stage.read_manifest(report.shard_id).attempt_id == report.attempt_id  # the old commit stands


def test_failed_attempt_is_recorded_and_raised(tmp_path, monkeypatch):
    cfg = tiny_config()
    workdirs = []

    def crash(spec, workdir, timeout_s):
        workdirs.append(workdir)
        raise launcher.BlenderCrashError("Blender shard run exited with code 1", 1, "Traceback...\nboom: bad mesh")

    monkeypatch.setattr(shard_job, "run_blender_shard", crash)
    with pytest.raises(launcher.BlenderCrashError, match="code 1"):
        shard_job.render_shard_to_store(cfg, str(tmp_path / "store"), 1)
    stage = open_store(str(tmp_path / "store")).stage("renders")
    assert not stage.is_committed("shard-000001")
    [failure] = stage.failures("shard-000001")
    assert failure["error_type"] == "BlenderCrashError"
    assert failure["details"]["log_tail"].endswith("boom: bad mesh")
    assert failure["details"]["subject_ids"] == [2]
    assert not workdirs[0].exists()  # the temporary folder is always removed


# --- pixels and cameras -----------------------------------------------------------------------------


def test_same_seed_renders_same_pixels_and_recipe(stored, views, direct_run):
    cfg, stage, _ = stored
    _, run = direct_run
    recipes = {r["subject_id"]: r["recipe_json"] for r in corpus.read_subjects(stage, "shard-000000")}
    for v in views:
        folder = launcher.subject_dir(run.output_dir, v.subject_id)
        again = launcher.load_view(folder / launcher.view_name(v.view_index), RES).astype(int)
        diff = np.abs(v.rgba.astype(int) - again)  # (H, W, 4)
        # OpenImageDenoise's threaded kernels may round a handful of values differently.
        assert diff.max() <= 1 and (diff > 0).mean() < 0.005, f"subject {v.subject_id} view {v.view_index}"
        assert json.loads((folder / "recipe.json").read_text()) == json.loads(recipes[v.subject_id])


def test_without_denoiser_renders_are_bit_identical(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="render.launcher")
    cfg = tiny_config()
    cfg.render.views, cfg.render.denoise = 2, False
    runs = [launcher.run_blender_shard(worker_spec(cfg, [2]), tmp_path / name, timeout_s=300) for name in "ab"]
    for k in range(2):
        first, second = (launcher.load_view(launcher.subject_dir(r.output_dir, 2) / launcher.view_name(k), RES)
                         for r in runs)
        assert np.array_equal(first, second) and (first[..., 3] > 127).any()
        assert encode_png(first) == encode_png(second)
    progress = [r.getMessage() for r in caplog.records if "subject 1/1 id=2 views=2" in r.getMessage()]
    assert len(progress) == 2 and all("s/view" in line for line in progress)  # relayed from each run


def test_different_subjects_differ(views):
    first, second = views[0], views[VIEWS]
    assert (first.subject_id, second.subject_id) == (0, 1)
    assert np.abs(first.rgba.astype(int) - second.rgba.astype(int)).mean() > 1.0


def test_every_camera_looks_at_the_head_centre(views):
    for v in views:
        uv, depth = project_points(np.zeros((1, 3)), v.c2w, v.intrinsics)
        assert np.allclose(uv[0], [RES / 2, RES / 2], atol=0.5) and depth[0] > 0


def test_anatomy_landmarks_project_inside_the_mask(stored, views):
    cfg = stored[0]
    for v in views:
        anatomy = anatomy_for(sample_recipe(cfg.corpus.seed, v.subject_id))
        centre_uv, _ = project_points(np.array([anatomy.cranium_centre]), v.c2w, v.intrinsics)
        assert alpha_at(v.rgba, centre_uv[0]) > 0.5, f"subject {v.subject_id} view {v.view_index}"
        face = np.array([anatomy.nose_tip, anatomy.eye_left, anatomy.eye_right])
        uv, depth = project_points(face, v.c2w, v.intrinsics)
        assert (depth > 0).all()
        for name, point in zip(("nose_tip", "eye_left", "eye_right"), uv):
            # Face landmarks lie on the surface: within one pixel of the avatar's silhouette or inside it.
            assert alpha_at(v.rgba, point, radius=1) > 0.5, f"{name} of subject {v.subject_id} view {v.view_index}"


def test_view_zero_is_frontal(stored, views):
    cfg = stored[0]
    for v in (w for w in views if w.view_index == 0):
        anatomy = anatomy_for(sample_recipe(cfg.corpus.seed, v.subject_id))
        uv, depth = project_points(np.array([anatomy.nose_tip, anatomy.cranium_centre]), v.c2w, v.intrinsics)
        assert abs(uv[0, 0] - RES / 2) < 1.0  # the nose is on the vertical centre line
        assert depth[0] < depth[1]  # and faces the camera
        mask = v.rgba[..., 3] > 127  # (H, W)
        mirrored = mask[:, ::-1]
        assert (mask & mirrored).sum() / (mask | mirrored).sum() > 0.8
        columns = np.nonzero(mask.any(axis=0))[0]
        assert abs((columns[0] + columns[-1] + 1) / 2 - RES / 2) < 3.0


def test_blender_projection_matches_opencv_convention():
    bpy = pytest.importorskip("bpy")
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    from render import blender_scene

    cfg = tiny_config()
    rig = make_rig(12, 80, cfg.render.fov_deg, cfg.render.camera_radius, -30.0, 60.0)
    scene = blender_scene.reset_scene()
    blender_scene.configure_cycles(cfg.render, scene)
    cam = blender_scene.add_camera(rig, scene)
    scene.render.resolution_x = scene.render.resolution_y = 80
    points = np.random.default_rng(0).uniform(-0.9, 0.9, size=(20, 3))
    for c2w in rig.c2w:
        blender_scene.set_camera_pose(cam, c2w)
        bpy.context.view_layer.update()
        assert np.allclose(blender_scene.camera_pose(cam), c2w, atol=1e-5)
        uv, depth = project_points(points, c2w, rig.intrinsics)
        for p, (u, v), d in zip(points, uv, depth):
            ndc = world_to_camera_view(scene, cam, Vector(p.tolist()))  # x right, y up, in [0, 1]
            assert np.allclose([ndc.x * 80, (1.0 - ndc.y) * 80, ndc.z], [u, v, d], atol=1e-3)


def test_cycles_settings_follow_the_config():
    pytest.importorskip("bpy")
    from render import blender_scene

    cfg = tiny_config()
    cfg.render.threads = 0
    scene = blender_scene.configure_cycles(cfg.render, blender_scene.reset_scene())
    assert scene.render.engine == "CYCLES" and scene.cycles.device == "CPU"
    assert scene.cycles.samples == 4 and scene.cycles.use_adaptive_sampling
    assert scene.cycles.use_denoising and scene.cycles.denoiser == "OPENIMAGEDENOISE"
    assert scene.cycles.max_bounces == cfg.render.max_bounces and scene.cycles.diffuse_bounces <= 3
    assert not scene.cycles.caustics_reflective and not scene.cycles.caustics_refractive
    assert scene.render.film_transparent and scene.render.use_persistent_data
    assert scene.render.threads_mode == "AUTO"
    settings = scene.render.image_settings
    assert (settings.file_format, settings.color_mode, settings.color_depth) == ("PNG", "RGBA", "8")
    assert scene.view_settings.view_transform == "Standard"


# --- launcher failures ------------------------------------------------------------------------------


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_timeout_kills_blender_and_leaves_nothing_running(tmp_path):
    cfg = tiny_config()
    with pytest.raises(launcher.BlenderTimeoutError, match="timeout of 0.5 s") as info:
        launcher.run_blender_shard(worker_spec(cfg, [0, 1]), tmp_path, timeout_s=0.5)
    assert _processes_mentioning(str(tmp_path / launcher.SPEC_NAME)) == []
    assert (tmp_path / launcher.LOG_NAME).exists()
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)


def test_invalid_spec_crashes_with_exit_code_and_log_tail(tmp_path):
    spec = worker_spec(tiny_config(), [0])
    spec["render"]["resolution"] = "huge"
    with pytest.raises(launcher.BlenderCrashError) as info:
        launcher.run_blender_shard(spec, tmp_path, timeout_s=120)
    assert info.value.returncode == 2
    assert "render.resolution" in info.value.log_tail and "huge" in info.value.log_tail
    assert info.value.log_tail in str(info.value)
    copy = pickle.loads(pickle.dumps(info.value))  # crosses Ray / Prefect process boundaries intact
    assert (type(copy), copy.returncode, copy.log_tail, str(copy)) == (
        launcher.BlenderCrashError, 2, info.value.log_tail, str(info.value))


def test_error_while_building_the_avatar_crashes_the_attempt(tmp_path):
    spec = worker_spec(tiny_config(), [0])
    spec["asset_catalog"] = {"hair": ["missing.blend"]}  # an asset but no asset folder
    with pytest.raises(launcher.BlenderCrashError) as info:
        launcher.run_blender_shard(spec, tmp_path, timeout_s=120)
    assert info.value.returncode == 1
    assert "no asset folder was given" in info.value.log_tail
    assert not (launcher.subject_dir(tmp_path, 0) / launcher.DONE_NAME).exists()


def test_validation_accepts_complete_outputs(direct_run):
    _, run = direct_run
    launcher.validate_outputs(run.output_dir, [0, 1], VIEWS, RES)
    assert set(run.subject_seconds) == {0, 1} and all(s > 0 for s in run.subject_seconds.values())


@pytest.mark.parametrize("damage, message", [
    ("missing_view", r"missing \['view_0003.png'\]"),
    ("wrong_size", "is 32x32, expected 64x64"),
    ("empty_alpha", "subject 1 view 2: .* empty alpha"),
    ("no_done", "no DONE marker"),
    ("no_recipe", "recipe.json is missing"),
])
def test_validation_catches_damaged_outputs(direct_run, tmp_path, damage, message):
    _, run = direct_run
    copy = tmp_path / "out"
    shutil.copytree(run.output_dir, copy)
    folder = launcher.subject_dir(copy, 1)
    if damage == "missing_view":
        os.remove(folder / "view_0003.png")
    elif damage == "wrong_size":
        Image.open(folder / "view_0004.png").resize((32, 32)).save(folder / "view_0004.png")
    elif damage == "empty_alpha":
        Image.new("RGBA", (RES, RES), (200, 100, 50, 0)).save(folder / "view_0002.png")
    elif damage == "no_done":
        os.remove(folder / "DONE")
    elif damage == "no_recipe":
        os.remove(folder / "recipe.json")
    with pytest.raises(launcher.InvalidRenderError, match=message):
        launcher.validate_outputs(copy, [0, 1], VIEWS, RES)
