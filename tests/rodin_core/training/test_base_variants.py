"""The base-model configurations of Table 2 (paper §4.4) as stages: each learns, and without latent conditioning
the model never sees z."""

from __future__ import annotations

import pytest
import torch

from rodin_core.config import ConfigError
from rodin_core.datasets.errors import TrainDataError
from rodin_core.generation.sampling import sample_base
from rodin_core.training.latents import latent_encoder
from rodin_core.training.registry import build_stage

from ...stage_data import plane_stats, small_config, synthetic_batch

STACKED = ("base.unet.plane_layout=channels", "base.unet.aware_resolutions=[]")
VARIANTS = {
    "A. baseline": ("base.latent_conditioning=false", *STACKED),
    "B. + latent conditioning": STACKED,
    "C. + roll-out": ("base.unet.aware_resolutions=[]",),
    "D. + 3D-aware conv": (),
}
"""Table 2's rows as overrides; the small config has the 3D-aware convolution at its 8^2 base planes."""


def fixed_loss(stage, batch) -> float:
    """Loss of the model on fixed timesteps and noise (no randomness, no update)."""
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        x0 = stage.targets(batch.planes)  # (B, C, h, 3h)
        t = torch.linspace(0, stage.diffusion.num_timesteps - 1, x0.shape[0]).long()
        noise = torch.randn(x0.shape, generator=generator)
        z = stage.encode(batch.frontal, batch.subject_ids) if stage.encoder is not None else None
        stage.model.eval()
        return stage.diffusion.training_losses(stage.model, x0, t, noise=noise, model_kwargs={"z": z})["loss"].mean().item()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_configuration_learns_four_subjects(name: str) -> None:
    cfg = small_config("base.train.lr=2e-3", *VARIANTS[name])
    stage = build_stage("base", cfg, plane_stats(cfg))
    batch = synthetic_batch(cfg, 4)
    before = fixed_loss(stage, batch)
    for step in range(25):
        stage.train_step(batch, step)
    after = fixed_loss(stage, batch)
    assert after < 0.7 * before, f"{name}: fixed-batch loss went from {before:.4f} to {after:.4f}"


def test_the_configurations_build_the_networks_they_name() -> None:
    cfgs = {name: small_config(*overrides) for name, overrides in VARIANTS.items()}
    assert [(c.base.unet.plane_layout, c.base.unet.latent_dim > 0, bool(c.base.unet.aware_resolutions))
            for c in cfgs.values()] == [("channels", False, False), ("channels", True, False),
                                        ("rollout", True, False), ("rollout", True, True)]
    stage = build_stage("base", cfgs["A. baseline"], plane_stats(cfgs["A. baseline"]))
    assert stage.encoder is None
    assert set(stage.modules) == {"model", "ema"}  # no encoder is trained or checkpointed


def test_without_latent_conditioning_training_does_not_depend_on_the_frontal_view() -> None:
    """Two runs that differ only in the frontal views end with the same weights; with latent conditioning they
    do not (the frontal view is what z is made of)."""

    def weights_after(overrides: tuple[str, ...], frontal_seed: int) -> tuple[list[float], torch.Tensor]:
        cfg = small_config("base.cfg_drop=0.0", *overrides)
        stage = build_stage("base", cfg, plane_stats(cfg))
        batch = synthetic_batch(cfg, 4)
        batch.frontal = torch.rand(batch.frontal.shape, generator=torch.Generator().manual_seed(frontal_seed))
        losses = [stage.train_step(batch, step)["loss"] for step in range(3)]
        return losses, torch.cat([p.detach().flatten() for p in stage.model.parameters()])

    unconditional = [weights_after(VARIANTS["A. baseline"], seed) for seed in (1, 2)]
    assert unconditional[0][0] == unconditional[1][0]
    assert torch.equal(unconditional[0][1], unconditional[1][1])
    conditional = [weights_after(VARIANTS["B. + latent conditioning"], seed) for seed in (1, 2)]
    assert not torch.equal(conditional[0][1], conditional[1][1])


def test_an_unconditional_base_model_samples_without_z_and_refuses_one() -> None:
    cfg = small_config(*VARIANTS["A. baseline"])
    stats = plane_stats(cfg)
    stage = build_stage("base", cfg, stats)
    model = stage.modules["ema"]
    planes = sample_base(model, cfg, stats, n=2, generator=torch.Generator().manual_seed(0))
    assert planes.shape == (2, 3, cfg.triplane.channels, cfg.triplane.rescale_min, cfg.triplane.rescale_min)
    with pytest.raises(ValueError, match=r"z must be \(n, 0\)"):
        sample_base(model, cfg, stats, torch.zeros(2, cfg.encoder.latent_dim))
    with pytest.raises(ValueError, match=r"^this base model has no latent conditioning \(base.latent_conditioning="
                                         r"false\), so it encodes no frontal views; set base.latent_conditioning=true "
                                         r"to condition it on z$"):
        stage.encode(torch.zeros(1, 4, 32, 32))


def test_an_unconditional_base_has_no_latents_for_the_prior(tmp_path) -> None:
    cfg = small_config(*VARIANTS["A. baseline"])
    with pytest.raises(TrainDataError) as info:
        latent_encoder(cfg, str(tmp_path))
    assert str(info.value) == ("base.latent_conditioning is false: the base model is unconditional and reads no z, so "
                               "there is no latent prior to train; set base.latent_conditioning=true, or skip the prior")


@pytest.mark.parametrize(("overrides", "message"), [
    (("base.unet.plane_layout=channels",),
     "bad value in base.unet: UNetConfig.aware_resolutions=(8,) needs plane_layout='rollout'"),
    (("base.unet.plane_layout=stacked",), "bad value in base.unet: UNetConfig.plane_layout must be one of"),
    (("base.latent_conditioning=maybe",), "bad value for base.latent_conditioning: 'maybe'"),
    (("base.unet.latent_dim=0",), ("base.unet.latent_dim=0 conflicts with encoder.latent_dim=32 and "
                                  "base.latent_conditioning=True")),
])
def test_bad_variant_settings_are_one_line_errors(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        small_config(*overrides)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)
