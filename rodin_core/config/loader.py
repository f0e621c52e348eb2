"""A config from a preset, then a YAML file, then ``--set section.sub.field=value`` overrides (paper §4.1).

Keys nest as the sections do (``render.views``, ``base.unet.model_channels``,
``upsampler.diffusion.mean_type``, ``prior.train.lr``). Every key and value is checked; an unknown key
or a bad value raises :class:`~rodin_core.config_dict.ConfigError` naming the key, the value and the
valid choices, and so does a derived field set against its source (:mod:`rodin_core.config.derived`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from rodin_core.config.keys import merge, set_key
from rodin_core.config.presets import preset_config
from rodin_core.config.schema import RodinConfig
from rodin_core.config_dict import ConfigError


def load_config(
    preset: str = "tiny",
    yaml_path: str | Path | None = None,
    overrides: Iterable[str] = (),
) -> RodinConfig:
    """Preset, then YAML file (whose ``preset`` key may switch the preset), then overrides; validated."""
    cfg = preset_config(preset)
    given: dict[str, Any] = {}
    if yaml_path is not None:
        data = _read_yaml(Path(yaml_path))
        if "preset" in data and data["preset"] != preset:
            cfg = preset_config(str(data["preset"]))
        merge(cfg, {k: v for k, v in data.items() if k != "preset"}, "", given)
    return _apply(cfg, overrides, given)


def apply_overrides(cfg: RodinConfig, overrides: Iterable[str]) -> RodinConfig:
    """Apply ``section.sub.field=value`` strings (values parsed as YAML scalars) to ``cfg`` and validate it."""
    return _apply(cfg, overrides, {})


def _apply(cfg: RodinConfig, overrides: Iterable[str], given: dict[str, Any]) -> RodinConfig:
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.field=value, e.g. render.views=32 "
                              "or base.unet.model_channels=64")
        set_key(cfg, key.strip(), yaml.safe_load(raw) if raw.strip() else None, given)
    return cfg.validate(given)


def _read_yaml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}")
    return data
