"""The data sections: which synthetic subjects exist and how each is rendered (paper §4.1, appendix B.2).

Paper §4.1 and appendix B.2: 100K synthetic subjects, each rendered from 300 views at 256x256;
appendix C.5 (Table 4) evaluates on 1K held-out subjects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rodin_core.config_dict import ConfigError, check_range

MAX_SUBJECTS = 10_000_000
"""Most subjects of a corpus (100x the paper's): every stage plans its shards over all their ids at once."""
MAX_VIEWS = 4096
"""Most views per subject (the paper renders 300): fitting holds all views of a subject in memory."""
MAX_RENDER_THREADS = 1024
"""Most Blender threads per shard."""


@dataclass
class CorpusConfig:
    """Which synthetic subjects exist and how they are grouped into shards (paper §4.1)."""

    subjects: int = 100_000
    """Number of subjects in the corpus (paper: 100K)."""
    seed: int = 0
    """Corpus seed: (seed, subject id) determines an avatar completely."""
    shard_size: int = 100
    """Subjects per shard: the unit of work, retry and commit."""
    asset_dir: str | None = None
    """Optional asset-library folder (one sub-folder per category of .blend/.glb/.gltf files)."""
    holdout_subjects: int = 1000
    """Evaluation subjects (paper §4.5, appendix C.5 Table 4: 1K test subjects): the last ids of the corpus,
    ``subjects - holdout_subjects`` .. ``subjects - 1``, are rendered and fitted like every subject but never
    seen by diffusion training (base, upsampler, plane statistics, the prior's latents). 0 holds none out; at
    most ``subjects - 1`` are held out (:attr:`held_out_count`)."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field, its value and the valid range."""
        check_range("corpus.subjects", self.subjects, low=1, high=MAX_SUBJECTS)
        check_range("corpus.seed", self.seed, low=0, high=2**31 - 1)
        check_range("corpus.shard_size", self.shard_size, low=1)
        check_range("corpus.holdout_subjects", self.holdout_subjects, low=0)

    @property
    def held_out_count(self) -> int:
        """Subjects actually held out: ``holdout_subjects``, but at most ``subjects - 1`` so that a corpus
        shrunk with ``--subjects`` keeps at least one training subject."""
        return min(self.holdout_subjects, self.subjects - 1)

    @property
    def first_held_out(self) -> int | None:
        """Smallest held-out subject id, ``subjects - holdout_subjects``; None when no subject is held out."""
        return self.subjects - self.held_out_count if self.held_out_count else None

    def held_out_ids(self) -> list[int]:
        """Ids of the held-out evaluation subjects, ascending (§4.5, appendix C.5)."""
        return list(range(self.subjects - self.held_out_count, self.subjects))

    def is_training_subject(self, subject_id: int) -> bool:
        """Whether diffusion training may read subject ``subject_id`` (it is not held out)."""
        return self.first_held_out is None or subject_id < self.first_held_out


@dataclass
class RenderConfig:
    """Multi-view rendering of each subject with Blender Cycles on CPU (paper appendix B.2)."""

    views: int = 300
    """Views per subject; view 0 is the frontal view (paper: 300)."""
    resolution: int = 256
    """Square image side in pixels (paper: 256)."""
    samples: int = 16
    """Cycles path-tracing samples per pixel (denoised afterwards)."""
    denoise: bool = True
    """Run Cycles' OpenImageDenoise pass (lets a low sample count reach high-sample quality)."""
    max_bounces: int = 4
    """Cycles total light bounces (diffuse/glossy/transmission capped below this)."""
    fov_deg: float = 30.0
    """Horizontal = vertical field of view of the fixed pinhole intrinsics, in degrees."""
    camera_radius: float = 4.0
    """Distance of every camera from the head centre (world units, avatar in [-1, 1]^3)."""
    elevation_min_deg: float = -25.0
    """Lowest camera elevation above the head's horizontal plane, degrees."""
    elevation_max_deg: float = 50.0
    """Highest camera elevation, degrees."""
    timeout_s: float = 3600.0
    """Wall-clock limit of one Blender process rendering one shard; past it the attempt fails."""
    threads: int = 1
    """CPU threads Blender may use per shard (one shard per core scales best)."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field, its value and the valid range."""
        check_range("render.views", self.views, low=1, high=MAX_VIEWS)
        check_range("render.resolution", self.resolution, low=8, high=4096)
        check_range("render.samples", self.samples, low=1)
        check_range("render.max_bounces", self.max_bounces, low=0, high=64)
        check_range("render.fov_deg", self.fov_deg, low=1.0, high=120.0)
        check_range("render.camera_radius", self.camera_radius, low=1.8)
        check_range("render.elevation_min_deg", self.elevation_min_deg, low=-89.0, high=89.0)
        check_range("render.elevation_max_deg", self.elevation_max_deg, low=-89.0, high=89.0)
        if self.elevation_min_deg > self.elevation_max_deg:
            raise ConfigError(
                f"render.elevation_min_deg={self.elevation_min_deg} is above "
                f"render.elevation_max_deg={self.elevation_max_deg}; swap them"
            )
        check_range("render.timeout_s", self.timeout_s, low=1.0)
        check_range("render.threads", self.threads, low=0, high=MAX_RENDER_THREADS)


def saved_held_out_from(saved: Mapping[str, Any]) -> int | None:
    """The first held-out subject id (§4.5, appendix C.5) of a saved ``RodinConfig.to_dict()``, read as saved.

    None when it held no subject out, also for configs saved before ``corpus.holdout_subjects`` existed
    (whatever the preset says now, their training read every subject).
    """
    corpus = saved.get("corpus") or {}
    subjects = int(corpus["subjects"])
    holdout = min(int(corpus.get("holdout_subjects", 0)), subjects - 1)  # CorpusConfig.held_out_count
    return subjects - holdout if holdout else None
