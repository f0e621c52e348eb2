"""The attribute classifier: which hairstyle, colours, garment, accessory... an avatar's renders show.

Text-to-avatar generation and text editing (paper §4.5, appendix B.3, B.5) are measured by
reading the attributes back from renders of the generated avatar: :func:`judge` takes the renders
of one avatar (frontal and near-frontal views, RGB in [0, 1]) and returns the most likely class of
every attribute, averaging the class probabilities over the views.

:class:`AttributeClassifier` has one linear head per attribute (``heads.<i>``, in vocabulary order)
over a shared layer, fed by one of two backbones (``AttributeClassifierConfig.backbone``):

- ``cnn``: a small CNN trained from scratch with the heads;
- ``vgg16``: the frozen ImageNet VGG16 whose weights ship with ``stlpips-pytorch``
  (:class:`~rodin_core.networks.perceptual.STLPIPS`); relu4_3 and relu5_3, each averaged over the
  2 x 2 quadrants of the image, and the image's colours averaged on a 4 x 4 grid (the deep taps keep
  little colour, and colours are attributes) are the features (4,144) the shared layer reads,
  standardised first. The VGG16 weights are not part of the classifier's file: they come with the
  package, and only the shared layer and the heads are trained and saved. On a corpus of a few
  hundred subjects rendered at 64 px it reads hairstyles, accessories and gender that a CNN learned
  from those few images misses.

Its vocabulary (attribute -> class names, in head order) travels with the weights:
``<prefix>.safetensors`` and ``<prefix>.json`` (format version, :class:`AttributeClassifierConfig`,
vocabulary, metrics), read back with strict key and shape checks. Training lives in
:mod:`rodin_core.training.attributes`; nothing here imports it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from rodin_core.checkpoint import state_mismatches
from rodin_core.config_dict import DictConfig, check_range
from rodin_core.networks.perceptual import STLPIPS

KIND = "rodin.attribute_classifier"
FORMAT_VERSION = 1
POOLED = 4
"""Side of the feature map the CNN trunk pools to before the shared hidden layer."""
BACKBONES = ("cnn", "vgg16")
VGG_TAPS = (3, 4)
"""The VGG16 taps the ``vgg16`` backbone reads: relu4_3 and relu5_3 (512 channels each)."""
VGG_QUADRANTS = 2
"""Side of the grid each VGG tap is averaged over."""
COLOUR_GRID = 4
"""Side of the grid the ``vgg16`` backbone also averages the RGB image over: the deep taps keep little colour."""
VGG_FEATURES = len(VGG_TAPS) * 512 * VGG_QUADRANTS ** 2 + 3 * COLOUR_GRID ** 2

Vocabulary = dict[str, tuple[str, ...]]
"""Attribute name -> its class names, in head order."""


class AttributeClassifierError(ValueError):
    """A bad attribute name, input or stored classifier; the message says which and what to do."""


class UnknownAttributeError(AttributeClassifierError):
    """An attribute or class name that the classifier's vocabulary does not hold."""


class AttributeLoadError(AttributeClassifierError):
    """A stored classifier that cannot be read back; the message names the file and what to do."""


@dataclass
class AttributeClassifierConfig(DictConfig):
    """Shape of :class:`AttributeClassifier`."""

    image_size: int = 64
    """Side the inputs are resized to (the tiny preset renders 64 px)."""
    channels: tuple[int, ...] = (16, 32, 64, 64)
    """Channels of the stride-2 stages of the trunk."""
    hidden: int = 128
    """Width of the shared layer in front of the heads."""
    dropout: float = 0.3
    """Dropout before the heads (training only)."""
    max_view_angle_deg: float = 60.0
    """Views within this angle of the face direction are the ones it is trained on and judges from."""
    backbone: str = "cnn"
    """``cnn`` (trained from scratch) or ``vgg16`` (frozen, pretrained; ``channels`` unused)."""

    def validate(self) -> AttributeClassifierConfig:
        if self.backbone not in BACKBONES:
            raise ValueError(f"attributes.backbone must be one of {BACKBONES}, got {self.backbone!r}")
        check_range("attributes.image_size", self.image_size, low=16, high=1024)
        if not self.channels:
            raise ValueError("attributes.channels must name at least one stage, got ()")
        for width in self.channels:
            check_range("attributes.channels", width, low=1)
        check_range("attributes.hidden", self.hidden, low=1)
        check_range("attributes.dropout", self.dropout, low=0.0, high=0.99)
        check_range("attributes.max_view_angle_deg", self.max_view_angle_deg, low=0.0, high=180.0)
        return self


