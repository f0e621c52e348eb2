"""Tri-plane U-Net (paper §3.2, §3.3): shapes, conditioning on z and on the low-res tri-plane,
planes kept apart without the 3D-aware conv, input checks, config round trip."""

import dataclasses
import json
from typing import Any

import pytest
import torch
from torch import nn

from rodin_core.networks.unet import TriplaneUNet, UNetConfig

SWAP = [0, 2, 1]  # exchange planes XZ and YZ


TINY = UNetConfig(in_channels=4, out_channels=4, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(4,), aware_resolutions=(8,), num_head_channels=8, dropout=0.0,
                  latent_dim=8, image_size=8)


def tiny(**overrides: Any) -> UNetConfig:
    return dataclasses.replace(TINY, **overrides)


def perturb_zero_layers(model: TriplaneUNet) -> TriplaneUNet:
    """Random values for the zero-initialised layers (output conv, last conv of each residual block,
    attention projections; GroupNorm biases too), which otherwise make the output 0 and the blocks
    blind to the embedding."""
    torch.manual_seed(4)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.eq(0).all():
                parameter.normal_(0.0, 0.1)
    return model


def perturb_all(model: nn.Module) -> nn.Module:
    torch.manual_seed(5)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


def rolled(batch: int, channels: int, size: int) -> torch.Tensor:
    return torch.randn(batch, channels, size, 3 * size)


T = torch.tensor([3, 700])


def test_base_model_shapes_and_learn_sigma_doubling() -> None:
    x = rolled(2, 4, 8)
    assert TriplaneUNet(tiny())(x, T, torch.randn(2, 8)).shape == (2, 8, 8, 24)
    assert TriplaneUNet(tiny(learn_sigma=False))(x, T.float()).shape == (2, 4, 8, 24)


def test_fresh_model_predicts_zero() -> None:
    assert TriplaneUNet(tiny())(rolled(2, 4, 8), T).abs().max() == 0


def test_upsampler_is_conditioned_on_the_low_res_triplane() -> None:
    model = perturb_zero_layers(TriplaneUNet(tiny(cond_channels=3, learn_sigma=False, latent_dim=0, image_size=16,
                                                   attention_resolutions=(8,), aware_resolutions=(16, 8))))
    x, low = rolled(2, 4, 16), rolled(2, 3, 8)
    out = model(x, T, low_res=low)
    assert out.shape == (2, 4, 16, 48)
    assert not torch.allclose(out, model(x, T, low_res=low + 1))


def test_latent_conditions_the_output_and_none_means_zero() -> None:
    model = perturb_zero_layers(TriplaneUNet(tiny()))
    x, z = rolled(2, 4, 8), torch.randn(2, 8)
    out = model(x, T, z)
    assert not torch.allclose(out, model(x, T, torch.zeros(2, 8)))
    assert torch.equal(model(x, T), model(x, T, torch.zeros(2, 8)))
    assert not torch.allclose(out, model(x, torch.tensor([300, 10]), z))


@pytest.mark.parametrize("attention", [(), (8, 4)], ids=["no-attention", "attention"])
def test_without_aware_conv_no_feature_crosses_a_seam(attention: tuple[int, ...]) -> None:
    """With aware_resolutions empty, planes meet only through GroupNorm statistics and attention,
    both symmetric in the planes: the whole U-Net commutes with exchanging two planes, which no
    convolution reading across the XY|XZ or XZ|YZ seams of the roll-out would allow."""
    model = perturb_all(TriplaneUNet(tiny(aware_resolutions=(), attention_resolutions=attention)))
    x, z = rolled(2, 4, 8), torch.randn(2, 8)
    planes = x.unflatten(-1, (3, 8))  # (B, C, H, 3, W)
    swapped = planes[..., SWAP, :].flatten(-2)  # (B, C, H, 3W)
    out = model(x, T, z).unflatten(-1, (3, 8))  # (B, C_out, H, 3, W)
    torch.testing.assert_close(model(swapped, T, z), out[..., SWAP, :].flatten(-2), atol=1e-4, rtol=1e-4)


def test_aware_conv_breaks_the_plane_symmetry() -> None:
    model = perturb_all(TriplaneUNet(tiny(attention_resolutions=())))
    x = rolled(1, 4, 8)
    swapped = x.unflatten(-1, (3, 8))[..., SWAP, :].flatten(-2)  # (B, C, H, 3W)
    out = model(x, T[:1]).unflatten(-1, (3, 8))[..., SWAP, :].flatten(-2)  # (B, C_out, H, 3W)
    assert not torch.allclose(model(swapped, T[:1]), out, atol=1e-3)


@pytest.mark.parametrize(
    ("cfg", "kwargs", "message"),
    [
        ({}, {"x": rolled(2, 4, 8)[..., :23]}, r"x must be a rolled tri-plane \(B, 4, 8, 24\), got \(2, 4, 8, 23\)"),
        ({}, {"x": rolled(2, 5, 8)}, r"\(B, 4, 8, 24\), got \(2, 5, 8, 24\)"),
        ({}, {"t": torch.zeros(2, 1)}, r"t must be timesteps of shape \(2,\), got \(2, 1\)"),
        ({}, {"z": torch.zeros(2, 9)}, r"z must be \(2, 8\), got \(2, 9\)"),
        ({"latent_dim": 0}, {"z": torch.zeros(2, 8)}, "latent_dim=0 and takes no z"),
        ({}, {"low_res": rolled(2, 3, 4)}, "cond_channels=0 and takes no low_res"),
        ({"cond_channels": 3}, {}, "pass low_res"),
        ({"cond_channels": 3}, {"low_res": rolled(2, 2, 4)}, r"\(2, 3, h, 3h\), got \(2, 2, 4, 12\)"),
    ],
)
def test_wrong_inputs_raise_naming_the_shapes(cfg: dict, kwargs: dict, message: str) -> None:
    model = TriplaneUNet(tiny(**cfg))
    inputs = {"x": rolled(2, 4, 8), "t": T, **kwargs}
    with pytest.raises(ValueError, match=message):
        model(**inputs)


def test_config_round_trips_through_dict_and_json() -> None:
    cfg = tiny(cond_channels=2)
    assert UNetConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    assert UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    paper = UNetConfig()
    assert (paper.model_channels, paper.attention_resolutions, paper.latent_dim) == (192, (8, 16, 32), 512)
    with pytest.raises(ValueError, match=r"unknown UNetConfig keys \['width'\]"):
        UNetConfig.from_dict({**cfg.to_dict(), "width": 3})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model_channels": 0}, "model_channels must be an int >= 1, got 0"),
        ({"latent_dim": -1}, "latent_dim must be an int >= 0, got -1"),
        ({"channel_mult": ()}, r"channel_mult must be a non-empty tuple of ints >= 1, got \(\)"),
        ({"image_size": 6, "channel_mult": (1, 2, 2)}, "image_size=6 must be divisible by 2\\^2"),
        ({"attention_resolutions": (4, 5)}, r"attention_resolutions=\(4, 5\) names plane sizes \[5\]"),
        ({"aware_resolutions": (16,)}, r"levels of image_size=8 are \(8, 4\)"),
        ({"num_head_channels": 12}, "num_head_channels=12 must divide the width 32"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"learn_sigma": "yes"}, "learn_sigma must be a bool, got 'yes'"),
    ],
)
def test_invalid_configs_name_field_and_value(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)
