"""The main job end to end (workflows.demo, ``rodin demo``): every stage for real on a micro corpus.

``rodin demo`` runs once on 3 subjects (the last held out) of 6 views at 16 px, rendered by Blender,
fitted into 8 px planes of 4 channels, with U-Nets of a few thousand parameters trained for 2 steps
per stage on the session's Prefect server and the module's 2-CPU Ray; then it runs again and must
reuse every stage without writing a new attempt or checkpoint. The pictures are meaningless at
this size; what is checked is that every output is there, decodes, and was made from what the
chain committed. Both runs take about 80-100 s on 2 busy cores, two thirds of it the three Ray Train
launches of the first.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import trimesh
import yaml
from PIL import Image
from prefect.flows import load_flow_from_entrypoint

from rodin_core.datasets.layout import GENERATED_STAGE
from rodin_core.generation import load_avatar
from rodin_core.imaging import decode_png
from rodin_core.mesh import DEFAULT_THRESHOLD
from rodin_core.mesh_preview import mesh_preview
from rodin_core.storage import open_store
from workflows.cli import main
from workflows.demo import RECORD_FILE, STAGES, TIMINGS_FILE, DemoStageError, demo

from ..generation_data import MICRO_NETWORKS

MICRO = [
    "corpus.subjects=3", "corpus.holdout_subjects=1", "corpus.shard_size=3",
    "render.views=6", "render.resolution=16", "render.samples=2",
    "triplane.resolution=8", "triplane.channels=4", "triplane.rescale_min=4", "triplane.decoder.hidden=16",
    "fit.shared_subjects=2", "fit.shared_steps=4", "fit.steps=4", "fit.rays_per_step=128", "fit.coarse_samples=8",
    "fit.fine_samples=8", "fit.eval_every=2", "fit.holdout_views=2", "fit.shard_size=2",
    *MICRO_NETWORKS,
    *(f"{stage}.train.{name}={value}" for stage in ("base", "upsampler", "prior")
      for name, value in (("steps", 2), ("batch_size", 2), ("log_every", 1))),
]
"""The tiny preset shrunk so that the whole chain runs in about a minute on 2 busy cores."""
HELD_OUT = 2
"""The last subject id of the micro corpus: held out from diffusion training, the one inverted."""
REPO_ROOT = Path(__file__).resolve().parents[2]
N, VIEWS, FRAMES, MESH_RESOLUTION = 4, 4, 5, 32
ARGS = [*(arg for item in MICRO for arg in ("--set", item)), "--n", str(N), "--views", str(VIEWS),
        "--mesh-resolution", str(MESH_RESOLUTION)]


def attempts(out: Path) -> dict[str, list[str]]:
    """Every attempt folder of every stage of the store, and Ray Train's checkpoint folders."""
    found = {str(p.relative_to(out)): sorted(q.name for q in p.iterdir())
             for p in sorted(out.glob("*/data/*")) if p.is_dir()}
    found["ray runs"] = sorted(str(p.relative_to(out)) for p in out.glob("checkpoints/runs/*/step-*"))
    return found


