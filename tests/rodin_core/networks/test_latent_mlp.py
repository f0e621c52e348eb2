"""Latent diffusion MLP (paper appendix B.4): shapes, timestep dependence, config round trip."""

import dataclasses

import pytest
import torch

from rodin_core.networks.latent_mlp import LatentMLP, LatentMLPConfig

CFG = LatentMLPConfig(latent_dim=6, width=16, depth=3, time_embed_dim=8)


def test_fresh_model_predicts_zero_then_depends_on_z_and_t() -> None:
    model = LatentMLP(CFG)
    z_t, t = torch.randn(4, 6), torch.tensor([0, 10, 500, 999])
    assert torch.equal(model(z_t, t), torch.zeros(4, 6))  # zero-initialised output projection
    torch.manual_seed(6)
    with torch.no_grad():
        model.out_proj.weight.normal_()
    out = model(z_t, t)
    assert out.shape == (4, 6)
    assert not torch.allclose(out, model(z_t, t.flip(0)))
    assert not torch.allclose(out, model(z_t + 1, t))
    assert torch.allclose(out[1], model(z_t[1:2], t[1:2])[0], atol=1e-6)  # samples are independent


def test_learn_sigma_doubles_the_output() -> None:
    model = LatentMLP(dataclasses.replace(CFG, learn_sigma=True))
    assert model(torch.randn(2, 6), torch.tensor([1.0, 2.5])).shape == (2, 12)


def test_paper_defaults() -> None:
    cfg = LatentMLPConfig()
    assert (cfg.latent_dim, cfg.width, cfg.depth) == (512, 2048, 20)


def test_wrong_inputs_raise() -> None:
    model = LatentMLP(CFG)
    with pytest.raises(ValueError, match=r"z_t must be \(B, 6\), got \(2, 5\)"):
        model(torch.zeros(2, 5), torch.zeros(2))
    with pytest.raises(ValueError, match=r"t must be timesteps of shape \(2,\), got \(3,\)"):
        model(torch.zeros(2, 6), torch.zeros(3))


def test_config_round_trip_and_validation() -> None:
    assert LatentMLPConfig.from_dict(dataclasses.asdict(CFG)) == CFG
    with pytest.raises(ValueError, match=r"unknown LatentMLPConfig keys \['layers'\]"):
        LatentMLPConfig.from_dict({"layers": 3})
    with pytest.raises(ValueError, match="depth must be an int >= 1, got 0"):
        LatentMLPConfig(depth=0)
    with pytest.raises(ValueError, match="time_embed_dim must be an int >= 2, got 1"):
        LatentMLPConfig(time_embed_dim=1)
