"""The pipeline's config tree with named presets (`tiny`, `small`, `paper`; paper §4.1, appendix B).

- :mod:`.schema`: :class:`RodinConfig` and its stage sections, which nest the configs of the classes
  they build (U-Net, latent MLP, diffusion process, tri-plane decoder);
- :mod:`.derived`: the fields that one section determines for another;
- :mod:`.presets`: :func:`preset_config`;
- :mod:`.loader`: :func:`load_config` (preset, YAML file, ``--set`` overrides), :func:`apply_overrides`;
- :mod:`.corpus`, :mod:`.train`, :mod:`.keys`: the data sections, the optimisation section, dotted keys.
"""

from rodin_core.config.corpus import CorpusConfig, RenderConfig, saved_held_out_from
from rodin_core.config.fit import FitConfig
from rodin_core.config.loader import apply_overrides, load_config
from rodin_core.config.presets import preset_config
from rodin_core.config.schema import (
    PRESETS,
    BaseStageConfig,
    PriorStageConfig,
    RodinConfig,
    UpsamplerStageConfig,
)
from rodin_core.config.train import PRECISIONS, TrainConfig
from rodin_core.config_dict import ConfigError
from rodin_core.diffusion.config import DiffusionConfig
from rodin_core.encoders import ENCODER_KINDS, EncoderConfig
from rodin_core.networks.latent_mlp import LatentMLPConfig
from rodin_core.networks.unet import UNetConfig
from rodin_core.triplane.config import TriplaneConfig
from rodin_core.triplane.field import DecoderConfig

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
