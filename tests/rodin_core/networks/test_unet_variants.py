"""The U-Nets of Table 2 (paper §3.2, §4.4): channel-stacked baseline, latent conditioning, roll-out, 3D-aware
convolution; their shapes, parameter counts, and where planes meet."""

import dataclasses
from typing import Any

import pytest
import torch

from rodin_core.networks.blocks import ResBlock
from rodin_core.networks.summary import count_parameters
from rodin_core.networks.unet import TriplaneUNet, UNetConfig

D = UNetConfig(in_channels=4, out_channels=4, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
               attention_resolutions=(4,), aware_resolutions=(8,), num_head_channels=8, dropout=0.0,
               latent_dim=8, image_size=8)
"""D: roll-out, latent conditioning, 3D-aware convolution at 8 (the paper's model)."""
C = dataclasses.replace(D, aware_resolutions=())
B = dataclasses.replace(C, plane_layout="channels")
A = dataclasses.replace(B, latent_dim=0)
VARIANTS = {"A": A, "B": B, "C": C, "D": D}


def build(cfg: UNetConfig) -> TriplaneUNet:
    torch.manual_seed(0)
    return TriplaneUNet(cfg)


def randomised(cfg: UNetConfig, **overrides: Any) -> TriplaneUNet:
    model = build(dataclasses.replace(cfg, **overrides))
    torch.manual_seed(5)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model.eval()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_maps_a_rolled_tri_plane_to_a_rolled_prediction(name: str) -> None:
    cfg = VARIANTS[name]
    model = randomised(cfg)
    x, t = torch.randn(2, 4, 8, 24), torch.tensor([3, 700])
    z = torch.randn(2, 8) if cfg.latent_dim else None
    out = model(x, t, z)
    assert out.shape == (2, 8, 8, 24)  # learn_sigma doubles the 4 channels
    assert torch.isfinite(out).all()


def test_parameter_counts_differ_by_exactly_what_each_component_adds() -> None:
    params = {name: count_parameters(build(cfg)) for name, cfg in VARIANTS.items()}
    emb = 4 * D.model_channels
    assert params["B"] - params["A"] == D.latent_dim * emb + emb  # the projection of z into the embedding
    width, out = D.model_channels * D.channel_mult[0], 2 * D.out_channels
    stacked_convs = 2 * D.in_channels * width * 9 + 2 * width * out * 9 + 2 * out  # 3C in, 3C_out out
    assert params["B"] - params["C"] == stacked_convs
    rolled, aware = build(C), build(D)
    aware_blocks = [name for name, module in aware.named_modules() if isinstance(module, ResBlock) and module.aware]
    assert aware_blocks
    plain = dict(rolled.named_modules())
    plain_weights = sum(plain[name].conv1.weight.numel() + plain[name].conv2.weight.numel() for name in aware_blocks)
    assert params["D"] - params["C"] == 2 * plain_weights  # each 3D-aware conv reads 3C channels instead of C


SWAP = [0, 2, 1]  # exchange planes XZ and YZ


@pytest.mark.parametrize(("name", "symmetric"), [("A", False), ("B", False), ("C", True), ("D", False)])
def test_only_the_rolled_out_plain_network_treats_the_planes_alike(name: str, symmetric: bool) -> None:
    """Rolled out without the 3D-aware conv, planes share every weight, so swapping two input planes swaps the
    output planes; channel stacking gives each plane its own weights, the 3D-aware conv its own axes."""
    cfg = VARIANTS[name]
    model = randomised(cfg)
    x, t = torch.randn(1, 4, 8, 24), torch.tensor([10])
    z = torch.randn(1, 8) if cfg.latent_dim else None
    swapped = x.unflatten(-1, (3, 8))[..., SWAP, :].flatten(-2)  # (B, C, H, 3W)
    with torch.no_grad():
        expected = model(x, t, z).unflatten(-1, (3, 8))[..., SWAP, :].flatten(-2)
        gap = (model(swapped, t, z) - expected).abs().max()
    assert (gap < 1e-4) == symmetric, f"swap gap {gap:.2e}"


def test_stacked_layout_refuses_the_aware_convolution_and_unknown_layouts_in_one_line() -> None:
    with pytest.raises(ValueError) as info:
        dataclasses.replace(D, plane_layout="channels")
    assert str(info.value) == ("UNetConfig.aware_resolutions=(8,) needs plane_layout='rollout': the 3D-aware "
                               "convolution works on three separate planes; set aware_resolutions to [] for "
                               "plane_layout='channels'")
    with pytest.raises(ValueError, match=r"^UNetConfig.plane_layout must be one of \('rollout', 'channels'\), "
                                         r"got 'stacked'$"):
        dataclasses.replace(C, plane_layout="stacked")


def test_plane_layout_round_trips_through_the_saved_config() -> None:
    assert UNetConfig.from_dict(B.to_dict()) == B
    saved_before = {key: value for key, value in D.to_dict().items() if key != "plane_layout"}
    assert UNetConfig.from_dict(saved_before).plane_layout == "rollout"  # configs saved without the field