def check_vocabulary(vocabulary: Mapping[str, Sequence[str]]) -> Vocabulary:
    """``vocabulary`` as a :data:`Vocabulary`, or a ValueError naming the empty, repeated or bad entry."""
    if not vocabulary:
        raise AttributeClassifierError("the attribute vocabulary is empty; give at least one attribute and its classes")
    out: Vocabulary = {}
    for name, classes in vocabulary.items():
        classes = tuple(classes)
        if not isinstance(name, str) or not name or "." in name:
            raise AttributeClassifierError(f"attribute name {name!r} must be a non-empty string without '.'")
        if len(classes) < 2:
            raise AttributeClassifierError(f"attribute {name!r} has classes {list(classes)}; it needs at least two")
        if len(set(classes)) != len(classes) or not all(isinstance(c, str) and c for c in classes):
            raise AttributeClassifierError(f"attribute {name!r} has repeated or empty class names {list(classes)}")
        out[name] = classes
    return out


class AttributeClassifier(nn.Module):
    """RGB images (N, 3, H, W) in [0, 1] -> logits (N, classes) per attribute."""

    def __init__(self, vocabulary: Mapping[str, Sequence[str]], cfg: AttributeClassifierConfig | None = None) -> None:
        super().__init__()
        self.cfg = (cfg or AttributeClassifierConfig()).validate()
        self.vocabulary = check_vocabulary(vocabulary)
        layers: list[nn.Module] = []
        width = 3
        if self.cfg.backbone == "cnn":
            for out in self.cfg.channels:
                layers += [nn.Conv2d(width, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(),
                           nn.Conv2d(out, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
                width = out
            layers += [nn.AdaptiveAvgPool2d(POOLED), nn.Flatten()]
            width *= POOLED * POOLED
        else:  # features of very different scales (deep taps, colours): standardised first, as a linear probe is
            width = VGG_FEATURES
            layers.append(nn.BatchNorm1d(width, affine=False))
        layers += [nn.Linear(width, self.cfg.hidden), nn.ReLU(), nn.Dropout(self.cfg.dropout)]
        self.trunk = nn.Sequential(*layers)
        self._vgg: list[STLPIPS] = []  # the frozen backbone, loaded on first use; in a list: not in state_dict
        # A list in vocabulary order: attribute names may clash with module methods ("half", "train").
        self.heads = nn.ModuleList([nn.Linear(self.cfg.hidden, len(c)) for c in self.vocabulary.values()])
        self.metrics: dict[str, Any] = {}
        """What training measured (held-out accuracy...), saved beside the weights."""

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.classify(self.backbone_features(images))

    def backbone_features(self, images: Tensor) -> Tensor:
        """What the trainable part reads: the resized images (N, 3, S, S) for ``cnn``, the frozen VGG16 features
        (N, :data:`VGG_FEATURES`) for ``vgg16``."""
        images = self.prepare(images)
        if self.cfg.backbone == "cnn":
            return images - 0.5  # (N, 3, S, S)
        if not self._vgg:
            self._vgg.append(STLPIPS().eval().requires_grad_(False))
        with torch.no_grad():
            taps = self._vgg[0].taps(images)
            pooled = [F.adaptive_avg_pool2d(taps[t], VGG_QUADRANTS).flatten(1) for t in VGG_TAPS]  # (N, 2048) each
            colours = F.adaptive_avg_pool2d(images - 0.5, COLOUR_GRID).flatten(1)  # (N, 48)
        return torch.cat([*pooled, colours], dim=1)  # (N, VGG_FEATURES)

    def classify(self, features: Tensor) -> dict[str, Tensor]:
        """Logits (N, classes) per attribute from :meth:`backbone_features`."""
        hidden = self.trunk(features)  # (N, hidden)
        return {name: head(hidden) for name, head in zip(self.vocabulary, self.heads, strict=True)}

    def prepare(self, images: Tensor) -> Tensor:
        """``images`` checked and resized to ``cfg.image_size``: float (N, 3, S, S)."""
        images = check_rgb(images)
        size = self.cfg.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return images

    def class_index(self, attribute: str, value: str) -> int:
        """Index of class ``value`` of ``attribute``; :class:`UnknownAttributeError` naming the choices."""
        classes = self.classes(attribute)
        if value not in classes:
            raise UnknownAttributeError(f"attribute {attribute!r} has no class {value!r}; it has {list(classes)}")
        return classes.index(value)

    def classes(self, attribute: str) -> tuple[str, ...]:
        """Class names of ``attribute``; :class:`UnknownAttributeError` naming the known attributes."""
        if attribute not in self.vocabulary:
            raise UnknownAttributeError(f"unknown attribute {attribute!r}; the classifier knows "
                                        f"{', '.join(self.vocabulary)}")
        return self.vocabulary[attribute]


def check_rgb(images: Tensor) -> Tensor:
    """``images`` as float32 (N, 3, H, W) in [0, 1], or a ValueError saying which shape or range is wrong."""
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0 or min(images.shape[-2:]) < 8:
        raise AttributeClassifierError(f"attribute classifier input must be a non-empty RGB batch (N, 3, H, W) with "
                                       f"H, W >= 8 and values in [0, 1], got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    images = images.float()
    if not torch.isfinite(images).all() or images.min() < 0.0 or images.max() > 1.0:
        raise AttributeClassifierError(f"attribute classifier input must hold finite values in [0, 1], got "
                                       f"[{images.min().item():.3g}, {images.max().item():.3g}]; "
                                       "divide 8-bit images by 255")
    return images


@torch.no_grad()
def probabilities(model: AttributeClassifier, images: Tensor, batch_size: int = 256) -> dict[str, Tensor]:
    """Class probabilities (N, classes) of each attribute for every image, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        images = check_rgb(images)
        chunks = [model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return {name: torch.cat([c[name] for c in chunks]).softmax(dim=-1) for name in model.vocabulary}


def judge(model: AttributeClassifier, renders: Tensor, mirror: bool = False) -> dict[str, str]:
    """The attributes one avatar shows: class with the highest probability averaged over its ``renders``.

    ``renders``: (V, 3, H, W) views of one avatar in [0, 1] on a white background, frontal or near
    frontal (the classifier is trained on views within ``max_view_angle_deg`` of the face).
    ``mirror``: average over the views and their left-right mirror images (2V), which the classifier
    also trained on (no attribute depends on the side); the answer then depends less on which views
    were rendered.
    """
    views = torch.cat([renders, renders.flip(-1)]) if mirror else renders  # (V or 2V, 3, H, W)
    return {name: model.vocabulary[name][int(p.mean(dim=0).argmax())]
            for name, p in probabilities(model, views).items()}


def judge_halves(model: AttributeClassifier, renders: Tensor,
                 mirror: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """:func:`judge` of the even-indexed and of the odd-indexed ``renders`` (V >= 2) of one avatar, apart
    (each half with its mirror images when ``mirror``).

    Where the two halves of the same avatar's views disagree, the judge cannot tell that attribute
    reliably on that avatar; the share of agreeing attributes is the ceiling of any measure that asks
    whether an attribute stayed unchanged.
    """
    if len(renders) < 2:
        raise AttributeClassifierError(f"judging two halves of an avatar's views needs at least 2 views, got "
                                       f"{len(renders)}; render more near-frontal views")
    return judge(model, renders[0::2], mirror), judge(model, renders[1::2], mirror)


def attributes_to_bytes(model: AttributeClassifier, metrics: Mapping[str, Any] | None = None) -> tuple[bytes, str]:
    """(safetensors bytes of the weights, JSON text of kind, version, config, vocabulary and metrics)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    document = {"kind": KIND, "format_version": FORMAT_VERSION, "config": model.cfg.to_dict(),
                "vocabulary": {name: list(classes) for name, classes in model.vocabulary.items()},
                "metrics": dict(metrics or {})}
    return st_save(state), json.dumps(document, indent=2, sort_keys=False, allow_nan=False)


DOCUMENT_KEYS = ("kind", "format_version", "config", "vocabulary", "metrics")


def attributes_from_bytes(tensors: bytes, document_json: str, source: str = "<bytes>") -> AttributeClassifier:
    """Rebuild a classifier from :func:`attributes_to_bytes` output, checking every key and shape."""
    try:
        document = json.loads(document_json)
    except (json.JSONDecodeError, TypeError) as exc:
        raise AttributeLoadError(f"attribute classifier {source} is not valid JSON ({exc}); train it again") from exc
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise AttributeLoadError(f"{source} is not a {KIND!r} document; point at the .json written by "
                                 "save_attribute_classifier")
    unknown = sorted(set(document) - set(DOCUMENT_KEYS))
    missing = sorted(set(DOCUMENT_KEYS) - set(document))
    if unknown or missing:
        raise AttributeLoadError(f"attribute classifier {source} has unknown keys {unknown} and lacks keys {missing}; "
                                 f"it must hold exactly {', '.join(DOCUMENT_KEYS)}")
    if document["format_version"] != FORMAT_VERSION:
        raise AttributeLoadError(f"attribute classifier {source} has format_version {document['format_version']!r}, "
                                 f"this rodin reads {FORMAT_VERSION}; train it again")
    try:
        cfg = AttributeClassifierConfig.from_dict(document["config"])
        model = AttributeClassifier(document["vocabulary"], cfg)
    except (TypeError, ValueError) as exc:
        raise AttributeLoadError(f"attribute classifier {source} has a bad config or vocabulary ({exc})") from exc
    try:
        state = st_load(tensors)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise AttributeLoadError(f"attribute classifier weights {source} are not readable safetensors ({exc}); "
                                 "train it again") from exc
    expected = model.state_dict()
    missing, unexpected, shapes = state_mismatches(expected, state)
    if missing or unexpected or shapes:
        raise AttributeLoadError(f"attribute classifier weights {source} do not match its JSON: missing keys "
                                 f"{missing}, unexpected keys {unexpected}, shape mismatches {shapes}; the two "
                                 "files must come from the same save")
    model.load_state_dict(state, strict=True)
    model.metrics = document["metrics"]
    return model.eval()


def _paths(prefix: str | Path) -> tuple[Path, Path]:
    base = Path(prefix)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def save_attribute_classifier(model: AttributeClassifier, prefix: str | Path,
                              metrics: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``<prefix>.safetensors`` and ``<prefix>.json``; returns both paths."""
    weights, document = _paths(prefix)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors, text = attributes_to_bytes(model, metrics)
    weights.write_bytes(tensors)
    document.write_text(text)
    return weights, document


def load_attribute_classifier(prefix: str | Path) -> AttributeClassifier:
    """The classifier written by :func:`save_attribute_classifier`, in eval mode (``.metrics``: its saved metrics)."""
    weights, document = _paths(prefix)
    for path in (weights, document):
        if not path.is_file():
            raise AttributeLoadError(f"attribute classifier file {str(path)!r} does not exist; train one with "
                                     "`python benchmarks/attribute_classifier.py --renders <root> --save <prefix>`")
    return attributes_from_bytes(weights.read_bytes(), document.read_text(), source=str(document))
