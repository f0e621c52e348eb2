"""Training the attribute classifier: labels, losses, augmentation, learning a separable toy set."""

from __future__ import annotations

import pytest
import torch

from rodin_core.evaluation.attributes import (
    VGG_FEATURES,
    AttributeClassifier,
    AttributeClassifierConfig,
    AttributeClassifierError,
    UnknownAttributeError,
    probabilities,
)
from rodin_core.training.attributes import (
    IGNORE,
    AttributeTrainConfig,
    attribute_losses,
    augment,
    encode_labels,
    frozen_features,
    train_attribute_classifier,
)

VOCABULARY = {"colour": ("red", "green", "blue"), "half": ("top", "bottom")}
SMALL = AttributeClassifierConfig(image_size=16, channels=(8, 16), hidden=16, dropout=0.0)
COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.9]])


def toy_set(count: int, seed: int) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """White images with a coloured block in the top or bottom half: the colour and the half are the labels."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.ones(count, 3, 16, 16)
    labels = []
    for n in range(count):
        colour, half = int(torch.randint(3, (1,), generator=generator)), int(torch.randint(2, (1,), generator=generator))
        rows = slice(1, 7) if half == 0 else slice(9, 15)
        images[n, :, rows, 3:13] = COLOURS[colour][:, None, None]
        labels.append({"colour": VOCABULARY["colour"][colour], "half": VOCABULARY["half"][half]})
    return images, labels


def test_encode_labels_orders_classes_by_vocabulary_and_ignores_none() -> None:
    targets = encode_labels([{"colour": "blue", "half": None}, {"colour": "red", "half": "bottom"}], VOCABULARY)
    assert targets.tolist() == [[2, IGNORE], [0, 1]]


def test_encode_labels_rejects_unknown_classes_and_attributes_in_one_line() -> None:
    with pytest.raises(UnknownAttributeError, match=r"label 1: attribute 'colour' has no class 'pink'"):
        encode_labels([{"colour": "red", "half": "top"}, {"colour": "pink", "half": "top"}], VOCABULARY)
    with pytest.raises(UnknownAttributeError, match=r"label 0 has unknown attributes \['hat'\] and lacks \['half'\]"):
        encode_labels([{"colour": "red", "hat": "cap"}], VOCABULARY)


def test_losses_skip_ignored_targets_and_are_zero_when_nothing_shows() -> None:
    logits = {"colour": torch.tensor([[5.0, 0, 0], [0, 5.0, 0]]), "half": torch.tensor([[0.0, 0.0], [0.0, 0.0]])}
    losses = attribute_losses(logits, torch.tensor([[0, IGNORE], [2, IGNORE]]))
    assert float(losses["half"]) == 0.0
    # Mean over the two shown images: -log softmax of the right class.
    right = torch.log_softmax(logits["colour"], -1)[[0, 1], [0, 2]]
    assert float(losses["colour"]) == pytest.approx(float(-right.mean()))


def test_augment_keeps_shapes_and_content_and_flip_mirrors() -> None:
    images = torch.rand(6, 3, 12, 12)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(augment(images, 0, False, generator), images)
    flipped = augment(images, 0, True, torch.Generator().manual_seed(3))
    assert all(torch.equal(f, i) or torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images, strict=True))
    assert any(torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images, strict=True))
    shifted = augment(images, 2, False, generator)
    assert shifted.shape == images.shape
    assert float(shifted.min()) >= float(images.min()) and float(shifted.max()) <= float(images.max())


def toy_accuracy(model: AttributeClassifier, count: int, seed: int) -> dict[str, float]:
    """Share of ``count`` fresh toy images whose class ``model`` names right, per attribute."""
    fresh, truth = toy_set(count, seed=seed)
    predicted = probabilities(model, fresh)
    return {name: sum(classes[int(i)] == t[name] for i, t in zip(predicted[name].argmax(-1), truth, strict=True))
            / count for name, classes in VOCABULARY.items()}


def test_a_few_epochs_lower_the_loss() -> None:
    images, labels = toy_set(48, seed=0)
    trained = train_attribute_classifier(images, encode_labels(labels, VOCABULARY), VOCABULARY, SMALL,
                                         AttributeTrainConfig(epochs=4, batch_size=16, lr=3e-3))
    assert len(trained.losses) == 4
    assert trained.losses[-1] < 0.8 * trained.losses[0]
    assert not trained.model.training


def test_separable_toy_set_is_learned_to_high_accuracy_on_fresh_images() -> None:
    images, labels = toy_set(96, seed=1)
    trained = train_attribute_classifier(images, encode_labels(labels, VOCABULARY), VOCABULARY, SMALL,
                                         AttributeTrainConfig(epochs=25, batch_size=16, lr=3e-3, shift_px=1))
    accuracy = toy_accuracy(trained.model, 60, seed=2)
    assert min(accuracy.values()) >= 0.95, accuracy


def test_the_frozen_vgg16_backbone_learns_the_toy_set_and_is_not_trained() -> None:
    images, labels = toy_set(64, seed=3)
    cfg = AttributeClassifierConfig(image_size=32, hidden=32, dropout=0.0, backbone="vgg16")
    trained = train_attribute_classifier(images, encode_labels(labels, VOCABULARY), VOCABULARY, cfg,
                                         AttributeTrainConfig(epochs=30, batch_size=16, lr=3e-3))
    vgg = trained.model._vgg[0]
    assert not any(p.requires_grad for p in vgg.parameters())
    accuracy = toy_accuracy(trained.model, 40, seed=4)
    assert min(accuracy.values()) >= 0.9, accuracy


def test_frozen_features_hold_the_images_and_their_mirrors() -> None:
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))  # not mirror-symmetric
    model = AttributeClassifier(VOCABULARY, AttributeClassifierConfig(image_size=32, hidden=8, backbone="vgg16"))
    both = frozen_features(model, model.prepare(images))
    assert both.shape == (2, 3, VGG_FEATURES)
    assert torch.allclose(both[1], model.backbone_features(images.flip(-1)), atol=1e-5)
    assert not torch.allclose(both[0], both[1], atol=1e-3)


def test_targets_that_do_not_match_the_images_or_vocabulary_are_refused() -> None:
    images, labels = toy_set(4, seed=0)
    targets = encode_labels(labels, VOCABULARY)
    with pytest.raises(AttributeClassifierError, match=r"targets must be \(images, attributes\) = \(4, 2\), got \(3, 2\)"):
        train_attribute_classifier(images, targets[:3], VOCABULARY, SMALL, AttributeTrainConfig(epochs=1))
    with pytest.raises(AttributeClassifierError, match=r"outside \[-1, classes\) of \{'colour': 3, 'half': 2\}"):
        train_attribute_classifier(images, targets + 2, VOCABULARY, SMALL, AttributeTrainConfig(epochs=1))
    with pytest.raises(ValueError, match="attributes.train.epochs"):
        train_attribute_classifier(images, targets, VOCABULARY, SMALL, AttributeTrainConfig(epochs=0))
