"""One subject's multi-view images and cameras, the input of tri-plane fitting (paper §3.1, B.2).

A subject is seen from ``V`` calibrated views (view 0 frontal, docs/conventions.md): RGBA images
with straight alpha, OpenCV camera-to-world poses and pinhole intrinsics. Fitting composites the
images onto a uniform grey background (the field is rendered over the same grey), and keeps a few
views out of the optimisation to measure the held-out PSNR that stops it early.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SubjectViews:
    """The calibrated views of one subject, as float32 tensors."""

    subject_id: int
    """Corpus subject id (seeds the fitting of this subject)."""
    images: torch.Tensor
    """(V, H, W, 4) float32 in [0, 1], straight (not premultiplied) alpha."""
    c2w: torch.Tensor
    """(V, 4, 4) float32 OpenCV camera-to-world poses."""
    intrinsics: torch.Tensor
    """(V, 3, 3) float32 pinhole matrices in pixels."""

    @property
    def n_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    @classmethod
    def from_arrays(cls, subject_id: int, images: np.ndarray | torch.Tensor, c2w: np.ndarray | torch.Tensor,
                    intrinsics: np.ndarray | torch.Tensor) -> SubjectViews:
        """Validate and convert arrays; uint8 images are scaled to [0, 1].

        Raises ValueError naming the subject and the offending shape or value when the images are
        not (V, H, W, 4), hold NaN/inf or values outside [0, 1], or the cameras do not match them.
        """
        where = f"subject {subject_id}"
        if isinstance(subject_id, bool) or not isinstance(subject_id, (int, np.integer)) or subject_id < 0:
            raise ValueError(f"subject_id must be a non-negative integer, got {subject_id!r}")
        raw = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if raw.ndim != 4 or raw.shape[-1] != 4 or raw.shape[0] < 1:
            raise ValueError(f"{where}: images must be (V, H, W, 4) RGBA with V >= 1, got shape {raw.shape}; "
                             "pass straight-alpha RGBA renders")
        if raw.dtype == np.uint8:
            pixels = raw.astype(np.float32) / 255.0
        else:
            pixels = raw.astype(np.float32)
            bad = ~np.isfinite(pixels)
            if bad.any():
                view = int(np.argwhere(bad)[0][0])
                raise ValueError(f"{where}: images hold {int(bad.sum())} NaN/inf values (first in view {view}); "
                                 "re-render or drop this subject")
            low, high = float(pixels.min()), float(pixels.max())
            if low < 0.0 or high > 1.0:
                raise ValueError(f"{where}: float images must lie in [0, 1], got range [{low}, {high}]; "
                                 "divide 8-bit values by 255")
        n_views = raw.shape[0]
        poses = _as_float32(c2w, "c2w", where)
        ks = _as_float32(intrinsics, "intrinsics", where)
        if poses.shape != (n_views, 4, 4):
            raise ValueError(f"{where}: c2w must be ({n_views}, 4, 4) to match {n_views} images, got {poses.shape}")
        if ks.shape != (n_views, 3, 3):
            raise ValueError(f"{where}: intrinsics must be ({n_views}, 3, 3) to match {n_views} images, "
                             f"got {ks.shape}")
        if not np.allclose(poses[:, 3], [0.0, 0.0, 0.0, 1.0], atol=1e-5):
            raise ValueError(f"{where}: c2w bottom rows must be [0, 0, 0, 1], got {poses[:, 3].tolist()}")
        if (ks[:, 0, 0] <= 0).any() or (ks[:, 1, 1] <= 0).any():
            raise ValueError(f"{where}: intrinsics need positive focal lengths, got fx={ks[:, 0, 0].tolist()}, "
                             f"fy={ks[:, 1, 1].tolist()}")
        return cls(int(subject_id), torch.from_numpy(np.ascontiguousarray(pixels)),
                   torch.from_numpy(poses), torch.from_numpy(ks))

    def target_rgb(self, background: float) -> torch.Tensor:
        """(V, H, W, 3) colours composited onto a uniform grey ``background`` in [0, 1]."""
        if not 0.0 <= background <= 1.0:
            raise ValueError(f"background must be a grey level in [0, 1], got {background}")
        rgb, alpha = self.images[..., :3], self.images[..., 3:]  # (V, H, W, 3), (V, H, W, 1)
        return rgb * alpha + background * (1.0 - alpha)

    def alpha(self) -> torch.Tensor:
        """(V, H, W) coverage of the subject in each view."""
        return self.images[..., 3]


def _as_float32(value: np.ndarray | torch.Tensor, name: str, where: str) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: {name} holds NaN/inf values; fix the camera export")
    return array


def split_views(n_views: int, holdout: int) -> tuple[list[int], list[int]]:
    """Deterministic (train, held-out) view indices; held-out views are spread evenly, never view 0.

    ``holdout`` views are taken at evenly spaced positions over views 1..V-1 (the rig's Fibonacci
    lattice makes index spacing a spread over the sphere); at least one view is always trained on.
    """
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views must be a positive integer, got {n_views!r}")
    if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 0:
        raise ValueError(f"holdout must be a non-negative integer, got {holdout!r}")
    if holdout > n_views - 2 and holdout > 0:
        raise ValueError(f"cannot hold out {holdout} of {n_views} views: view 0 and at least one more must be "
                         f"trained on; lower fit.holdout_views to at most {max(n_views - 2, 0)}")
    candidates = n_views - 1  # views 1..V-1
    held = sorted({1 + int((k + 0.5) * candidates / holdout) for k in range(holdout)}) if holdout else []
    train = [v for v in range(n_views) if v not in set(held)]
    return train, held
