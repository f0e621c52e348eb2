"""Classifier-free guidance, paper §3.2 Eq. 3: ε̂ = λ ε(y, z) + (1 - λ) ε(y, 0)."""

import pytest
import torch

from rodin_core.diffusion.guidance import classifier_free_guidance


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
