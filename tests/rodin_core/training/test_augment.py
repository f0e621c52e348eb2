"""Base-resolution planes, the upsampler's condition augmentation (paper §3.3) and the base model's noisy z."""

import pytest
import torch

from rodin_core.encoders import scale_to_sphere
from rodin_core.training.augment import degrade_condition, gaussian_blur, noisy_latents
from rodin_core.triplane.rescale import downsample_planes


def planes() -> torch.Tensor:
    return torch.randn(4, 3, 2, 8, 8, generator=torch.Generator().manual_seed(0))  # (B, 3, C, h, w)


def test_base_planes_downsample_and_keep_constants() -> None:
    assert downsample_planes(planes(), 4).shape == (4, 3, 2, 4, 4)
    constant = torch.full((1, 3, 2, 8, 8), 3.0)
    torch.testing.assert_close(downsample_planes(constant, 4), torch.full((1, 3, 2, 4, 4), 3.0))
    with pytest.raises(ValueError, match="rescale_min"):
        downsample_planes(planes(), 16)


def test_same_seed_same_degradation() -> None:
    x = planes()
    a = degrade_condition(x, torch.Generator().manual_seed(5), 1.0, 0.1)
    b = degrade_condition(x, torch.Generator().manual_seed(5), 1.0, 0.1)
    c = degrade_condition(x, torch.Generator().manual_seed(6), 1.0, 0.1)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("op", ["downscale", "blur", "noise"])
def test_each_operation_changes_every_sample(op: str) -> None:
    x = planes()
    y = degrade_condition(x, torch.Generator().manual_seed(1), 1.0, 0.1, prob=1.0, ops=(op,))
    assert all(not torch.equal(y[b], x[b]) for b in range(len(x)))


def test_probability_zero_is_the_identity_and_the_mix_is_per_sample() -> None:
    x = planes()
    assert torch.equal(degrade_condition(x, torch.Generator().manual_seed(1), 1.0, 0.1, prob=0.0), x)
    z = torch.randn(32, 3, 1, 8, 8)  # (B, 3, C, h, w)
    y = degrade_condition(z, torch.Generator().manual_seed(2), 1.0, 0.1, prob=0.5, ops=("noise",))
    changed = sum(not torch.equal(y[b], z[b]) for b in range(32))
    assert 0 < changed < 32


def test_blur_preserves_constants_and_smooths_an_impulse() -> None:
    impulse = torch.zeros(1, 3, 1, 9, 9)
    impulse[..., 4, 4] = 1.0
    blurred = gaussian_blur(impulse, 1.0)
    assert blurred.sum().item() == pytest.approx(3.0, abs=1e-5)
    assert 0 < blurred[0, 0, 0, 4, 4].item() < 1
    torch.testing.assert_close(gaussian_blur(torch.full((1, 3, 1, 5, 5), 2.0), 0.8), torch.full((1, 3, 1, 5, 5), 2.0))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown degradations"):
        degrade_condition(planes(), torch.Generator(), 1.0, 0.1, ops=("jpeg",))
    with pytest.raises(ValueError, match="aug_noise_std"):
        degrade_condition(planes(), torch.Generator(), 1.0, -0.1)


def sphere_latents(batch: int = 64, dim: int = 128) -> torch.Tensor:
    return scale_to_sphere(torch.randn(batch, dim, generator=torch.Generator().manual_seed(3)))  # (B, D)


def test_noisy_latents_stay_on_the_sphere_and_move_further_with_more_noise() -> None:
    z = sphere_latents()
    mean_cosine = []
    for max_std in (0.1, 0.5, 2.0):
        noisy = noisy_latents(z, max_std, torch.Generator().manual_seed(0))
        torch.testing.assert_close(noisy.norm(dim=1), torch.full((64,), 128 ** 0.5))
        mean_cosine.append(torch.nn.functional.cosine_similarity(noisy, z, dim=1).mean().item())
    # std s ~ U(0, m): cosine 1 / sqrt(1 + s^2), so about 0.998, 0.96 and 0.62 on average
    assert mean_cosine[0] > 0.99 and 0.93 < mean_cosine[1] < 0.98 and 0.5 < mean_cosine[2] < 0.75


def test_noisy_latents_keep_dropped_rows_zero_and_follow_the_seed() -> None:
    z = sphere_latents(8)
    z[[1, 5]] = 0.0  # the unconditional samples of classifier-free guidance
    a = noisy_latents(z, 1.0, torch.Generator().manual_seed(7))
    b = noisy_latents(z, 1.0, torch.Generator().manual_seed(7))
    c = noisy_latents(z, 1.0, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[[1, 5]], torch.zeros(2, 128))
    assert all(not torch.equal(a[i], z[i]) for i in (0, 2, 3, 4, 6, 7))
    assert noisy_latents(z, 0.0, torch.Generator()) is z


def test_noisy_latents_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="base.latent_noise"):
        noisy_latents(sphere_latents(2), -0.5, torch.Generator())
    with pytest.raises(ValueError, match="base.latent_noise"):
        noisy_latents(sphere_latents(2), float("nan"), torch.Generator())
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        noisy_latents(torch.ones(2, 3, 4), 0.5, torch.Generator())
