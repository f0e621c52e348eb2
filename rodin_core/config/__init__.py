"""The pipeline's config tree with named presets (`tiny`, `small`, `paper`; paper §4.1, appendix B).

- :mod:`.schema`: :class:`RodinConfig` and its stage sections, which nest the configs of the classes
  they build (U-Net, latent MLP, diffusion process, tri-plane decoder);
- :mod:`.derived`: the fields that one section determines for another;
- :mod:`.presets`: :func:`preset_config`;
- :mod:`.loader`: :func:`load_config` (preset, YAML file, ``--set`` overrides), :func:`apply_overrides`;
- :mod:`.corpus`, :mod:`.train`, :mod:`.keys`: the data sections, the optimisation section, dotted keys.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "CorpusConfig": "rodin_core.config.corpus",
    "RenderConfig": "rodin_core.config.corpus",
    "saved_held_out_from": "rodin_core.config.corpus",
    "FitConfig": "rodin_core.config.fit",
    "apply_overrides": "rodin_core.config.loader",
    "load_config": "rodin_core.config.loader",
    "preset_config": "rodin_core.config.presets",
    "PRESETS": "rodin_core.config.schema",
    "BaseStageConfig": "rodin_core.config.schema",
    "PriorStageConfig": "rodin_core.config.schema",
    "RodinConfig": "rodin_core.config.schema",
    "UpsamplerStageConfig": "rodin_core.config.schema",
    "PRECISIONS": "rodin_core.config.train",
    "TrainConfig": "rodin_core.config.train",
    "ConfigError": "rodin_core.config_dict",
    "DiffusionConfig": "rodin_core.diffusion.config",
    "ENCODER_KINDS": "rodin_core.encoders",
    "EncoderConfig": "rodin_core.encoders",
    "LatentMLPConfig": "rodin_core.networks.latent_mlp",
    "UNetConfig": "rodin_core.networks.unet",
    "TriplaneConfig": "rodin_core.triplane.config",
    "DecoderConfig": "rodin_core.triplane.field",
}
"""Where each public name lives. Names are imported on first use (PEP 562), so that a process that needs
only the data sections (the Blender worker reads ``RenderConfig``) does not load torch with the networks."""


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rodin_core.config' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "ENCODER_KINDS",
    "PRECISIONS",
    "PRESETS",
    "BaseStageConfig",
    "ConfigError",
    "CorpusConfig",
    "DecoderConfig",
    "DiffusionConfig",
    "EncoderConfig",
    "FitConfig",
    "LatentMLPConfig",
    "PriorStageConfig",
    "RenderConfig",
    "RodinConfig",
    "TrainConfig",
    "TriplaneConfig",
    "UNetConfig",
    "UpsamplerStageConfig",
    "apply_overrides",
    "load_config",
    "preset_config",
    "saved_held_out_from",
]
