"""Stratified intervals and inverse-CDF importance sampling (NeRF §5.2)."""

import pytest
import torch

from rodin_core.rendering.sampling import importance_samples, stratified_samples


def test_stratified_without_jitter_is_uniform():
    t = stratified_samples(torch.tensor([1.0, 0.0]), torch.tensor([3.0, 0.5]), 4, perturb=False)
    assert torch.allclose(t[0], torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0]))
    assert torch.allclose(t[1], torch.tensor([0.0, 0.125, 0.25, 0.375, 0.5]))


def test_stratified_jitter_stays_sorted_and_covers_the_ray():
    near, far = torch.zeros(50), torch.full((50,), 2.0)
    t = stratified_samples(near, far, 8, generator=torch.Generator().manual_seed(0))
    assert t.shape == (50, 9)
    assert (t[:, 1:] >= t[:, :-1]).all()
    assert torch.equal(t[:, 0], near) and torch.equal(t[:, -1], far)
    centres = torch.linspace(0, 2, 9)[1:-1]
    assert ((t[:, 1:-1] - centres).abs() <= 0.125 + 1e-6).all()  # within half a bin
    again = stratified_samples(near, far, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


@pytest.mark.parametrize("perturb", [False, True])
def test_importance_samples_fall_in_the_weighted_bin(perturb):
    edges = torch.linspace(0.0, 4.0, 5).expand(3, 5)  # (3, 5): bins [0,1], [1,2], [2,3], [3,4]
    weights = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.9, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.3]])
    out = importance_samples(edges, weights, 16, generator=torch.Generator().manual_seed(1), perturb=perturb)
    assert out.shape == (3, 5 + 16)
    assert (out[:, 1:] >= out[:, :-1]).all()
    for ray, (lo, hi) in enumerate([(2.0, 3.0), (0.0, 1.0), (3.0, 4.0)]):
        new = out[ray][~torch.isin(out[ray], edges[ray])]
        assert len(new) >= 14
        assert ((new >= lo) & (new <= hi)).all(), f"ray {ray} sampled outside [{lo}, {hi}]: {new.tolist()}"


def test_importance_samples_follow_the_weights():
    edges = torch.linspace(0.0, 1.0, 3).expand(1, 3)
    out = importance_samples(edges, torch.tensor([[0.25, 0.75]]), 400, perturb=False)
    new = out[0][~torch.isin(out[0], edges[0])]
    assert (new < 0.5).float().mean().item() == pytest.approx(0.25, abs=0.01)


def test_empty_rays_sample_uniformly_and_carry_no_gradient():
    edges = torch.linspace(0.0, 1.0, 5).expand(2, 5).clone().requires_grad_()
    weights = torch.zeros(2, 4, requires_grad=True)
    out = importance_samples(edges, weights, 8, perturb=False)
    assert not out.requires_grad
    assert torch.allclose(out[0], out[1])
    new = out[0][~torch.isin(out[0], edges[0].detach())]
    assert torch.allclose(new, torch.arange(8) / 8 + 1 / 16, atol=1e-4)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="weights"):
        importance_samples(torch.zeros(2, 5), torch.zeros(2, 5), 3)
    with pytest.raises(ValueError, match="n=0"):
        stratified_samples(torch.zeros(2), torch.ones(2), 0)
