"""Latent diffusion MLP (paper appendix B.4): shapes, timestep dependence, config round trip."""

import dataclasses

import pytest
import torch

from rodin_core.networks.latent_mlp import (
    LatentMLP,
    LatentMLPConfig,
    TextLatentMLPConfig,
)

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


TEXT_CFG = TextLatentMLPConfig(latent_dim=6, width=16, depth=3, time_embed_dim=8, text_dim=5)


def text_model() -> LatentMLP:
    """A text-conditioned denoiser whose zero-initialised output layer is given random weights."""
    torch.manual_seed(3)
    model = LatentMLP(TEXT_CFG)
    with torch.no_grad():
        model.out_proj.weight.normal_()
    return model


def test_text_conditioning_changes_the_output_and_zeros_are_the_unconditional_prediction() -> None:
    model = text_model()
    z_t, t = torch.randn(3, 6), torch.tensor([1, 200, 900])
    text = torch.nn.functional.normalize(torch.randn(3, 5), dim=-1)
    out = model(z_t, t, text)
    assert out.shape == (3, 6)
    assert not torch.allclose(out, model(z_t, t, text.flip(0)), atol=1e-4)  # another text, another prediction
    unconditional = model(z_t, t)
    assert torch.equal(model(z_t, t, torch.zeros(3, 5)), unconditional)  # a dropped text is the null text
    mixed = model(z_t, t, torch.cat([text[:1], torch.zeros(2, 5)]))
    assert torch.allclose(mixed[0], out[0], atol=1e-6) and torch.allclose(mixed[1:], unconditional[1:], atol=1e-6)


def test_text_input_is_checked() -> None:
    with pytest.raises(ValueError, match=r"text must be embeddings \(2, 5\), got \(2, 4\)"):
        text_model()(torch.zeros(2, 6), torch.zeros(2), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="no text input"):
        LatentMLP(CFG)(torch.zeros(2, 6), torch.zeros(2), torch.zeros(2, 5))


def test_the_unconditional_denoiser_keeps_its_parameters() -> None:
    """The latent prior's checkpoints hold no text projection; the text prior's do."""
    assert not any(name.startswith("text_proj") for name in LatentMLP(CFG).state_dict())
    assert {"text_proj.weight", "text_proj.bias"} <= set(text_model().state_dict())
    assert text_model().state_dict()["text_proj.weight"].shape == (8, 5)


def test_text_config_round_trip_and_validation() -> None:
    assert TextLatentMLPConfig.from_dict(dataclasses.asdict(TEXT_CFG)) == TEXT_CFG
    with pytest.raises(ValueError, match="text_dim must be an int >= 1, got 0"):
        TextLatentMLPConfig(text_dim=0)
