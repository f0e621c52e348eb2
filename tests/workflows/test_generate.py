"""The ``generate`` flow and its store side (workflows.generate, rodin_core.generation.job) on real checkpoints.

The checkpoints are untrained but real (:mod:`tests.generation_data`: built by ``build_stage``,
committed by ``commit_stage_checkpoint``), with 8 px planes and 3 reverse steps per stage, so a
flow run samples and renders in about a second. Flow runs go through the session's temporary
Prefect server.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from prefect.artifacts import Artifact
from prefect.flows import load_flow_from_entrypoint

from rodin_core.datasets.layout import (
    CONTACT_SHEET_FILE,
    FRAMES_FILE,
    GENERATED_STAGE,
    GENERATION_JSON,
)
from rodin_core.fitting.shard_job import torch_threads
from rodin_core.generation import GenerationError
from rodin_core.generation.job import (
    GenerateInputError,
    GenerateRequest,
    load_pipeline,
    plan_generation,
    read_generated_avatars,
    turntable_frames,
)
from rodin_core.imaging import LABEL_HEIGHT, decode_png, encode_png
from rodin_core.storage import open_store
from workflows.cli import main
from workflows.generate import ARTIFACT_KEY, generate

from ..generation_data import commit_decoder, generation_config, make_generation_root

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN = {"n": 2, "seed": 3, "turntable_views": 3, "resolution": 16}
"""Parameters of the flow runs: two avatars (seeds 3 and 4), 3 turntable frames of 16 px each."""
pytestmark = pytest.mark.usefixtures("one_torch_thread")
"""Small tensors: one torch thread, as the core tests, so that a busy second core cannot slow them down."""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    with torch_threads(1):
        return make_generation_root(tmp_path_factory.mktemp("generate") / "data")


def attempts(outputs: Path, shard_id: str) -> list[str]:
    return sorted(p.name for p in (outputs / GENERATED_STAGE / "data" / shard_id).iterdir())


def test_load_pipeline_names_what_is_missing_and_the_command_that_makes_it(tmp_path: Path) -> None:
    empty = str(tmp_path / "empty")
    with pytest.raises(GenerateInputError) as error:
        load_pipeline(empty)
    message = str(error.value)
    assert f"no committed decoder under {empty}/decoder (fit the tri-planes first: `rodin fit --renders" in message
    assert f"no committed base, upsampler, prior checkpoints under {empty}/checkpoints" in message
    assert f"`rodin train all --out {empty}`" in message and "\n" not in message

    cfg = generation_config()
    partial = make_generation_root(tmp_path / "partial", cfg, stages=("base", "upsampler"))
    with pytest.raises(GenerateInputError, match=r"no committed prior checkpoint under .*`rodin train prior --out "):
        load_pipeline(partial)
    pipeline = load_pipeline(partial, require_prior=False)
    assert pipeline.prior is None and pipeline.resolution == 8 and pipeline.base_resolution == 4
    with pytest.raises(GenerationError, match="no latent prior"):
        pipeline.sample(1, seed=0)


def test_load_pipeline_records_the_decoder_and_refuses_another_preset(root: str, tmp_path: Path) -> None:
    pipeline = load_pipeline(root)
    manifest = open_store(root).stage("decoder").read_manifest("decoder")
    assert pipeline.decoder_sha256 == manifest.file("decoder.safetensors").sha256
    assert pipeline.cfg.preset == "tiny" and pipeline.latent_dim == 8
    with pytest.raises(GenerationError, match=r"trained with preset 'tiny', not 'small'; pass --preset tiny"):
        load_pipeline(root, preset="small")
    small = make_generation_root(tmp_path / "small", generation_config(preset="small"), decoder=False)
    commit_decoder(small, generation_config(preset="small"))
    with pytest.raises(GenerationError, match=r"preset 'small', not 'tiny'; pass --preset small"):
        load_pipeline(small, preset="tiny")


def test_plan_resolves_defaults_before_naming_the_shard(root: str, tmp_path: Path) -> None:
    outputs = str(tmp_path)
    default = plan_generation(root, outputs, GenerateRequest(n=2))
    explicit = plan_generation(root, outputs, GenerateRequest(n=2, guidance_scale=1.0, resolution=16))
    assert default.shard_id == explicit.shard_id and default.shard_id.startswith("gen-")
    assert default.parameters["guidance_scale"] == 1.0 and default.parameters["resolution"] == 16  # tiny's
    assert default.parameters["preset"] == "tiny" and default.committed is None
    assert set(default.inputs) == {"base", "base_config", "upsampler", "upsampler_config", "prior", "prior_config",
                                   "decoder"}
    others = {plan_generation(root, outputs, request).shard_id for request in (
        GenerateRequest(n=2, seed=1), GenerateRequest(n=3), GenerateRequest(n=2, sampler="ddim"),
        GenerateRequest(n=2, steps=2), GenerateRequest(n=2, views=5), GenerateRequest(n=2, guidance_scale=3.0))}
    assert len(others) == 6 and default.shard_id not in others
    with pytest.raises(GenerateInputError, match="n must be a positive integer, got 0"):
        plan_generation(root, outputs, GenerateRequest(n=0))
    with pytest.raises(GenerationError, match="unknown sampler 'euler'"):
        plan_generation(root, outputs, GenerateRequest(sampler="euler"))
    with pytest.raises(GenerationError, match="pass --preset tiny"):
        plan_generation(root, outputs, GenerateRequest(), preset="paper")


def test_generate_commits_one_shard_of_avatars_turntables_and_a_sheet_then_reuses_it(
        prefect_server: float, root: str, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    summary = generate(checkpoints=root, outputs=str(outputs), **RUN)
    assert summary["reused"] is False and summary["stage"] == f"{outputs}/{GENERATED_STAGE}"
    shard_id = summary["shard_id"]
    stage = open_store(str(outputs)).stage(GENERATED_STAGE)
    manifest = stage.read_manifest(shard_id)
    assert stage.committed_shards() == [shard_id] and list(manifest.subject_ids) == [0, 1]
    assert {f.name for f in manifest.files} == {"avatar-000.safetensors", "avatar-001.safetensors",
                                               "turntable-000.gif", "turntable-001.gif", FRAMES_FILE,
                                               CONTACT_SHEET_FILE, GENERATION_JSON}
    assert summary["contact_sheet"] == f"{outputs}/{GENERATED_STAGE}/{manifest.file(CONTACT_SHEET_FILE).path}"

    pipeline = load_pipeline(root)
    expected = pipeline.sample(2, seed=3)
    avatars = read_generated_avatars(str(outputs), shard_id)
    for index, (avatar, reference) in enumerate(zip(avatars, expected, strict=True)):
        assert avatar.planes.shape == (3, 4, 8, 8) and avatar.z.shape == (8,)
        assert torch.equal(avatar.planes, reference.planes) and torch.equal(avatar.z, reference.z)
        assert avatar.meta["kind"] == "sample" and avatar.meta["seed"] == 3 + index
        assert avatar.meta["decoder_sha256"] == pipeline.decoder_sha256
    assert not torch.equal(avatars[0].planes, avatars[1].planes)

    frames = stage.read_table(shard_id, FRAMES_FILE).to_pydict()
    assert list(zip(frames["avatar"], frames["view"], strict=True)) == [(a, v) for a in range(2) for v in range(3)]
    rendered = [turntable_frames(pipeline.cfg, pipeline.decoder, avatar.planes, 3, 16) for avatar in avatars]
    for avatar, view, png in zip(frames["avatar"], frames["view"], frames["png"], strict=True):
        assert np.array_equal(decode_png(png), rendered[avatar][view])
    for index in range(2):
        gif = Image.open(io.BytesIO(stage.read_bytes(shard_id, f"turntable-00{index}.gif")))
        assert (gif.n_frames, gif.size, gif.info["loop"]) == (3, (16, 16), 0)
    sheet = decode_png(stage.read_bytes(shard_id, CONTACT_SHEET_FILE))
    assert sheet.shape == (16 + LABEL_HEIGHT, 2 * 16, 3)  # frame 0 of both avatars in a row, labelled
    assert np.array_equal(sheet[:16, :16], rendered[0][0]) and np.array_equal(sheet[:16, 16:], rendered[1][0])
    described = json.loads(stage.read_bytes(shard_id, GENERATION_JSON))
    assert described["parameters"]["seed"] == 3 and [m["seed"] for m in described["avatars"]] == [3, 4]
    artifact = Artifact.get(ARTIFACT_KEY)
    assert "data:image/png;base64," in artifact.data and summary["contact_sheet"] in artifact.data

    committed = attempts(outputs, shard_id)
    again = generate(checkpoints=root, outputs=str(outputs), **RUN)
    assert again["reused"] is True and again["shard_id"] == shard_id
    assert again["attempt_id"] == summary["attempt_id"] == manifest.attempt_id
    assert attempts(outputs, shard_id) == committed == [manifest.attempt_id]


def test_rodin_sample_runs_the_flow_and_copies_the_outputs(prefect_server: float, root: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    outputs, dest = tmp_path / "outputs", tmp_path / "copy"
    argv = ["sample", "--out", root, "--outputs", str(outputs), "--n", "2", "--seed", "3", "--views", "3",
            "--resolution", "16"]
    assert main([*argv, "--dest", str(dest)]) == 0
    printed = capsys.readouterr().out
    shard_id = next(s for s in open_store(str(outputs)).stage(GENERATED_STAGE).committed_shards())
    assert f"2 avatars committed in {outputs}/{GENERATED_STAGE} shard {shard_id}" in printed
    assert f"copied 12 files to {dest}" in printed
    stage = open_store(str(outputs)).stage(GENERATED_STAGE)
    assert (dest / CONTACT_SHEET_FILE).read_bytes() == stage.read_bytes(shard_id, CONTACT_SHEET_FILE)
    for index in range(2):
        name = f"avatar-00{index}"
        assert (dest / f"{name}.safetensors").read_bytes() == stage.read_bytes(shard_id, f"{name}.safetensors")
        assert (dest / f"{name}-turntable.gif").read_bytes() == stage.read_bytes(shard_id, f"turntable-00{index}.gif")
        assert sorted(p.name for p in (dest / f"{name}-turntable").iterdir()) == [
            "frame_0000.png", "frame_0001.png", "frame_0002.png"]
    assert main(argv) == 0
    assert f"2 avatars reused in {outputs}/{GENERATED_STAGE} shard {shard_id}" in capsys.readouterr().out


def test_rodin_sample_refuses_bad_input_before_starting_prefect(tmp_path: Path, root: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`rodin train all --out" in err and "Traceback" not in err
    assert main(["sample", "--out", root, "--preset", "small"]) == 2
    assert "pass --preset tiny" in capsys.readouterr().err
    assert main(["sample", "--out", root, "--n", "0"]) == 2
    assert "argument --n: must be a positive integer, got 0" in capsys.readouterr().err
    assert not (Path(root) / GENERATED_STAGE).exists()


def _commit_previous_format(out: str, stage_name: str, shard_id: str, json_name: str) -> None:
    """Commit shard ``shard_id`` again with ``format_version`` 1 in its JSON file, as an older rodin wrote it."""
    stage = open_store(out).stage(stage_name)
    manifest = stage.read_manifest(shard_id)
    writer = stage.begin(shard_id)
    for entry in manifest.files:
        data = stage.read_bytes(shard_id, entry.name)
        if entry.name == json_name:
            data = json.dumps(json.loads(data) | {"format_version": 1}).encode("utf-8")
        writer.write_bytes(entry.name, data)
    writer.commit(list(manifest.subject_ids), manifest.config_hash, manifest.extra)


def test_inputs_of_the_previous_format_are_refused_naming_the_command(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = make_generation_root(tmp_path / "data")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[4:12, 4:12] = (200, 120, 80, 255)
    (tmp_path / "portrait.png").write_bytes(encode_png(rgba))
    _commit_previous_format(out, "decoder", "decoder", "decoder.json")
    assert main(["invert", str(tmp_path / "portrait.png"), "--out", out, "--dest", str(tmp_path / "inv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "format_version 1, this rodin reads 2" in err and "Traceback" not in err
    assert "`rodin fit --renders <renders root> --out <dataset root>`" in err
    _commit_previous_format(out, "checkpoints", "base", "checkpoint.json")
    assert main(["sample", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out}/checkpoints/base is a checkpoint of format_version 1" in err
    assert "`rodin train base --out <dataset root> --fresh`" in err and not (Path(out) / GENERATED_STAGE).exists()


def test_generate_deployment_points_at_the_flow() -> None:
    deployments = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    entry = next(d for d in deployments if d["entrypoint"] == "workflows.generate:generate")
    assert entry["name"] == "tiny" and entry["work_pool"]["name"] == "rodin-process"
    loaded = load_flow_from_entrypoint(str(REPO_ROOT / "workflows" / "generate.py") + ":generate")
    assert loaded.name == "generate"
    assert set(entry["parameters"]) <= set(loaded.parameters.properties)
