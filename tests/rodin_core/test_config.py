"""Presets, YAML files and command-line overrides, and the errors on bad keys or values."""

import json
import sys

import pytest

from rodin_core.config import (
    ConfigError,
    RodinConfig,
    apply_overrides,
    load_config,
    preset_config,
    saved_held_out_from,
)


def test_presets_hold_their_numbers():
    paper = preset_config("paper")
    assert (paper.render.views, paper.render.resolution, paper.corpus.subjects) == (300, 256, 100_000)
    tiny = preset_config("tiny")
    assert tiny.render.resolution == 64 and tiny.render.views < paper.render.views
    assert preset_config("small").preset == "small"


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown preset 'huge'.*tiny.*small.*paper"):
        preset_config("huge")


def test_overrides_are_typed_and_applied():
    cfg = load_config("tiny", overrides=["render.views=12", "render.fov_deg=35", "render.denoise=false",
                                         "corpus.asset_dir=/assets"])
    assert cfg.render.views == 12 and isinstance(cfg.render.views, int)
    assert cfg.render.fov_deg == 35.0 and isinstance(cfg.render.fov_deg, float)
    assert cfg.render.denoise is False and cfg.corpus.asset_dir == "/assets"
    assert load_config("tiny", overrides=["corpus.asset_dir=null"]).corpus.asset_dir is None
    nested = load_config("tiny", overrides=["base.train.lr=1e-3", "upsampler.channel_mult=[1,2,4]",
                                            "base.attention_resolutions=[]"])
    assert nested.base.train.lr == 0.001 and nested.upsampler.channel_mult == (1, 2, 4)
    assert nested.base.attention_resolutions == ()
    assert RodinConfig.from_dict(json.loads(nested.to_json())).upsampler.channel_mult == (1, 2, 4)
    exponent = load_config("tiny", overrides=["fit.tv_weight=1e-3"]).fit  # YAML 1.1 reads "1e-3" as a string
    assert exponent.tv_weight == 0.001 and isinstance(exponent.tv_weight, float)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("render.viewz=3", r"unknown config key 'render.viewz' \(did you mean 'views'\?\).*resolution"),
        ("rendr.views=3", r"unknown config key 'rendr'.*corpus, render"),
        ("render.views=many", r"bad value for render.views: 'many' is not a int"),
        ("render.views=0", r"render.views: 0 is outside the valid range \[1, inf\]"),
        ("render.denoise=3", r"render.denoise: 3 is not a bool"),
        ("render.fov_deg=wide", r"bad value for render.fov_deg: 'wide' is not a float"),
        ("base.channel_mult=[1,x]", r"bad value for base.channel_mult: \[1, 'x'\] is not a list of ints"),
        ("base.channel_mult=[]", r"base.channel_mult=\(\) must be a non-empty list"),
        ("encoder.kind=vae", r"encoder.kind='vae' is not an encoder; choose one of \('clip', 'learned'\)"),
        ("upsampler.train.precision=fp8", r"upsampler.train.precision='fp8' is not one of"),
        ("prior.train.ema_decay=1.5", r"prior.train.ema_decay: 1.5 is outside the valid range \[0.0, 1.0\]"),
        ("render.views", r"not of the form section.field=value"),
        ("render=3", r"render is a section"),
        ("render.elevation_min_deg=60", r"elevation_min_deg=60.0 is above"),
    ],
)
def test_bad_overrides_name_key_value_and_choices(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(preset_config("tiny"), [override])


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("render:\n  views: 20\n  samples: 4\ncorpus:\n  seed: 7\n")
    cfg = load_config("tiny", path, ["render.samples=6"])
    assert (cfg.render.views, cfg.render.samples, cfg.corpus.seed) == (20, 6, 7)
    assert cfg.render.resolution == preset_config("tiny").render.resolution  # untouched keys keep the preset


def test_yaml_file_may_switch_preset(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("preset: paper\nrender:\n  views: 10\n")
    cfg = load_config("tiny", path)
    assert cfg.preset == "paper" and cfg.render.views == 10 and cfg.render.resolution == 256


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("tiny", tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("render:\n  colour: red\n")
    with pytest.raises(ConfigError, match="unknown config key 'render.colour'"):
        load_config("tiny", bad)
    flat = tmp_path / "flat.yaml"
    flat.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config("tiny", flat)


def test_held_out_subjects_are_the_last_ids_of_the_corpus():
    """corpus.holdout_subjects: the evaluation subjects of paper §4.5 / appendix C.5 (1K in the paper)."""
    assert preset_config("paper").corpus.holdout_subjects == 1000
    assert preset_config("paper").corpus.first_held_out == 99_000
    tiny = preset_config("tiny").corpus
    assert (tiny.subjects, tiny.holdout_subjects, tiny.first_held_out) == (16, 2, 14)
    assert tiny.held_out_ids() == [14, 15]
    assert [s for s in range(16) if tiny.is_training_subject(s)] == list(range(14))
    small = load_config("small", overrides=["corpus.subjects=10", "corpus.holdout_subjects=3"]).corpus
    assert small.held_out_ids() == [7, 8, 9] and small.first_held_out == 7
    none = load_config("tiny", overrides=["corpus.holdout_subjects=0"]).corpus
    assert none.first_held_out is None and none.held_out_ids() == [] and none.is_training_subject(15)
    assert load_config("tiny", overrides=["corpus.subjects=8"]).corpus.held_out_ids() == [6, 7]
    two = load_config("tiny", overrides=["corpus.subjects=2"]).corpus  # `rodin render --subjects 2` stays valid
    assert (two.held_out_count, two.held_out_ids(), two.is_training_subject(0)) == (1, [1], True)
    assert load_config("tiny", overrides=["corpus.holdout_subjects=99"]).corpus.held_out_ids() == list(range(1, 16))
    assert saved_held_out_from(load_config("tiny", overrides=["corpus.subjects=2"]).to_dict()) == 1
    saved = preset_config("tiny").to_dict()
    assert saved_held_out_from(saved) == 14 and RodinConfig.from_dict(saved).corpus.first_held_out == 14
    del saved["corpus"]["holdout_subjects"]  # a config saved before the key existed trained on every subject
    assert saved_held_out_from(saved) is None


@pytest.mark.parametrize(("overrides", "message"), [
    (["corpus.holdout_subjects=-1"], r"corpus.holdout_subjects: -1 is outside the valid range \[0, inf\]"),
    (["corpus.holdout_subjects=two"], r"bad value for corpus.holdout_subjects: 'two' is not a int"),
])
def test_bad_holdout_names_the_key_and_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides=overrides)


def test_dict_round_trip():
    cfg = load_config("small", overrides=["render.samples=5"])
    again = RodinConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg


def test_core_config_imports_no_orchestration():
    assert not {"prefect", "ray", "bpy"} & {m.split(".")[0] for m in sys.modules if m.startswith("rodin_core")}
