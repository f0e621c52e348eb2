"""Held-out accuracy per attribute next to the majority-class base rate."""

from __future__ import annotations

import math

import pytest
import torch

from rodin_core.evaluation import attribute_scores
from rodin_core.evaluation.attribute_scores import (
    format_scores,
    majority_classes,
    score_attributes,
)
from rodin_core.evaluation.attributes import (
    AttributeClassifier,
    AttributeClassifierConfig,
    AttributeClassifierError,
)

VOCABULARY = {"colour": ("red", "green", "blue"), "hat": ("cap", "beanie")}


@pytest.fixture
def model() -> AttributeClassifier:
    return AttributeClassifier(VOCABULARY, AttributeClassifierConfig(image_size=16, channels=(4,), hidden=4))


def test_majority_is_the_most_frequent_training_class_ties_to_the_earlier_one(model: AttributeClassifier) -> None:
    labels = {0: {"colour": "blue", "hat": None}, 1: {"colour": "blue", "hat": None}, 2: {"colour": "red", "hat": None}}
    assert majority_classes(model, labels) == {"colour": "blue", "hat": None}
    tie = {0: {"colour": "green", "hat": "beanie"}, 1: {"colour": "red", "hat": "cap"}}
    assert majority_classes(model, tie) == {"colour": "red", "hat": "cap"}


def test_scores_count_each_subject_once_and_skip_unshown_attributes(model: AttributeClassifier,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    verdicts = {10: {"colour": "red", "hat": "cap"}, 11: {"colour": "green", "hat": "cap"},
                12: {"colour": "blue", "hat": "beanie"}, 13: {"colour": "blue", "hat": "cap"}}
    monkeypatch.setattr(attribute_scores, "judge", lambda _, views: verdicts[int(views[0, 0, 0, 0])])
    views = {s: torch.full((2 + s % 2, 3, 16, 16), float(s)) for s in verdicts}  # the value names the subject
    labels = {10: {"colour": "red", "hat": None}, 11: {"colour": "red", "hat": "cap"},
              12: {"colour": "blue", "hat": "cap"}, 13: {"colour": "blue", "hat": None}}
    train = {0: {"colour": "blue", "hat": "beanie"}, 1: {"colour": "blue", "hat": "beanie"}}
    colour, hat = score_attributes(model, views, labels, train)
    assert (colour.attribute, colour.classes, colour.subjects, colour.majority) == ("colour", 3, 4, "blue")
    assert colour.accuracy == pytest.approx(3 / 4) and colour.base_rate == pytest.approx(2 / 4)
    assert (hat.subjects, hat.majority) == (2, "beanie")
    assert hat.accuracy == pytest.approx(1 / 2) and hat.base_rate == 0.0
    table = format_scores([colour, hat])
    assert table.splitlines()[1].split() == ["colour", "3", "4", "0.750", "0.500", "+0.250", "blue"]
    assert table.splitlines()[-1].split() == ["mean", "0.625", "0.250", "+0.375"]


def test_an_attribute_no_held_out_subject_shows_scores_nan_and_saves_as_null(model: AttributeClassifier) -> None:
    views = {0: torch.rand(1, 3, 16, 16)}
    labels = {0: {"colour": "red", "hat": None}}
    hat = score_attributes(model, views, labels, labels)[1]
    assert hat.subjects == 0 and math.isnan(hat.accuracy) and hat.to_dict()["accuracy"] is None


def test_views_without_labels_are_refused(model: AttributeClassifier) -> None:
    with pytest.raises(AttributeClassifierError, match=r"subjects \[7\] have views but no labels"):
        score_attributes(model, {7: torch.rand(1, 3, 16, 16)}, {}, {})
