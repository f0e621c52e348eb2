"""JSON round trips of the configs that are saved beside model weights (safetensors + JSON).

A checkpoint's config must rebuild exactly the module it was saved from, so reading one is strict:
an unknown key is an error, and JSON lists come back as the tuples the dataclass declares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Self


class DictConfig:
    """Mixin for config dataclasses: ``to_dict`` and a strict ``from_dict``.

    ``from_dict`` calls ``validate()`` on the rebuilt config when the class defines one.
    """

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (the inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Rebuild a config saved by :meth:`to_dict` or its JSON; unknown keys raise ValueError."""
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {', '.join(names)}")
        config = cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})
        validate = getattr(config, "validate", None)
        if callable(validate):
            validate()
        return config
