"""The config tree: held-out subjects, saved-config round trips and what the core config imports."""

import json
import sys

import pytest

from rodin_core.config import ConfigError, RodinConfig, load_config, preset_config, saved_held_out_from


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
    cfg = load_config("small", overrides=["render.samples=5", "upsampler.unet.channel_mult=[1,2,4]",
                                          "prior.diffusion.sampling_steps=ddim20"])
    again = RodinConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg and again.upsampler.unet.channel_mult == (1, 2, 4)


def test_a_saved_config_whose_derived_fields_disagree_is_refused():
    saved = preset_config("tiny").to_dict()
    saved["base"]["unet"]["in_channels"] = 16
    with pytest.raises(ConfigError, match="base.unet.in_channels=16 conflicts with triplane.channels=8"):
        RodinConfig.from_dict(saved)


def test_a_saved_config_of_the_flat_layout_is_refused_naming_the_new_key():
    saved = preset_config("tiny").to_dict()
    saved["prior"] = {"depth": 4, "width": 256}
    with pytest.raises(ConfigError, match=r"unknown config key 'prior.depth' \(did you mean 'mlp.depth'\?\)"):
        RodinConfig.from_dict(saved)


def test_a_config_is_derived_as_soon_as_it_is_built():
    cfg = RodinConfig()
    assert (cfg.upsampler.unet.latent_dim, cfg.upsampler.unet.cond_channels, cfg.upsampler.unet.learn_sigma) == (
        0, 32, False)
    with pytest.raises(ConfigError, match=r"preset='huge' is not a preset; choose one of \('tiny', 'small', 'paper'\)"):
        RodinConfig(preset="huge").validate()


def test_core_config_imports_no_orchestration():
    assert not {"prefect", "ray", "bpy"} & {m.split(".")[0] for m in sys.modules if m.startswith("rodin_core")}


def test_the_text_prior_reads_text_and_z_of_the_encoders_size():
    cfg = load_config("tiny", overrides=["encoder.latent_dim=128", "text_prior.text_drop=0.25"])
    assert (cfg.text_prior.mlp.latent_dim, cfg.text_prior.mlp.text_dim, cfg.text_prior.text_drop) == (128, 128, 0.25)
    with pytest.raises(ConfigError, match="text_prior.mlp.text_dim=64 conflicts with encoder.latent_dim=128"):
        load_config("tiny", overrides=["encoder.latent_dim=128", "text_prior.mlp.text_dim=64"])
    with pytest.raises(ConfigError, match="text_prior.text_drop"):
        load_config("tiny", overrides=["text_prior.text_drop=1.5"])
    saved = preset_config("tiny").to_dict()
    del saved["text_prior"]  # a config saved before the text prior existed
    assert RodinConfig.from_dict(saved).text_prior == preset_config("paper").text_prior
