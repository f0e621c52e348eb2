"""What every config dataclass shares: strict JSON round trips, :class:`ConfigError` and range checks.

A checkpoint's config must rebuild exactly the module it was saved from, so reading one is strict:
an unknown key is an error, and JSON lists come back as the tuples the dataclass declares. This
module imports nothing of rodin, so that a config can sit beside the class it configures (paper
§3-§4: the tri-plane, its decoder, the networks, the diffusion processes) and still raise the
:class:`ConfigError` of :mod:`rodin_core.config`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Protocol, Self


class ConfigError(ValueError):
    """A config key or value is invalid; the message names it, its value and the valid choices."""


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


class Validating(Protocol):
    """A component config: ``validate()`` raises ValueError naming the bad field and its value."""

    def validate(self) -> Any: ...


def check_range(key: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise :class:`ConfigError` naming ``key`` and ``value`` unless ``value`` is finite and ``low <= value <= high``."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"bad value for {key}: {value!r} is not a finite number; set a finite value")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"bad value for {key}: {value!r} is outside the valid range {bounds}")


def check_component(key: str, component: Validating, note: str = "") -> None:
    """Validate the component config at ``key`` (e.g. ``base.unet``); its ValueError becomes a ConfigError
    ending with ``note`` (e.g. where its derived fields come from)."""
    try:
        component.validate()
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"bad value in {key}: {exc}{note}") from exc
