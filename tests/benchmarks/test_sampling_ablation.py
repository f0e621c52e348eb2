"""benchmarks/sampling_ablation.py: its settings, and its rows on a tiny dataset root (paper §4.2-4.5)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rodin_core.evaluation.features import VGGFeatures
from rodin_core.fitting.shard_job import torch_threads
from rodin_core.stage_specs import STAGE_NAMES

from ..evaluation_data import HOLDOUT, make_reconstruction_root
from ..generation_data import generation_config
from ..rodin_core.evaluation.synthetic import VGG_SIZE
from .scripts import loaded_script


@pytest.fixture(scope="module")
def script():
    with loaded_script("sampling_ablation") as module:
        yield module


def test_settings_read_guidance_and_respacing(script) -> None:
    assert script.parse_setting("3:50") == script.Setting(3.0, "50")
    assert script.parse_setting("1:ddim5") == script.Setting(1.0, "ddim5")
    assert script.parse_setting("1.5:ddim10").label == "1.5:ddim10"
    for bad in ("3", "x:50", "-1:50", "1:ddim1", "1:1", "1:fast", "nan:5"):
        with pytest.raises(ValueError, match="expected GUIDANCE:STEPS or GUIDANCE:ddimSTEPS"):
            script.parse_setting(bad)


def test_rows_are_reproducible_and_each_setting_samples_the_base_its_own_way(script, tmp_path: Path) -> None:
    with torch_threads(1):
        root = make_reconstruction_root(tmp_path / "data", generation_config(*HOLDOUT), stages=STAGE_NAMES,
                                        stats=True)
        settings = [script.parse_setting(text) for text in ("3:4", "3:ddim2", "3:4")]
        rows = script.measure(root, settings, n=2, views=1, lpips="stlpips-vgg",
                              features=VGGFeatures(image_size=VGG_SIZE, batch_size=8))
    assert [row["setting"] for row in rows] == ["3:4", "3:ddim2", "3:4"]
    assert [row["subjects"] for row in rows] == [[0, 1]] * 3  # the training subjects; 2 and 3 are held out
    for row in rows:
        assert row["upsampler_respacing"] == generation_config(*HOLDOUT).upsampler.diffusion.sampling_steps
        assert set(row["recon_vs_fitted"]) == {"held_out", "other", "input"}
        values = [*row["recon_vs_fitted"].values(), row["nn_median"], row["std_ratio"], row["frechet"]]
        assert all(math.isfinite(value) for value in values), row
    drop = ("seconds",)
    first, other, again = ({k: v for k, v in row.items() if k not in drop} for row in rows)
    assert first == again  # the same setting gives the same figures
    assert other["recon_vs_fitted"] != first["recon_vs_fitted"] and other["nn_median"] != first["nn_median"]
