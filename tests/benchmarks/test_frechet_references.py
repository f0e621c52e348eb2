"""benchmarks/frechet_references.py: which subjects and rows its references use, and what they measure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from rodin_core.datasets.layout import LATENTS_FILE, LATENTS_SHARD, LATENTS_STAGE
from rodin_core.evaluation.features import VGGFeatures
from rodin_core.evaluation.sample_quality import ReferenceSet
from rodin_core.fitting.shard_job import torch_threads
from rodin_core.generation.job import load_pipeline
from rodin_core.stage_specs import STAGE_NAMES
from rodin_core.storage import open_store
from rodin_core.training.latents import read_latents

from ..evaluation_data import HOLDOUT, make_reconstruction_root
from ..generation_data import generation_config
from ..rodin_core.evaluation.synthetic import VGG_SIZE
from .scripts import loaded_script


@pytest.fixture(scope="module")
def script():
    with loaded_script("frechet_references") as module:
        yield module


class ColourStatistics:
    """Features of an image: its mean and std per channel (N, 6)."""

    name, dim = "colour-statistics", 6

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)


def reference_set(subjects: int, views: int, fitted_is_truth: bool) -> ReferenceSet:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (subjects, views, 8, 8, 3), dtype=np.uint8)
    fitted = truth.copy() if fitted_is_truth else np.clip(truth.astype(int) + 40, 0, 255).astype(np.uint8)
    return ReferenceSet(list(range(100, 100 + subjects)), tuple(range(views)), torch.zeros(subjects, 3, 1, 2, 2),
                        fitted, truth, torch.eye(4).repeat(views, 1, 1), torch.eye(3).repeat(views, 1, 1))


def test_positions_spread_from_first_to_last_and_rows_follow_the_views(script) -> None:
    assert script.spread_positions(10, 4) == [0, 3, 6, 9]
    assert script.spread_positions(3, 5) == [0, 1, 2]
    assert script.subject_rows([0, 2], 3) == [0, 1, 2, 6, 7, 8]


def test_a_rows_steps_name_the_sampler_or_leave_it_to_each_stage(script) -> None:
    assert script.sample_setting(25) == (None, 25) and script.sample_setting("25") == (None, 25)
    assert script.sample_setting("ddim5") == ("ddim", 5) and script.sample_setting("ancestral50") == ("ancestral", 50)
    assert script.sample_setting("config") == (None, None)  # each stage's configured sampling_steps
    for bad in ("1", "ddim", "ddim1", "euler20", "25x", "-3", "", "configured", "ddimconfig"):
        with pytest.raises(ValueError, match="N, ddimN, ancestralN with N >= 2 or 'config'") as caught:
            script.sample_setting(bad)
        assert "\n" not in str(caught.value)


def test_the_command_line_asks_for_the_low_res_rows_with_or_without_the_bilinear_one(script, monkeypatch) -> None:
    asked = []

    def measure(*args, low_res_steps=None, **kwargs):
        asked.append(low_res_steps)
        raise KeyboardInterrupt  # stop before anything is loaded

    monkeypatch.setattr(script, "measure", measure)
    for argv, rows in ((["--from-fitted-low-res", "25", "ddim25"], [script.BILINEAR, "25", "ddim25"]),
                       (["--from-fitted-low-res", "ddim25", "--no-bilinear"], ["ddim25"]), ([], None)):
        monkeypatch.setattr("sys.argv", ["frechet_references.py", *argv])
        with pytest.raises(KeyboardInterrupt):
            script.main()
        assert asked.pop() == rows
    monkeypatch.setattr("sys.argv", ["frechet_references.py", "--from-fitted-low-res", "euler9"])
    with pytest.raises(SystemExit, match="--from-fitted-low-res: steps must be N, ddimN, ancestralN"):
        script.main()


def test_fitted_subjects_that_are_the_truth_reach_zero_only_all_together(script) -> None:
    exact = script.references(reference_set(12, 3, fitted_is_truth=True), ColourStatistics(), n=4)
    assert exact["fitted_all"] == pytest.approx(0.0, abs=1e-6)
    assert exact["fitted_n"] > 1e-4  # four subjects of twelve are a biased estimate of the twelve
    assert exact["fitted_n_subjects"] == [100, 104, 107, 111]
    shifted = script.references(reference_set(12, 3, fitted_is_truth=False), ColourStatistics(), n=12)
    assert shifted["fitted_n"] == pytest.approx(shifted["fitted_all"]) and shifted["fitted_all"] > 1e-3
    assert shifted["floor"] == exact["floor"] > 0  # the floor reads the truth alone
    assert exact["truth_n"] == pytest.approx(exact["fitted_n"])  # fitted = truth: the same subjects, same value
    assert shifted["truth_n"] == pytest.approx(0.0, abs=1e-6)  # n = all subjects: the truth against itself


def test_rows_on_a_trained_store_are_finite_and_repeat(script, tmp_path: Path) -> None:
    with torch_threads(1):
        root = make_reconstruction_root(tmp_path / "data", generation_config(*HOLDOUT), stages=STAGE_NAMES,
                                        stats=True)
        features = VGGFeatures(image_size=VGG_SIZE, batch_size=8)
        first = script.measure(root, n=3, steps=[2, 2, "ddim2"], views=1, features=features, prefixes=[2, 3, 9])
        drawn = load_pipeline(str(root), None, None, "cpu").sample_latents(3, seed=0)  # (3, D): the samples' z
    assert first["subjects"] == 2 and first["fitted_n"] == pytest.approx(first["fitted_all"])  # n covers both
    assert [(row["steps"], row["sampler"]) for row in first["samples"]] == [(2, None), (2, None), (2, "ddim")]
    again, other, ddim = first["samples"]
    assert ddim["frechet"] != again["frechet"]  # the configured rule of both stages here is ancestral
    assert again["frechet"] == other["frechet"] and again["nn_median"] == other["nn_median"]
    assert list(again["frechet_first"]) == [2] and again["frechet_first"] == other["frechet_first"]  # below n only
    assert math.isfinite(again["frechet_first"][2]) and again["frechet_first"][2] != again["frechet"]
    assert again["z_norm_mean"] == other["z_norm_mean"] == pytest.approx(float(drawn.norm(dim=1).mean()), rel=1e-6)
    assert all(math.isfinite(first[k]) for k in ("floor", "fitted_all", "loo_median"))


def test_a_config_row_samples_each_stage_as_configured(script, tmp_path: Path) -> None:
    with torch_threads(1):  # base: DDIM 2 steps, upsampler: ancestral 2 steps
        root = make_reconstruction_root(tmp_path / "data", generation_config(*HOLDOUT, "base.diffusion.sampling_steps=ddim2",
                                                                          "upsampler.diffusion.sampling_steps=2"),
                                        stages=STAGE_NAMES, stats=True)
        features = VGGFeatures(image_size=VGG_SIZE, batch_size=8)
        rows = script.measure(root, n=2, steps=["config", 2, "ancestral2"], views=1, features=features)["samples"]
    configured, two, ancestral = rows
    assert [(row["steps"], row["sampler"]) for row in rows] == [(None, None), (2, None), (2, "ancestral")]
    assert (configured["frechet"], configured["nn_median"]) == (two["frechet"], two["nn_median"])  # same sampling
    assert ancestral["frechet"] != configured["frechet"]  # the base stage samples otherwise


def test_a_guidance_scale_reaches_the_base_model_of_the_sampled_rows_only(script, tmp_path: Path) -> None:
    with torch_threads(1):
        root = make_reconstruction_root(tmp_path / "data", generation_config(*HOLDOUT), stages=STAGE_NAMES,
                                        stats=True)
        configured = load_pipeline(str(root), None, None, "cpu").cfg.base.guidance_scale
        features = VGGFeatures(image_size=VGG_SIZE, batch_size=8)
        rows = {scale: script.measure(root, n=2, steps=[2], views=1, features=features, low_res_steps=[2],
                                      guidance=scale)["samples"] for scale in (None, configured, configured + 2.0)}
    assert [[row["guidance"] for row in rows[scale]] for scale in rows] == [
        [configured, None], [configured, None], [configured + 2.0, None]]  # the low-res row skips the base model
    default, same, stronger = rows.values()
    assert default == [{**row, "seconds": d["seconds"]} for row, d in zip(same, default, strict=True)]
    assert stronger[0]["frechet"] != default[0]["frechet"] and math.isfinite(stronger[0]["frechet"])
    assert stronger[1]["frechet"] == default[1]["frechet"]


def test_a_negative_or_infinite_guidance_is_a_one_line_error(script, monkeypatch) -> None:
    for bad in ("-0.5", "inf", "nan"):
        monkeypatch.setattr("sys.argv", ["frechet_references.py", "--steps", "25", "--guidance", bad])
        with pytest.raises(SystemExit, match="--guidance: guidance_scale must be a finite number >= 0") as caught:
            script.main()
        assert "\n" not in str(caught.value)


def test_the_training_z_row_generates_from_the_latents_the_prior_trained_on(script, tmp_path: Path) -> None:
    with torch_threads(1):
        root = make_reconstruction_root(tmp_path / "data", generation_config(*HOLDOUT), stages=STAGE_NAMES,
                                        stats=True)
        pipeline = load_pipeline(str(root), None, None, "cpu")
        z = torch.randn(5, pipeline.latent_dim, generator=torch.Generator().manual_seed(3))  # (N, D)
        writer = open_store(str(root)).stage(LATENTS_STAGE).begin(LATENTS_SHARD)
        writer.write_bytes(LATENTS_FILE, safetensors.torch.save({"subject_ids": torch.arange(5), "z": z}))
        writer.commit(list(range(5)), "test")
        _, latents = read_latents(str(root))  # (N, D): one z per training subject
        features = VGGFeatures(image_size=VGG_SIZE, batch_size=8)
        result = script.measure(root, n=2, steps=[2], views=1, features=features, training_z_steps=[2])
        direct = [pipeline.generate(latents[p], seed=i, options=script.SampleOptions(steps=2))
                  for i, p in enumerate(script.spread_positions(len(latents), 2))]
        made, used = script.training_z_samples(pipeline, str(root), 2, script.SampleOptions(steps=2))
    assert [(row["source"], row["steps"]) for row in result["samples"]] == [("prior", 2), ("training z", 2)]
    prior, training = result["samples"]
    assert torch.equal(latents, z)
    assert training["z_norm_mean"] == pytest.approx(float(z[[0, 4]].norm(dim=1).mean()), rel=1e-6)  # spread: 0, 4
    assert training["frechet"] != prior["frechet"] and math.isfinite(training["frechet"])
    assert torch.equal(used, z[[0, 4]]) and all(torch.equal(a, b) for a, b in zip(made, direct, strict=True))


def test_the_fitted_low_res_rows_bring_the_fitted_planes_down_and_up_again(script, tmp_path: Path) -> None:
    with torch_threads(1):
        root = make_reconstruction_root(tmp_path / "data", generation_config(*HOLDOUT), stages=STAGE_NAMES,
                                        stats=True)
        pipeline = load_pipeline(str(root), None, None, "cpu")
        channels, side = pipeline.cfg.triplane.channels, pipeline.resolution
        level = torch.linspace(-1.0, 1.0, 3 * channels).reshape(1, 3, channels, 1, 1)
        flat = level.expand(2, 3, channels, side, side).clone()  # (2, 3, C, H, H): one value per plane channel
        noisy = flat + torch.randn(flat.shape, generator=torch.Generator().manual_seed(0))  # (2, 3, C, H, H)
        smooth = script.fitted_low_res_samples(pipeline, flat, script.BILINEAR)
        blurred = script.fitted_low_res_samples(pipeline, noisy, script.BILINEAR)
        upsampled = script.fitted_low_res_samples(pipeline, noisy, 2)
        again = script.fitted_low_res_samples(pipeline, noisy, 2)
        ddim = script.fitted_low_res_samples(pipeline, noisy, 2, "ddim")
        low = script.downsample_planes(pipeline.stats.normalize(noisy[1:]), pipeline.base_resolution)  # (1, 3, C, h, h)
        direct = script.sample_upsampler(pipeline.upsampler, pipeline.cfg, pipeline.stats,
                                         pipeline.stats.denormalize(low), generator=torch.Generator().manual_seed(1),
                                         respacing=script.stage_respacing(pipeline.cfg, "upsampler",
                                                                          script.SampleOptions(steps=2)))[0]
        features = VGGFeatures(image_size=VGG_SIZE, batch_size=8)
        result = script.measure(root, n=2, steps=[], views=1, features=features, low_res_steps=[script.BILINEAR, 2, "ddim2"])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(smooth, flat, strict=True))  # nothing to lose
    assert all(a.shape == (3, channels, side, side) for a in blurred + upsampled)
    assert all(b.std() < n.std() for b, n in zip(blurred, noisy, strict=True))  # the noise above h/2 is gone
    assert all(torch.equal(a, b) for a, b in zip(upsampled, again, strict=True))  # avatar i: seed i, every time
    assert torch.allclose(upsampled[1], direct, atol=1e-6) and not torch.equal(upsampled[1], blurred[1])
    rows = result["samples"]
    assert not any(torch.equal(a, b) for a, b in zip(upsampled, ddim, strict=True))  # the sampler is the row's
    assert [(row["source"], row["steps"], row["sampler"]) for row in rows] == [
        ("fitted low-res", 0, None), ("fitted low-res", 2, None), ("fitted low-res", 2, "ddim")]
    assert all(row["z_norm_mean"] is None and math.isfinite(row["frechet"]) for row in rows)
    assert rows[0]["frechet"] != rows[1]["frechet"] != rows[2]["frechet"]
