"""Training the attribute classifier (:mod:`rodin_core.evaluation.attributes`) on labelled renders.

Every image is a near-frontal view of a corpus subject labelled with its recipe's attributes; an
attribute that cannot show is labelled None (:data:`IGNORE` in the targets) and adds no loss. The
loss is the sum over attributes of the cross-entropy of each head; images are flipped left-right
and shifted by a few pixels at random (no attribute depends on either), never recoloured (colours
are attributes). AdamW with a cosine learning-rate decay, on one process.

With the frozen ``vgg16`` backbone the features of every image and of its mirror image are computed
once (:data:`FEATURE_BATCH` images at a time) and each epoch reads the mirrored features of a random
half; shifts are left out (the quadrant-averaged features barely move with a few pixels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rodin_core.config_dict import DictConfig, check_range
from rodin_core.evaluation.attributes import (
    AttributeClassifier,
    AttributeClassifierConfig,
    AttributeClassifierError,
    UnknownAttributeError,
    Vocabulary,
    check_rgb,
    check_vocabulary,
)

IGNORE = -1
"""Target of an attribute that does not show in an image."""
FEATURE_BATCH = 64
"""Images per forward pass of a frozen backbone."""


@dataclass
class AttributeTrainConfig(DictConfig):
    """Optimisation of the attribute classifier."""

    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    shift_px: int = 4
    """Largest random shift of an image, in pixels at the classifier's input size."""
    flip: bool = True
    """Flip images left-right at random."""
    seed: int = 0

    def validate(self) -> AttributeTrainConfig:
        check_range("attributes.train.epochs", self.epochs, low=1)
        check_range("attributes.train.batch_size", self.batch_size, low=1)
        check_range("attributes.train.lr", self.lr, low=0.0)
        check_range("attributes.train.weight_decay", self.weight_decay, low=0.0)
        check_range("attributes.train.shift_px", self.shift_px, low=0)
        check_range("attributes.train.seed", self.seed, low=0)
        return self


def encode_labels(labels: Sequence[Mapping[str, str | None]], vocabulary: Mapping[str, Sequence[str]]) -> Tensor:
    """Class indices (N, attributes) of ``labels``, in the vocabulary's order; None -> :data:`IGNORE`.

    Raises :class:`UnknownAttributeError` for a label outside the vocabulary or a missing attribute.
    """
    vocabulary = check_vocabulary(vocabulary)
    rows = []
    for n, label in enumerate(labels):
        unknown = sorted(set(label) - set(vocabulary))
        missing = [name for name in vocabulary if name not in label]
        if unknown or missing:
            raise UnknownAttributeError(f"label {n} has unknown attributes {unknown} and lacks {missing}; the "
                                        f"vocabulary holds {', '.join(vocabulary)}")
        row = []
        for name, classes in vocabulary.items():
            value = label[name]
            if value is not None and value not in classes:
                raise UnknownAttributeError(f"label {n}: attribute {name!r} has no class {value!r}; it has "
                                            f"{list(classes)}")
            row.append(IGNORE if value is None else classes.index(value))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), len(vocabulary))


def attribute_losses(logits: Mapping[str, Tensor], targets: Tensor) -> dict[str, Tensor]:
    """Mean cross-entropy of each head over the images that show its attribute (0 where none does)."""
    losses = {}
    for a, (name, values) in enumerate(logits.items()):
        target = targets[:, a]
        shown = (target != IGNORE).sum().clamp(min=1)
        losses[name] = F.cross_entropy(values, target, ignore_index=IGNORE, reduction="sum") / shown
    return losses


def augment(images: Tensor, shift_px: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Random left-right flips and shifts of up to ``shift_px`` pixels (borders replicated), (B, 3, H, W)."""
    if flip:
        flipped = torch.rand(len(images), generator=generator) < 0.5
        images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
    if shift_px:
        height, width = images.shape[-2:]
        padded = F.pad(images, (shift_px,) * 4, mode="replicate")
        offsets = torch.randint(0, 2 * shift_px + 1, (len(images), 2), generator=generator)
        images = torch.stack([p[:, dy:dy + height, dx:dx + width] for p, (dy, dx) in zip(padded, offsets.tolist(),
                                                                                        strict=True)])
    return images


@dataclass
class TrainedAttributes:
    """A trained classifier and its mean training loss per epoch."""

    model: AttributeClassifier
    losses: list[float]


def train_attribute_classifier(images: Tensor, targets: Tensor, vocabulary: Vocabulary,
                               model_cfg: AttributeClassifierConfig | None = None,
                               train_cfg: AttributeTrainConfig | None = None,
                               log: Callable[[int, float], None] | None = None) -> TrainedAttributes:
    """Train a classifier on ``images`` (N, 3, H, W) in [0, 1] or uint8 and ``targets`` (N, attributes).

    ``targets`` come from :func:`encode_labels` with the same ``vocabulary``; ``log(epoch, loss)``
    is called after every epoch. Returns the model in eval mode.
    """
    train_cfg = (train_cfg or AttributeTrainConfig()).validate()
    torch.manual_seed(train_cfg.seed)
    model = AttributeClassifier(vocabulary, model_cfg)
    images = model.prepare(check_rgb(images))  # resized once: (N, 3, S, S)
    targets = torch.as_tensor(targets, dtype=torch.long)
    if targets.shape != (len(images), len(model.vocabulary)):
        raise AttributeClassifierError(f"targets must be (images, attributes) = ({len(images)}, "
                                       f"{len(model.vocabulary)}), got {tuple(targets.shape)}")
    sizes = torch.tensor([len(c) for c in model.vocabulary.values()])
    if ((targets < IGNORE) | (targets >= sizes)).any():
        counts = dict(zip(model.vocabulary, sizes.tolist(), strict=True))
        raise AttributeClassifierError(f"targets hold class indices outside [-1, classes) of {counts}; "
                                       "make them with encode_labels and the same vocabulary")
    generator = torch.Generator().manual_seed(train_cfg.seed)
    frozen = frozen_features(model, images) if model.cfg.backbone != "cnn" else None  # (2, N, F): as is, mirrored
    optimiser = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    batches = math.ceil(len(images) / train_cfg.batch_size)
    total = train_cfg.epochs * batches
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    model.train()
    losses = []
    for epoch in range(train_cfg.epochs):
        order = torch.randperm(len(images), generator=generator)
        running = 0.0
        for b in range(batches):
            pick = order[b * train_cfg.batch_size:(b + 1) * train_cfg.batch_size]
            if frozen is None:
                batch = augment(images[pick], train_cfg.shift_px, train_cfg.flip, generator)
                logits = model.classify(model.backbone_features(batch))
            else:
                mirrored = (torch.rand(len(pick), generator=generator) < 0.5).long() if train_cfg.flip else 0
                logits = model.classify(frozen[mirrored, pick])
            loss = sum(attribute_losses(logits, targets[pick]).values())
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            running += float(loss.detach()) * len(pick)
        losses.append(running / len(images))
        if log is not None:
            log(epoch, losses[-1])
    return TrainedAttributes(model.eval(), losses)


def frozen_features(model: AttributeClassifier, images: Tensor) -> Tensor:
    """A frozen backbone's features of ``images`` (N, 3, S, S) and of their mirror images: (2, N, F)."""
    return torch.stack([torch.cat([model.backbone_features(chunk) for chunk in batch.split(FEATURE_BATCH)])
                        for batch in (images, images.flip(-1))])
