"""YAML files and command-line overrides at any depth, derived fields, and the errors on bad keys or values."""

import pytest

from rodin_core.config import ConfigError, apply_overrides, load_config, preset_config


def test_overrides_are_typed_and_applied():
    cfg = load_config("tiny", overrides=["render.views=12", "render.fov_deg=35", "render.denoise=false",
                                         "corpus.asset_dir=/assets"])
    assert cfg.render.views == 12 and isinstance(cfg.render.views, int)
    assert cfg.render.fov_deg == 35.0 and isinstance(cfg.render.fov_deg, float)
    assert cfg.render.denoise is False and cfg.corpus.asset_dir == "/assets"
    assert load_config("tiny", overrides=["corpus.asset_dir=null"]).corpus.asset_dir is None
    nested = load_config("tiny", overrides=["base.train.lr=1e-3", "upsampler.unet.channel_mult=[1,2,4]",
                                            "base.unet.attention_resolutions=[]"])
    assert nested.base.train.lr == 0.001 and nested.upsampler.unet.channel_mult == (1, 2, 4)
    assert nested.base.unet.attention_resolutions == ()
    exponent = load_config("tiny", overrides=["fit.tv_weight=1e-3"]).fit  # YAML 1.1 reads "1e-3" as a string
    assert exponent.tv_weight == 0.001 and isinstance(exponent.tv_weight, float)


