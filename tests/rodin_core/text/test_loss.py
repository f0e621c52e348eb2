"""The symmetric contrastive loss: its value on a known batch, and aligned pairs beat shuffled ones."""

import math

import pytest
import torch
import torch.nn.functional as F

from rodin_core.text.loss import contrastive_loss


def test_known_value_on_orthonormal_pairs():
    image = torch.eye(2)
    # logits [[s, 0], [0, s]]: each row's cross-entropy is log(1 + exp(-s)), in both directions.
    for scale in (1.0, 3.0):
        expected = math.log(1.0 + math.exp(-scale))
        assert float(contrastive_loss(image, image.clone(), scale)) == pytest.approx(expected, rel=1e-5)


def test_known_value_is_symmetric_in_its_two_directions():
    image = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]), dim=-1)
    text = F.normalize(torch.tensor([[1.0, 0.2], [0.0, 1.0], [-1.0, 1.0]]), dim=-1)
    logits = 2.0 * image @ text.T
    by_hand = 0.5 * (-torch.log_softmax(logits, 1).diagonal().mean() - torch.log_softmax(logits, 0).diagonal().mean())
    assert float(contrastive_loss(image, text, 2.0)) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(contrastive_loss(text, image, 2.0)) == pytest.approx(float(by_hand), rel=1e-6)


def test_aligned_pairs_have_lower_loss_than_shuffled_ones():
    generator = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(16, 32, generator=generator), dim=-1)
    text = F.normalize(image + 0.1 * torch.randn(16, 32, generator=generator), dim=-1)
    shuffled = text[torch.roll(torch.arange(16), 1)]
    aligned, wrong = contrastive_loss(image, text, 14.3), contrastive_loss(image, shuffled, 14.3)
    assert float(aligned) < 0.05 < math.log(16) < float(wrong)


def test_mismatched_or_single_pairs_are_refused():
    with pytest.raises(ValueError, match=r"\(B, D\) with B >= 2"):
        contrastive_loss(torch.zeros(3, 4), torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="B >= 2"):
        contrastive_loss(torch.ones(1, 4), torch.ones(1, 4), 1.0)
