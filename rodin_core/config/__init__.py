"""The pipeline's config tree with named presets (`tiny`, `small`, `paper`; paper §4.1, appendix B).

- :mod:`.schema`: :class:`RodinConfig` and its stage sections, which nest the configs of the classes
  they build (U-Net, latent MLP, diffusion process, tri-plane decoder);
- :mod:`.derived`: the fields that one section determines for another;
- :mod:`.presets`: :func:`preset_config`;
- :mod:`.loader`: :func:`load_config` (preset, YAML file, ``--set`` overrides), :func:`apply_overrides`;
- :mod:`.corpus`, :mod:`.train`, :mod:`.keys`: the data sections, the optimisation section, dotted keys.
"""

from typing import Any

from rodin_core.config.corpus import CorpusConfig, RenderConfig, saved_held_out_from
from rodin_core.config.fit import FitConfig
from rodin_core.config.preset_names import PRESETS
from rodin_core.config.train import PRECISIONS, TrainConfig
from rodin_core.config_dict import ConfigError

_NEEDS_TORCH = ("BaseStageConfig", "PriorStageConfig", "RodinConfig", "UpsamplerStageConfig",
                "apply_overrides", "load_config", "preset_config", "DiffusionConfig", "ENCODER_KINDS",
                "EncoderConfig", "LatentMLPConfig", "UNetConfig", "DecoderConfig", "TriplaneConfig")
"""Names whose modules import torch (the stage sections nest the networks' configs). They are imported on
first use (PEP 562), so that a process that needs only the data sections (the Blender worker reads
``RenderConfig``) does not load torch."""


def __getattr__(name: str) -> Any:
    if name not in _NEEDS_TORCH:
        raise AttributeError(f"module 'rodin_core.config' has no attribute {name!r}")
    from rodin_core import encoders
    from rodin_core.config import loader, presets, schema
    from rodin_core.diffusion import config as diffusion_config
    from rodin_core.networks import latent_mlp, unet
    from rodin_core.triplane import config as triplane_config
    from rodin_core.triplane import field

    for module in (schema, loader, presets, diffusion_config, encoders, latent_mlp, unet, field, triplane_config):
        if hasattr(module, name):
            globals()[name] = getattr(module, name)
            return globals()[name]
    raise AttributeError(f"module 'rodin_core.config' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_NEEDS_TORCH])


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
