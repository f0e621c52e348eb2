"""The refiner's pairs and its training job on two small corpora (paper §3.3, Fig. 8)."""

import numpy as np
import pytest
import torch

from rodin_core.datasets.decoder import load_decoder
from rodin_core.datasets.refiner_pairs import (
    RefinerDataError,
    iter_pairs,
    low_intrinsics,
    render_inputs,
)
from rodin_core.datasets.refiner_store import read_refiner
from rodin_core.datasets.renders import read_views
from rodin_core.datasets.triplanes import iter_planes
from rodin_core.generation.job import render_settings
from rodin_core.networks.refiner import RefinerConfig
from rodin_core.storage import open_store
from rodin_core.training.refiner import RefinerTrainConfig
from rodin_core.training.refiner_job import split_subjects, train_refiner_to_store

from ...refiner_data import (
    LOW_SIDE,
    make_refiner_corpora,
    refiner_config,
    write_renders,
)
from ...training_corpus import FAILED


def test_a_pair_is_the_fitted_render_from_the_high_resolution_camera_and_that_render(tmp_path) -> None:
    cfg = refiner_config()
    out, high = make_refiner_corpora(tmp_path)
    decoder, _ = load_decoder(out)
    planes = dict(iter_planes(out))
    pairs = list(iter_pairs(cfg, out, high, {3: planes[3], 5: planes[5]}, decoder, render_settings(cfg)))
    assert [p.subjects.tolist() for p in pairs] == [[3, 3], [5, 5]] and pairs[0].views.tolist() == [0, 1]
    assert pairs[0].inputs.shape == (2, 5, LOW_SIDE, LOW_SIDE) and pairs[0].targets.shape == (2, 3, 16, 16)
    assert pairs[0].scale == 2
    view = read_views(open_store(high).stage("renders"), "shard-000001", 5)[1]
    rgba = view.rgba.astype(np.float32) / 255.0
    expected = rgba[..., :3] * rgba[..., 3:] + cfg.fit.background * (1.0 - rgba[..., 3:])
    assert np.allclose(pairs[1].targets[1].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    intrinsics = low_intrinsics(view.intrinsics[None], 2)
    assert np.allclose(intrinsics[0], np.diag([1, 1, 1.0]) @ view.intrinsics / np.array([[2], [2], [1]]))
    direct = render_inputs(planes[5], decoder, view.c2w[None], intrinsics, LOW_SIDE, render_settings(cfg),
                           cfg.fit.background, cfg.render.camera_radius)
    assert torch.equal(pairs[1].inputs[1:], direct)


def test_the_cache_returns_the_same_inputs_without_rendering(tmp_path, monkeypatch) -> None:
    cfg = refiner_config()
    out, high = make_refiner_corpora(tmp_path)
    decoder, _ = load_decoder(out)
    planes = {0: dict(iter_planes(out))[0]}
    first = next(iter_pairs(cfg, out, high, planes, decoder, render_settings(cfg), cache=tmp_path / "cache"))
    assert len(list((tmp_path / "cache").iterdir())) == 1

    def no_render(*args, **kwargs):
        raise AssertionError("rendered although cached")

    monkeypatch.setattr("rodin_core.datasets.refiner_pairs.render_layers", no_render)
    again = next(iter_pairs(cfg, out, high, planes, decoder, render_settings(cfg), cache=tmp_path / "cache"))
    assert torch.equal(again.inputs, first.inputs)
    with pytest.raises(AssertionError, match="rendered although cached"):  # other planes are rendered
        next(iter_pairs(cfg, out, high, {0: planes[0] + 1}, decoder, render_settings(cfg), cache=tmp_path / "cache"))


@pytest.mark.parametrize(("high_side", "message"), [
    (24, (r"are 24 px, the fitted corpus .* 8 px: the refiner up-samples by 2 or 4; render them with "
         r"`rodin render --resolution 16` \(or 32\)")),
    (8, "are 8 px"),
])
def test_high_resolution_renders_not_at_2x_or_4x_are_refused_in_one_line(tmp_path, high_side, message) -> None:
    cfg = refiner_config()
    out, high = make_refiner_corpora(tmp_path, high_side=high_side)
    decoder, _ = load_decoder(out)
    with pytest.raises(RefinerDataError, match=message) as info:
        next(iter_pairs(cfg, out, high, {0: dict(iter_planes(out))[0]}, decoder, render_settings(cfg)))
    assert "\n" not in str(info.value)


def test_renders_of_other_subjects_are_refused(tmp_path) -> None:
    cfg = refiner_config()
    out, high = make_refiner_corpora(tmp_path)
    decoder, _ = load_decoder(out)
    planes = dict(iter_planes(out))
    write_renders(high, cfg, 16, 2, [[0, 1, 2]], recipe_seed=7)
    with pytest.raises(RefinerDataError, match=r"subjects \[0, 1\] of .* were built from other recipes"):
        next(iter_pairs(cfg, out, high, {0: planes[0], 1: planes[1]}, decoder, render_settings(cfg)))
    with pytest.raises(RefinerDataError, match=r"subjects \[5\] are not in the high-resolution renders"):
        next(iter_pairs(cfg, out, high, {5: planes[5]}, decoder, render_settings(cfg)))


def test_held_out_subjects_are_the_last_fitted_ones_and_the_corpus_held_out_ones() -> None:
    cfg = refiner_config()  # 9 subjects, subject 8 held out by the corpus
    assert split_subjects([0, 1, 2, 3, 5, 6, 7, 8], cfg, 2) == ([0, 1, 2, 3, 5, 6], [7, 8])
    assert split_subjects([0, 1, 2, 3, 5, 6, 7, 8], cfg, 3) == ([0, 1, 2, 3, 5], [6, 7, 8])
    assert split_subjects([0, 1, 2, 8], cfg, 0) == ([0, 1, 2], [8])
    with pytest.raises(RefinerDataError, match="no training subject is left: 2 fitted subjects, 2 held out"):
        split_subjects([7, 8], cfg, 2)


def test_the_job_trains_on_the_training_subjects_and_commits_the_refiner(tmp_path) -> None:
    cfg = refiner_config()
    out, high = make_refiner_corpora(tmp_path)
    train = RefinerTrainConfig(steps=3, batch_size=2, patch=6, perceptual_weight=0.0, holdout_subjects=3)
    summary = train_refiner_to_store(cfg, out, high, net=RefinerConfig(channels=4, blocks=1), train=train)
    fitted = [s for s in range(9) if s != FAILED]
    assert summary["train_subjects"] == [0, 1, 2, 3, 5] and summary["held_out_subjects"] == [6, 7, 8]
    assert summary["pairs"] == 5 * 2 and summary["scale"] == 2 and summary["input_resolution"] == LOW_SIDE
    refiner = read_refiner(out)
    assert refiner.scale == 2 and refiner.input_resolution == LOW_SIDE
    assert refiner.meta["decoder_sha256"] == load_decoder(out)[1]
    assert refiner.meta["held_out_subjects"] == [s for s in fitted if s >= 6]
    assert refiner.meta["train"]["steps"] == 3 and len(refiner.meta["history"]) == 1
    assert any(p.abs().sum() > 0 for p in refiner.model.tail.parameters())  # it was trained


def test_the_job_trains_on_the_subjects_the_high_resolution_corpus_holds(tmp_path) -> None:
    cfg = refiner_config()
    out, high = make_refiner_corpora(tmp_path)
    write_renders(high, cfg, 16, 2, [[1, 2], [7]])
    train = RefinerTrainConfig(steps=1, batch_size=1, patch=4, perceptual_weight=0.0, holdout_subjects=3)
    summary = train_refiner_to_store(cfg, out, high, net=RefinerConfig(channels=4, blocks=0), train=train)
    assert summary["train_subjects"] == [1, 2] and summary["skipped_subjects"] == [0, 3, 5]
    assert summary["pairs"] == 4 and read_refiner(out).meta["train_subjects"] == [1, 2]
    write_renders(high, cfg, 16, 2, [[6, 7, 8]])
    with pytest.raises(RefinerDataError, match=r"none of the training subjects 0\.\.3, 5 is in the high-resolution"):
        train_refiner_to_store(cfg, out, high, net=RefinerConfig(channels=4, blocks=0), train=train)
