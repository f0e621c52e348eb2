"""Training of the diffusion stages (paper §3.2, §3.3, appendix B.1, B.4): data, statistics, EMA, checkpoints.

The stage objects and the training loop live in the sibling modules ``stages``, ``base``,
``upsampler``, ``prior`` and ``loop``; import them from there.
"""

from rodin_core.training.augment import degrade_condition
from rodin_core.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointMismatchError,
    checkpoint_files,
    checkpoint_from_files,
    download_checkpoint,
    load_checkpoint,
    save_checkpoint,
    upload_checkpoint,
)
from rodin_core.training.dataset import (
    DatasetError,
    TriplaneBatch,
    TriplaneDataset,
    TriplaneSample,
    collate_samples,
    iter_planes,
    subject_ids,
)
from rodin_core.training.ema import EMA
from rodin_core.training.stats import (
    PlaneStats,
    PlaneStatsError,
    compute_plane_stats,
    read_plane_stats,
    write_plane_stats,
)

__all__ = [
    "EMA", "Checkpoint", "CheckpointError", "CheckpointMismatchError", "DatasetError", "PlaneStats",
    "PlaneStatsError", "TriplaneBatch", "TriplaneDataset", "TriplaneSample", "checkpoint_files",
    "checkpoint_from_files", "collate_samples", "compute_plane_stats", "degrade_condition", "download_checkpoint",
    "iter_planes", "load_checkpoint", "read_plane_stats", "save_checkpoint", "subject_ids", "upload_checkpoint",
    "write_plane_stats",
]
