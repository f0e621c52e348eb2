"""Tri-plane fitting's config: phase A (shared decoder), then phase B (frozen decoder), appendix B.2.

Paper appendix B.2: the decoder is fitted jointly with the planes of the first 1,000 subjects, then
frozen while every other subject's planes are fitted alone; :mod:`rodin_core.fitting.loop` runs both.
It sits in the config package, not beside the loop, because the fitting package reads the whole
:class:`~rodin_core.config.RodinConfig` (its per-shard job), which nests this section.
"""

from __future__ import annotations

from dataclasses import dataclass

from rodin_core.config_dict import ConfigError, check_range


@dataclass
class FitConfig:
    """Tri-plane fitting: phase A (shared decoder) then phase B (frozen decoder), appendix B.2."""

    shared_subjects: int = 1000
    """K: subjects fitted jointly with the decoder in phase A (paper: the first 1,000)."""
    shared_steps: int = 20_000
    """Optimisation steps of phase A."""
    shared_batch: int = 8
    """Phase-A subjects rendered per step (round-robin groups; ``rays_per_step`` is split among them):
    every step then moves the decoder on several subjects at once and each subject's planes more often
    (tiny preset, same compute: +0.5 dB held out on phase A's subjects than one subject per step)."""
    steps: int = 3000
    """Most optimisation steps per subject in phase B (it stops earlier at ``target_psnr``)."""
    target_psnr: float = 30.0
    """Held-out-view PSNR (dB) at which a subject's fitting stops."""
    holdout_views: int = 8
    """Views of each subject kept out of fitting to measure its PSNR (never view 0)."""
    rays_per_step: int = 4096
    """Rays per optimisation step."""
    coarse_samples: int = 32
    """Stratified samples per ray."""
    fine_samples: int = 32
    """Importance samples per ray (the fine pass)."""
    lr_planes: float = 0.02
    """Adam learning rate of the plane features."""
    lr_decoder: float = 0.001
    """Adam learning rate of the shared decoder (phase A)."""
    rescale_prob: float = 0.5
    """Probability that a step renders randomly rescaled planes (§3.1, Fig. 3)."""
    sparsity_weight: float = 1e-4
    """Weight of the L1 density sparsity loss."""
    tv_weight: float = 1e-4
    """Weight of the total-variation smoothness loss on the planes."""
    distortion_weight: float = 1e-3
    """Weight of the Mip-NeRF 360 distortion loss."""
    background: float = 1.0
    """Grey level the RGBA renders are composited onto (and the field renders over)."""
    eval_every: int = 100
    """Steps between held-out PSNR evaluations (early stopping)."""
    patience: int = 0
    """Phase B also stops once this many evaluations in a row improved the best held-out PSNR by less
    than ``min_improvement`` (a plateau below the target); 0 never stops on a plateau."""
    min_improvement: float = 0.05
    """Smallest gain (dB) of the best held-out PSNR that counts as progress for ``patience``."""
    occupancy_resolution: int = 64
    """Cells per side of the occupancy grid that skips empty space in phase B (0: query every point)."""
    occupancy_opacity: float = 0.01
    """Most opacity one skipped cell of the occupancy grid may hide from a ray: cells whose density is below
    -ln(1 - occupancy_opacity) / cell side are skipped (Instant-NGP thresholds the same quantity)."""
    occupancy_every: int = 16
    """Phase-B steps between refreshes of the occupancy grid from the current planes."""
    shard_size: int = 100
    """Subjects per fitting shard (the unit of work, retry and commit of phase B)."""
    seed: int = 0
    """Seed of plane initialisation, ray batches and sample jitter."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field, its value and the valid range."""
        for name in ("shared_subjects", "shared_steps", "shared_batch", "steps", "rays_per_step", "coarse_samples",
                     "eval_every", "shard_size", "occupancy_every"):
            check_range(f"fit.{name}", getattr(self, name), low=1)
        for name in ("holdout_views", "fine_samples", "seed", "occupancy_resolution", "patience"):
            check_range(f"fit.{name}", getattr(self, name), low=0)
        for name in ("lr_planes", "lr_decoder", "sparsity_weight", "tv_weight", "distortion_weight", "min_improvement"):
            check_range(f"fit.{name}", getattr(self, name), low=0.0)
        check_range("fit.target_psnr", self.target_psnr, low=0.0, high=100.0)
        if self.occupancy_resolution == 1:
            raise ConfigError("fit.occupancy_resolution=1 is not a grid; use 0 (off) or >= 2 cells per side")
        check_range("fit.rescale_prob", self.rescale_prob, low=0.0, high=1.0)
        check_range("fit.occupancy_opacity", self.occupancy_opacity, low=0.0, high=0.5)
        check_range("fit.background", self.background, low=0.0, high=1.0)
