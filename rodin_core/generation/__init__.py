"""Generation from trained checkpoints (paper §3.2-3.3, §4.2, §4.5, Fig. 6, Fig. 15, appendix B.4).

- :mod:`.avatar`: an avatar (tri-plane + the z that made it + how) and its safetensors file;
- :mod:`.pipeline`: :class:`GenerationPipeline` (prior -> base with CFG -> upsampler), sampling,
  portrait inversion and latent interpolation, with :class:`SampleOptions`;
- :mod:`.checkpoints`: the strict checks and loading of the stage checkpoints;
- :mod:`.interpolation` (slerp, Fig. 6) and :mod:`.portrait` (a photo -> the encoder's input, §4.5);
- :mod:`.edit`: text-guided editing, z + s·δ with the source avatar's seed (§4.5, B.3).
"""

from rodin_core.generation.avatar import (
    Avatar,
    AvatarFileError,
    avatar_from_bytes,
    avatar_to_bytes,
    load_avatar,
    save_avatar,
)
from rodin_core.generation.errors import GenerationError
from rodin_core.generation.interpolation import slerp
from rodin_core.generation.pipeline import (
    SAMPLERS,
    GenerationPipeline,
    SampleOptions,
    X0Hook,
)

__all__ = [
    "SAMPLERS", "Avatar", "AvatarFileError", "GenerationError", "GenerationPipeline", "SampleOptions", "X0Hook",
    "avatar_from_bytes", "avatar_to_bytes", "load_avatar", "save_avatar", "slerp",
]