def test_set_at_depth_three_reaches_every_component_config():
    cfg = load_config("tiny", overrides=["base.unet.model_channels=16", "base.diffusion.mean_type=x0",
                                         "upsampler.diffusion.sampling_steps=ddim10", "prior.mlp.width=64",
                                         "triplane.decoder.hidden=32", "prior.diffusion.steps=200"])
    assert cfg.base.unet.model_channels == 16 and cfg.base.diffusion.mean_type == "x0"
    assert cfg.upsampler.diffusion.sampling_steps == "ddim10" and cfg.prior.mlp.width == 64
    assert cfg.triplane.decoder.hidden == 32 and cfg.prior.diffusion.steps == 200
    numeric = load_config("tiny", overrides=["base.diffusion.sampling_steps=25"]).base.diffusion
    assert numeric.sampling_steps == "25"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("render.viewz=3", r"unknown config key 'render.viewz' \(did you mean 'views'\?\).*resolution"),
        ("rendr.views=3", r"unknown config key 'rendr'.*corpus, render"),
        ("render.views=many", r"bad value for render.views: 'many' is not a int"),
        ("render.views=0", r"render.views: 0 is outside the valid range \[1, 4096\]"),
        ("render.views=1000000000", r"render.views: 1000000000 is outside the valid range \[1, 4096\]"),
        ("corpus.subjects=100000000000", r"corpus.subjects: 100000000000 is outside the valid range \[1, 10000000\]"),
        ("base.train.workers=1000", r"base.train.workers: 1000 is outside the valid range \[1, 256\]"),
        ("fit.target_psnr=nan", r"bad value for fit.target_psnr: 'nan' is not a finite number"),
        ("base.train.lr=.nan", r"bad value for base.train.lr: nan is not a finite number"),
        ("render.fov_deg=-.inf", r"bad value for render.fov_deg: -inf is not a finite number"),
        ("fit.target_psnr=1e999", r"bad value for fit.target_psnr: '1e999' is not a finite number"),
        ("base.unet.dropout=.nan", r"bad value for base.unet.dropout: nan is not a finite number"),
        ("render.denoise=3", r"render.denoise: 3 is not a bool"),
        ("render.fov_deg=wide", r"bad value for render.fov_deg: 'wide' is not a float"),
        ("base.unet.channel_mult=[1,x]", r"bad value for base.unet.channel_mult: \[1, 'x'\] is not a list of ints"),
        ("base.unet.channel_mult=[]",
         r"bad value in base.unet: UNetConfig.channel_mult must be a non-empty tuple of ints >= 1, got \(\)"),
        ("base.unet.dropout=1.5", r"bad value in base.unet: UNetConfig.dropout must be in \[0, 1\), got 1.5"),
        ("base.diffusion.mean_type=w", r"bad value in base.diffusion: .*mean_type: 'w'; choices: 'eps', 'x0', 'v'"),
        ("prior.mlp.depth=0", r"bad value in prior.mlp: LatentMLPConfig.depth must be an int >= 1, got 0"),
        ("triplane.decoder.layers=1", r"bad value in triplane.decoder: DecoderConfig.layers must be an int >= 2"),
        ("encoder.kind=vae", r"encoder.kind='vae' is not an encoder; choose one of \('clip', 'learned', 'avatar_clip'\)"),
        ("upsampler.train.precision=fp8", r"upsampler.train.precision='fp8' is not one of"),
        ("prior.train.ema_decay=1.5", r"prior.train.ema_decay: 1.5 is outside the valid range \[0.0, 1.0\]"),
        ("render.views", r"not of the form section.field=value"),
        ("render=3", r"render is a section"),
        ("base.unet=3", r"base.unet is a section; set its fields, e.g. base.unet.FIELD=VALUE"),
        ("base.cfg_drop.x=3", r"base.cfg_drop is a field, not a section"),
        ("render.elevation_min_deg=60", r"elevation_min_deg=60.0 is above"),
    ],
)
def test_bad_overrides_name_key_value_and_choices(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(preset_config("tiny"), [override])


def test_a_non_finite_value_set_in_code_is_refused_and_never_written_as_json():
    cfg = preset_config("tiny")
    cfg.fit.target_psnr = float("nan")
    with pytest.raises(ConfigError, match=r"fit.target_psnr: nan is not a finite number"):
        cfg.validate()
    cfg.fit.target_psnr = 30.0
    cfg.prior.train.lr = float("inf")
    with pytest.raises(ConfigError, match=r"prior.train.lr: inf is not a finite number"):
        cfg.validate()
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        cfg.to_json()


def test_an_unknown_nested_key_names_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'base.unet.widht'; valid keys in 'base.unet': "
                                          r"in_channels, out_channels, model_channels, channel_mult, .*image_size$"):
        load_config("tiny", overrides=["base.unet.widht=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'base.model_channels' \(did you mean "
                                          r"'unet.model_channels'\?\); valid keys in 'base': unet, diffusion, train"):
        load_config("tiny", overrides=["base.model_channels=16"])
    with pytest.raises(ConfigError, match=r"'triplane.decoder_hidden' \(did you mean 'decoder.hidden'\?\)"):
        load_config("tiny", overrides=["triplane.decoder_hidden=16"])


def test_derived_fields_follow_their_source():
    cfg = load_config("tiny", overrides=["triplane.channels=4", "encoder.latent_dim=32", "triplane.rescale_min=16",
                                         "triplane.resolution=32", "upsampler.unet.aware_resolutions=[32]",
                                         "base.unet.aware_resolutions=[16]", "base.unet.attention_resolutions=[8]"])
    assert (cfg.base.unet.in_channels, cfg.base.unet.out_channels, cfg.base.unet.latent_dim) == (4, 4, 32)
    assert (cfg.base.unet.cond_channels, cfg.base.unet.image_size, cfg.base.unet.learn_sigma) == (0, 16, False)
    up = cfg.upsampler.unet
    assert (up.in_channels, up.out_channels, up.latent_dim, up.cond_channels, up.image_size) == (4, 4, 0, 4, 32)
    assert (cfg.prior.mlp.latent_dim, cfg.triplane.decoder.channels) == (32, 4)
    swapped = load_config("tiny", overrides=["base.diffusion.mean_type=eps", "base.diffusion.var_type=learned_range",
                                             "base.diffusion.loss=hybrid", "prior.diffusion.var_type=learned_range",
                                             "prior.diffusion.loss=hybrid"])
    assert swapped.base.unet.learn_sigma is True and swapped.prior.mlp.learn_sigma is True


def test_a_network_its_derived_fields_make_invalid_names_their_sources():
    with pytest.raises(ConfigError, match=r"^bad value in base.unet: .*the levels of image_size=16 are \(16, 8\) "
                                          r"\(derived in base.unet: .*image_size from triplane.rescale_min, "):
        load_config("tiny", overrides=["triplane.rescale_min=16"])


def test_a_derived_field_may_be_set_to_its_value_in_any_order():
    for overrides in (["triplane.channels=4", "base.unet.in_channels=4"],
                      ["base.unet.in_channels=4", "triplane.channels=4"]):
        assert load_config("tiny", overrides=overrides).base.unet.in_channels == 4
    assert load_config("tiny", overrides=["upsampler.unet.learn_sigma=false"]).upsampler.unet.learn_sigma is False


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("base.unet.in_channels=4", (r"^base.unet.in_channels=4 conflicts with triplane.channels=8: "
                                     r"base.unet.in_channels is derived from triplane.channels \(.*\); "
                                     r"leave base.unet.in_channels out and set triplane.channels instead$")),
        ("upsampler.unet.image_size=32", r"upsampler.unet.image_size=32 conflicts with triplane.resolution=64"),
        ("prior.mlp.latent_dim=16", r"prior.mlp.latent_dim=16 conflicts with encoder.latent_dim=512"),
        ("triplane.decoder.channels=4", r"triplane.decoder.channels=4 conflicts with triplane.channels=8"),
        ("base.unet.learn_sigma=true", (r"base.unet.learn_sigma=True conflicts with "
                                        r"base.diffusion.var_type='fixed_small'.*set base.diffusion.var_type")),
        ("upsampler.unet.latent_dim=512", (r"upsampler.unet.latent_dim=512 is fixed by its stage \(.*: always 0\); "
                                           r"leave upsampler.unet.latent_dim out")),
    ],
)
def test_a_derived_field_set_against_its_source_names_both_keys(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides=[override])


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("render:\n  views: 20\n  samples: 4\ncorpus:\n  seed: 7\n"
                    "base:\n  unet:\n    model_channels: 16\n  diffusion:\n    sampling_steps: ddim5\n")
    cfg = load_config("tiny", path, ["render.samples=6"])
    assert (cfg.render.views, cfg.render.samples, cfg.corpus.seed) == (20, 6, 7)
    assert (cfg.base.unet.model_channels, cfg.base.diffusion.sampling_steps) == (16, "ddim5")
    assert cfg.render.resolution == preset_config("tiny").render.resolution  # untouched keys keep the preset


def test_yaml_file_may_switch_preset(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("preset: paper\nrender:\n  views: 10\n")
    cfg = load_config("tiny", path)
    assert cfg.preset == "paper" and cfg.render.views == 10 and cfg.render.resolution == 256


def test_a_missing_yaml_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("tiny", tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("render:\n  colour: red\n", "unknown config key 'render.colour'"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("base:\n  unet:\n    image_size: 64\n", "base.unet.image_size=64 conflicts with triplane.rescale_min=32"),
        ("base:\n  unet: 3\n", "base.unet must be a mapping of fields, got 3"),
    ],
)
def test_yaml_errors(tmp_path, text, message):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", path)
