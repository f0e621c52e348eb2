"""The ``text_embedding`` section: the avatar-CLIP model and its training (§4.5, B.3, B.5).

``text_embedding.model`` is the :class:`~rodin_core.text.model.AvatarClipConfig` beside the model;
``text_embedding.train`` how it is optimised and which subjects measure it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rodin_core.config_dict import DictConfig, check_component, check_range
from rodin_core.text.model import AvatarClipConfig


@dataclass
class TextEmbeddingTrainConfig(DictConfig):
    """Optimisation of the avatar-CLIP embedding and which subjects it is measured on."""

    steps: int = 600
    """AdamW steps."""
    batch_size: int = 32
    """Distinct subjects per step (at most the training subjects)."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    holdout_subjects: int = 16
    """The last subject ids, never trained on: retrieval is measured on them."""
    variants: int = 8
    """Caption variants per subject (the first names every attribute)."""
    drop: float = 0.3
    """Probability that a partial variant leaves out an attribute."""
    shift: int = 4
    """Most pixels a render is shifted by, at random, each time it is drawn (0: off)."""
    seed: int = 0
    """Seed of the initialisation, the batches and the caption variants."""

    def validate(self, where: str = "text_embedding.train") -> None:
        """Raise ConfigError naming the first bad field and its value."""
        for name, low, high in (("steps", 1, None), ("batch_size", 2, None), ("lr", 0.0, None),
                                ("weight_decay", 0.0, None), ("holdout_subjects", 2, None), ("variants", 1, None),
                                ("drop", 0.0, 0.99), ("shift", 0, None), ("seed", 0, None)):
            check_range(f"{where}.{name}", getattr(self, name), low=low, high=high)


@dataclass
class TextEmbeddingSection:
    """The avatar-CLIP text-image embedding trained on the renders and their caption variants."""

    model: AvatarClipConfig = field(default_factory=AvatarClipConfig)
    """Image tower, text projection, temperature."""
    train: TextEmbeddingTrainConfig = field(default_factory=TextEmbeddingTrainConfig)
    """Optimisation and held-out subjects."""

    def validate(self, where: str = "text_embedding") -> None:
        """Raise ConfigError naming the first bad key."""
        check_component(f"{where}.model", self.model)
        self.train.validate(f"{where}.train")