@pytest.fixture(scope="module")
def runs(prefect_server: float, local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two ``rodin demo`` runs on one dataset root: the first makes everything, the second reuses it.

    Per run: what it printed, its ``demo.json`` and ``timings.json``, and the attempts in the store.
    """
    out = tmp_path_factory.mktemp("demo") / "data"
    results: dict[str, list] = {"printed": [], "records": [], "timings": [], "attempts": []}
    for _ in range(2):
        start, printed = time.perf_counter(), io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["demo", "--out", str(out), *ARGS]) == 0
        print(f"{printed.getvalue()}\nrodin demo took {time.perf_counter() - start:.1f} s")
        results["printed"].append(printed.getvalue())
        results["records"].append(json.loads((out / "demo" / RECORD_FILE).read_text()))
        results["timings"].append(json.loads((out / "demo" / TIMINGS_FILE).read_text()))
        results["attempts"].append(attempts(out))
    return {"out": out, "folder": out / "demo", **results}


def test_every_output_is_there_and_decodes(runs: dict[str, Any]) -> None:
    folder = runs["folder"]
    sheet = decode_png((folder / "contact-sheet.png").read_bytes())
    assert sheet.ndim == 3 and sheet.shape[1] == N * 16  # frame 0 of the 4 avatars in a row, 16 px each
    for index in range(N):
        avatar = load_avatar(folder / f"avatar-{index:03d}.safetensors")
        assert avatar.planes.shape == (3, 4, 8, 8) and torch.isfinite(avatar.planes).all()
        assert avatar.z.shape == (8,) and avatar.meta["seed"] == index
        with Image.open(folder / f"avatar-{index:03d}-turntable.gif") as gif:
            assert (gif.n_frames, gif.size) == (VIEWS, (16, 16))

    stem = f"subject-{HELD_OUT:06d}-frontal"
    portrait = decode_png((folder / f"{stem}.png").read_bytes())
    assert portrait.shape == (16, 16, 4) and portrait[..., 3].max() == 255  # the frontal render, with alpha
    inverted = load_avatar(folder / f"{stem}.safetensors")
    assert inverted.meta["kind"] == "invert" and inverted.meta["image"] == f"{stem}.png"
    assert inverted.planes.shape == (3, 4, 8, 8) and torch.isfinite(inverted.planes).all()
    assert decode_png((folder / f"{stem}-inversion.png").read_bytes()).shape[1] == 2 * 16  # input | inverted
    with Image.open(folder / f"{stem}-turntable.gif") as gif:
        assert (gif.n_frames, gif.size) == (VIEWS, (16, 16))

    strip = decode_png((folder / "interpolation.png").read_bytes())
    assert strip.shape[1] == FRAMES * 16
    ends = [load_avatar(folder / f"interp-{k:02d}.safetensors") for k in (0, FRAMES - 1)]
    for end, index in zip(ends, (0, 1), strict=True):  # t = 0 and 1 give back the generated avatars
        generated = load_avatar(folder / f"avatar-{index:03d}.safetensors")
        assert torch.allclose(end.z.float(), generated.z.float(), atol=1e-6)
        assert torch.allclose(end.planes.float(), generated.planes.float(), atol=1e-3)

    mesh = trimesh.load(folder / "avatar-000.glb", force="mesh")
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    assert np.abs(mesh.vertices).max() <= 1.0 + 1e-6  # inside the tri-plane's cube
    preview, drawn = decode_png((folder / "avatar-000-preview.png").read_bytes()), mesh_preview(mesh)
    assert preview.shape == drawn.shape  # the picture of this mesh from four sides (the .glb holds float32)
    assert np.mean(np.any(preview != drawn, axis=-1)) < 0.01


def test_timings_and_record_name_every_stage_and_the_held_out_subject(runs: dict[str, Any]) -> None:
    for timings in runs["timings"]:
        assert list(timings) == [*STAGES, "total"]
        assert all(isinstance(v, float) and v > 0 for v in timings.values()), timings
        assert timings["total"] >= sum(timings[s] for s in STAGES)
    first = runs["records"][0]
    assert [first["stages"][s]["reused"] for s in STAGES] == [False] * len(STAGES)
    assert first["stages"]["fit"]["detail"]["decoder"] == "committed"
    assert first["stages"]["fit"]["detail"]["shards_fitted"] == 2
    assert first["stages"]["train"]["detail"]["steps"] == {"base": 2, "upsampler": 2, "prior": 2}
    assert first["stages"]["mesh"]["detail"]["threshold"] <= DEFAULT_THRESHOLD
    assert first["stages"]["invert"]["detail"]["subject"] == HELD_OUT
    assert first["stages"]["invert"]["detail"]["held_out"] is True
    latents = open_store(str(runs["out"])).stage("latents").read_manifest("latents")
    assert sorted(latents.subject_ids) == [0, 1]  # diffusion training never saw the inverted subject

    table, folder = runs["printed"][0], runs["folder"]
    for stage in STAGES:
        assert re.search(rf"^{stage} +[0-9.]+  ran$", table, re.MULTILINE), table
    assert re.search(r"^total +[0-9.]+$", table, re.MULTILINE), table
    stem = folder / f"subject-{HELD_OUT:06d}-frontal"
    for line in (f"contact sheet   {folder / 'contact-sheet.png'}", f"interpolation   {folder / 'interpolation.png'}",
                 f"mesh            {folder / 'avatar-000.glb'}, {folder / 'avatar-000-preview.png'}", f"timings         {folder / TIMINGS_FILE}",
                 f"inversion       {stem}-inversion.png (held-out subject {HELD_OUT}), {stem}-turntable.gif",
                 f"turntables      {', '.join(str(folder / f'avatar-{i:03d}-turntable.gif') for i in range(N))}"):
        assert line in table, table


def test_a_second_run_reuses_every_stage_and_writes_nothing_new(runs: dict[str, Any]) -> None:
    first, second = runs["records"]
    assert {s: second["stages"][s]["reused"] for s in STAGES} == dict.fromkeys(STAGES, True)
    for stage in STAGES:
        assert re.search(rf"^{stage} +[0-9.]+  reused$", runs["printed"][1], re.MULTILINE), runs["printed"][1]
    assert second["stages"]["generate"]["detail"]["attempt_id"] == first["stages"]["generate"]["detail"]["attempt_id"]
    assert second["stages"]["invert"]["detail"] == first["stages"]["invert"]["detail"]
    assert second["total_seconds"] < first["total_seconds"] / 3
    before, after = runs["attempts"]
    assert after == before and before["ray runs"], after
    assert len(open_store(str(runs["out"])).stage(GENERATED_STAGE).committed_shards()) == 1


def test_a_failing_stage_names_itself_and_its_command(prefect_server: float, local_ray: None, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out, assets = tmp_path / "data", tmp_path / "no-assets"
    overrides = [*MICRO, f"corpus.asset_dir={assets}"]
    with pytest.raises(DemoStageError) as error:
        demo(out=str(out), overrides=overrides, n=2)
    assert error.value.stage == "render" and "asset library folder" in error.value.error
    assert error.value.command == shlex.join(["rodin", "render", "--out", str(out), "--preset", "tiny",
                                              *(arg for item in overrides for arg in ("--set", item))])
    message = str(error.value)
    assert message.startswith("demo stage 1/7 'render' failed: FileNotFoundError: asset library folder")
    assert message.endswith("then run the demo again with the same options to finish the chain (it reuses what is done)")
    assert error.value.summary["stages"] == {}
    assert main(["demo", "--out", str(out), *(arg for item in overrides for arg in ("--set", item))]) == 1
    err = capsys.readouterr().err
    assert f"rodin: demo stage 1/7 'render' failed: FileNotFoundError: asset library folder {str(assets)!r}" in err

    assert main(["demo", "--out", str(out), "--n", "1"]) == 2
    assert "--n must be at least 2" in capsys.readouterr().err
    assert main(["demo", "--out", "s3://bucket/data"]) == 2
    assert "pass a local folder for them (`--dest DIR`)" in capsys.readouterr().err


def test_demo_deployment_points_at_the_flow() -> None:
    deployments = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    entry = next(d for d in deployments if d["entrypoint"] == "workflows.demo:demo")
    assert entry["name"] == "tiny" and entry["parameters"] == {"preset": "tiny", "out": "data/tiny"}
    loaded = load_flow_from_entrypoint(str(REPO_ROOT / "workflows" / "demo.py") + ":demo")
    assert loaded.name == "demo" and set(entry["parameters"]) <= set(loaded.parameters.properties)
    assert "\ndemo: $(STAMP)\n\t$(VENV)/bin/rodin demo --out $(OUT)\n\n" in (REPO_ROOT / "Makefile").read_text()
