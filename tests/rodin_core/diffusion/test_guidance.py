"""Classifier-free guidance, paper §3.2 Eq. 3: ε̂ = λ ε(y, z) + (1 - λ) ε(y, 0); and switching the latent by timestep."""

import pytest
import torch

from rodin_core.diffusion.guidance import classifier_free_guidance, switch_latent


class Recorder:
    """A latent-conditioned toy with learned-variance channels: (x · (1 + Σz) + t, x · Σz - 1); records calls."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x, t, z=None, low_res=None):
        self.batches.append(x.shape[0])
        gain = (z.sum(dim=1) if z is not None else torch.zeros(x.shape[0])).reshape(-1, 1, 1, 1)
        offset = t.to(x.dtype).reshape(-1, 1, 1, 1) + (low_res if low_res is not None else 0)
        return torch.cat([x * (1 + gain) + offset, x * gain - 1], dim=1)  # (B, 2C, H, W)


def _inputs():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 2, 6, generator=generator)
    t = torch.tensor([5, 700])
    z = torch.randn(2, 4, generator=generator)
    return x, t, z


def test_scale_one_is_exactly_the_conditional_model():
    model = Recorder()
    x, t, z = _inputs()
    assert torch.equal(classifier_free_guidance(model, 1.0)(x, t, z=z), model(x, t, z=z))


def test_scale_zero_is_the_unconditional_model():
    model = Recorder()
    x, t, z = _inputs()
    guided = classifier_free_guidance(model, 0.0)(x, t, z=z)
    unconditional = model(x, t, z=torch.zeros_like(z))
    conditional = model(x, t, z=z)
    assert torch.equal(guided[:, :3], unconditional[:, :3])
    assert torch.equal(guided[:, 3:], conditional[:, 3:])  # variance channels from the conditional branch


def test_scale_two_extrapolates_in_one_batched_forward():
    model = Recorder()
    x, t, z = _inputs()
    guided = classifier_free_guidance(model, 2.0)(x, t, z=z)
    assert model.batches == [4]  # both branches in one forward over 2B
    conditional = model(x, t, z=z)
    unconditional = model(x, t, z=torch.zeros_like(z))
    assert torch.allclose(guided[:, :3], 2 * conditional[:, :3] - unconditional[:, :3], atol=1e-6)
    assert torch.equal(guided[:, 3:], conditional[:, 3:])


def test_other_batch_tensors_are_repeated_and_guidance_without_a_latent_is_the_model():
    model = Recorder()
    x, t, z = _inputs()
    low_res = torch.randn(2, 3, 2, 6, generator=torch.Generator().manual_seed(1))
    guided = classifier_free_guidance(model, 3.0)(x, t, z=z, low_res=low_res)
    conditional = model(x, t, z=z, low_res=low_res)
    unconditional = model(x, t, z=torch.zeros_like(z), low_res=low_res)
    assert torch.allclose(guided[:, :3], 3 * conditional[:, :3] - 2 * unconditional[:, :3], atol=1e-5)
    assert torch.equal(classifier_free_guidance(model, 3.0)(x, t), model(x, t))


def test_bad_scale_and_non_batch_kwargs_raise():
    with pytest.raises(ValueError, match="finite number >= 0.*got -1.0"):
        classifier_free_guidance(Recorder(), -1.0)
    x, t, z = _inputs()
    with pytest.raises(ValueError, match=r"model_kwargs\['low_res'\] must be batch-first with 2 rows.*\(3, 3, 2, 6\)"):
        classifier_free_guidance(Recorder(), 2.0)(x, t, z=z, low_res=torch.zeros(3, 3, 2, 6))


def test_switch_latent_gives_the_early_latent_to_the_noisy_steps_only():
    seen = []

    def model(x, t, z=None):
        seen.append(z.clone())
        return x * z.sum(dim=1).reshape(-1, 1, 1, 1)

    x, t, z = _inputs()  # t = [5, 700]
    early = torch.full_like(z, 3.0)
    switch_latent(model, early, from_t=700)(x, t, z=z)
    assert torch.equal(seen[-1][0], z[0]) and torch.equal(seen[-1][1], early[1])  # 5 < 700 <= 700
    switch_latent(model, early, from_t=0)(x, t, z=z)
    assert torch.equal(seen[-1], early)  # every step follows the early latent
    switch_latent(model, early, from_t=701)(x, t, z=z)
    assert torch.equal(seen[-1], z)
    guided = switch_latent(classifier_free_guidance(Recorder(), 2.0), early, from_t=700)
    reference = classifier_free_guidance(Recorder(), 2.0)(x, t, z=torch.stack([z[0], early[1]]))
    assert torch.equal(guided(x, t, z=z), reference)  # the switch comes before guidance doubles the batch
    with pytest.raises(ValueError, match=r"the early latent has shape \(1, 4\), the model's 'z' \(2, 4\)"):
        switch_latent(model, early[:1], from_t=10)(x, t, z=z)
