"""Held-out accuracy of the attribute classifier, next to the base rate of each attribute.

A subject counts once per attribute: its near-frontal views are judged together
(:func:`rodin_core.evaluation.attributes.judge`) and the verdict compared with its label;
subjects where the attribute cannot show (label None) are left out. The base rate is the accuracy
of always answering the majority class of the training labels: a classifier is only useful for an
attribute where it beats that.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor

from rodin_core.evaluation.attributes import (
    AttributeClassifier,
    AttributeClassifierError,
    judge,
)


@dataclass(frozen=True)
class AttributeScore:
    """Accuracy of one attribute on the held-out subjects that show it."""

    attribute: str
    classes: int
    subjects: int
    """Held-out subjects that show the attribute."""
    accuracy: float
    majority: str | None
    """The most frequent class among the training labels (None: no training subject shows it)."""
    base_rate: float
    """Accuracy of always answering ``majority``."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (NaN, where no held-out subject shows the attribute, as None)."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


def majority_classes(model: AttributeClassifier,
                     labels: Mapping[int, Mapping[str, str | None]]) -> dict[str, str | None]:
    """The most frequent class of each attribute in ``labels`` (ties: the earlier class of the vocabulary)."""
    majority: dict[str, str | None] = {}
    for name, classes in model.vocabulary.items():
        counts = Counter(label[name] for label in labels.values() if label.get(name) is not None)
        majority[name] = max(classes, key=lambda c: (counts[c], -classes.index(c))) if counts else None
    return majority


def score_attributes(model: AttributeClassifier, views: Mapping[int, Tensor],
                     labels: Mapping[int, Mapping[str, str | None]],
                     train_labels: Mapping[int, Mapping[str, str | None]]) -> list[AttributeScore]:
    """One :class:`AttributeScore` per attribute of ``model``, over the subjects of ``views``.

    ``views``: subject id -> (V, 3, H, W) renders in [0, 1]; ``labels``: its attributes;
    ``train_labels``: the labels the classifier was trained on (for the base rate).
    """
    missing = sorted(set(views) - set(labels))
    if missing:
        raise AttributeClassifierError(f"subjects {missing} have views but no labels; give a label per subject")
    verdicts = {subject: judge(model, images) for subject, images in views.items()}
    majority = majority_classes(model, train_labels)
    scores = []
    for name, classes in model.vocabulary.items():
        shown = [s for s in views if labels[s].get(name) is not None]
        right = sum(verdicts[s][name] == labels[s][name] for s in shown)
        base = sum(labels[s][name] == majority[name] for s in shown)
        scores.append(AttributeScore(name, len(classes), len(shown), right / len(shown) if shown else math.nan,
                                     majority[name], base / len(shown) if shown else math.nan))
    return scores


def format_scores(scores: list[AttributeScore]) -> str:
    """A text table: attribute, classes, subjects, accuracy, base rate, the margin and the majority class."""
    lines = [f"{'attribute':<18}{'classes':>8}{'subjects':>9}{'accuracy':>10}{'base rate':>11}{'margin':>8}  majority"]
    for s in scores:
        lines.append(f"{s.attribute:<18}{s.classes:>8}{s.subjects:>9}{s.accuracy:>10.3f}{s.base_rate:>11.3f}"
                     f"{s.accuracy - s.base_rate:>+8.3f}  {s.majority}")
    shown = [s for s in scores if s.subjects]
    if shown:
        mean_acc = sum(s.accuracy for s in shown) / len(shown)
        mean_base = sum(s.base_rate for s in shown) / len(shown)
        lines.append(f"{'mean':<18}{'':>8}{'':>9}{mean_acc:>10.3f}{mean_base:>11.3f}{mean_acc - mean_base:>+8.3f}")
    return "\n".join(lines)
