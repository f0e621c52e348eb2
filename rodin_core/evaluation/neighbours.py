"""Nearest training subjects of generated samples (paper appendix C.4).

Appendix C.4 shows that the model does not memorise its training set: next to each generated
avatar, the training subjects closest to it. :func:`nearest_neighbours` finds, for every query, the
``k`` closest references under one of :data:`NEIGHBOUR_METRICS`:

- ``psnr``: images (N, 3, H, W) in [0, 1], PSNR in dB with peak 1 (higher is closer; ``inf`` for an
  identical image, which ranks first);
- ``l2``: feature vectors (N, F), Euclidean distance (lower is closer);
- ``cosine``: feature vectors (N, F), 1 − cos(q, r) in [0, 2] (lower is closer; invariant to scale).

The search runs over blocks of at most ``chunk`` queries x ``chunk`` references, so no more than a
``chunk x chunk`` pairwise matrix (and two ``chunk x D`` blocks of rows in float64) exists at once,
keeping a running top-k per query. PSNR and l2 rank through ‖q‖² + ‖r‖² − 2 q·r in float64; the
kept neighbours' squared distances are then recomputed from q − r, so that an exact duplicate
scores exactly 0 (PSNR ``inf``).
:func:`leave_one_out_neighbours` searches a set against itself without each element's own match:
the baseline "training set to itself". :func:`neighbour_sheet` draws rows [query | k nearest].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from rodin_core.imaging import contact_sheet

NEIGHBOUR_METRICS = ("psnr", "l2", "cosine")
"""Metrics of :func:`nearest_neighbours`: ``psnr`` on images, ``l2`` and ``cosine`` on feature vectors."""
BLOCK_ELEMENTS = 2**23
"""Default bound on the values of one block of rows in float64 (64 MiB): ``chunk = BLOCK_ELEMENTS // D``."""
MAX_CHUNK = 1024
"""Largest default ``chunk``, so that the pairwise block stays at most 1024 x 1024."""


@dataclass(frozen=True)
class Neighbours:
    """The ``k`` nearest references of each query, closest first."""

    metric: str
    """One of :data:`NEIGHBOUR_METRICS`."""
    indices: np.ndarray
    """(Q, k) int64 indices into the references."""
    scores: np.ndarray
    """(Q, k) float64: PSNR in dB for ``psnr`` (higher is closer), distances for ``l2`` / ``cosine``."""

    @property
    def higher_is_closer(self) -> bool:
        return self.metric == "psnr"

    @property
    def best_index(self) -> np.ndarray:
        """(Q,) the closest reference of each query."""
        return self.indices[:, 0]

    @property
    def best_score(self) -> np.ndarray:
        """(Q,) the score of the closest reference of each query."""
        return self.scores[:, 0]


def _as_rows(values: ArrayLike | torch.Tensor, metric: str, what: str) -> torch.Tensor:
    """Queries or references as float rows (N, D): images flattened for ``psnr``, features as they are."""
    tensor = values.detach().cpu() if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if metric == "psnr":
        if tensor.dim() != 4 or tensor.shape[1] != 3:
            raise ValueError(f"psnr compares images (N, 3, H, W) in [0, 1]; {what} has shape {tuple(tensor.shape)}")
        low, high = float(tensor.min()), float(tensor.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"psnr needs {what} in [0, 1], got values in [{low:.3g}, {high:.3g}]; divide uint8 by 255")
    elif tensor.dim() != 2:
        raise ValueError(f"{metric} compares feature vectors (N, F); {what} has shape {tuple(tensor.shape)}")
    rows = tensor.reshape(tensor.shape[0], -1)  # (N, D)
    return rows if rows.is_floating_point() else rows.float()


def _squared_norms(rows: torch.Tensor, chunk: int, metric: str, what: str) -> torch.Tensor:
    """(N, D) -> (N,) float64 squared norms, computed ``chunk`` rows at a time."""
    norms = torch.cat([(rows[i:i + chunk].double() ** 2).sum(dim=1) for i in range(0, len(rows), chunk)])
    if metric == "cosine" and bool((norms == 0).any()):
        raise ValueError(f"cosine distance is undefined for zero vectors; {what} has {int((norms == 0).sum())} of them")
    return norms


def _check_search(metric: str, k: int, chunk: int | None, candidates: int) -> None:
    if metric not in NEIGHBOUR_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {NEIGHBOUR_METRICS}")
    for name, value in (("k", k), ("chunk", 1 if chunk is None else chunk)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if k > candidates:
        raise ValueError(f"k={k} neighbours asked of {candidates} candidate references; lower k")


def _search(queries: torch.Tensor, references: torch.Tensor, metric: str, k: int, chunk: int,
            exclude_self: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (Q, D), (R, D) -> (indices (Q, k), ranking distances (Q, k) float64), closest first.

    Ranking distances: squared Euclidean for ``psnr`` / ``l2``, 1 - cos for ``cosine``. The running
    top-k is kept sorted by (distance, index) and merged with each block by a stable sort, so ties go
    to the lower reference index whatever ``chunk`` is.
    """
    squared = metric != "cosine"
    q_norms = _squared_norms(queries, chunk, metric, "queries")  # (Q,)
    r_norms = _squared_norms(references, chunk, metric, "references")  # (R,)
    best_d = torch.empty((len(queries), k), dtype=torch.float64)
    best_i = torch.empty((len(queries), k), dtype=torch.int64)
    for q0 in range(0, len(queries), chunk):
        q = queries[q0:q0 + chunk].double()  # (c, D)
        qn = q_norms[q0:q0 + chunk, None]  # (c, 1)
        block_d = torch.full((len(q), k), math.inf, dtype=torch.float64)  # (c, k) running top-k
        block_i = torch.zeros((len(q), k), dtype=torch.int64)
        for r0 in range(0, len(references), chunk):
            r = references[r0:r0 + chunk].double()  # (c', D)
            rn = r_norms[None, r0:r0 + chunk]  # (1, c')
            dots = q @ r.T  # (c, c')
            d = (qn + rn - 2.0 * dots).clamp_min(0.0) if squared else 1.0 - dots / (qn * rn).sqrt()
            ids = torch.arange(r0, r0 + len(r))  # (c',)
            if exclude_self:
                d = d.masked_fill(torch.arange(q0, q0 + len(q))[:, None] == ids[None, :], math.inf)
            merged_d = torch.cat([block_d, d], dim=1)  # (c, k + c')
            merged_i = torch.cat([block_i, ids.expand(len(q), -1)], dim=1)  # (c, k + c')
            order = merged_d.argsort(dim=1, stable=True)[:, :k]  # (c, k): ties keep the lower index first
            block_d, block_i = merged_d.gather(1, order), merged_i.gather(1, order)
        if squared:  # exact squared distances of the kept neighbours (0 for a duplicate), re-sorted
            block_d = torch.stack([((q[j] - references[block_i[j]].double()) ** 2).sum(dim=1) for j in range(len(q))])
            block_i, order = block_i.sort(dim=1)
            block_d = block_d.gather(1, order)
            block_d, order = block_d.sort(dim=1, stable=True)
            block_i = block_i.gather(1, order)
        best_d[q0:q0 + chunk], best_i[q0:q0 + chunk] = block_d, block_i
    return best_i, best_d


def _neighbours(rows_q: torch.Tensor, rows_r: torch.Tensor, metric: str, k: int, chunk: int | None,
                exclude_self: bool) -> Neighbours:
    chunk = chunk if chunk is not None else max(1, min(MAX_CHUNK, BLOCK_ELEMENTS // max(rows_q.shape[1], 1)))
    indices, distances = _search(rows_q, rows_r, metric, k, chunk, exclude_self)
    if metric == "psnr":
        mse = distances / rows_q.shape[1]  # (Q, k)
        scores = torch.where(mse > 0, -10.0 * torch.log10(mse), torch.full_like(mse, math.inf))
    elif metric == "l2":
        scores = distances.sqrt()
    else:
        scores = distances.clamp(0.0, 2.0)
    return Neighbours(metric, indices.numpy(), scores.numpy())


def nearest_neighbours(queries: ArrayLike | torch.Tensor, references: ArrayLike | torch.Tensor, metric: str = "psnr",
                       k: int = 1, chunk: int | None = None) -> Neighbours:
    """The ``k`` references (R, ...) closest to each of ``queries`` (Q, ...) under ``metric``.

    ``psnr``: images (N, 3, H, W) in [0, 1] of one size; ``l2`` / ``cosine``: features (N, F).
    ``chunk``: rows per block (default :data:`BLOCK_ELEMENTS` // D, at most :data:`MAX_CHUNK`).
    Equally close references are ranked by index, lower first.
    """
    _check_search(metric, k, chunk, len(references))
    rows_q, rows_r = _as_rows(queries, metric, "queries"), _as_rows(references, metric, "references")
    if rows_q.shape[1] != rows_r.shape[1]:
        raise ValueError(f"queries {tuple(np.shape(queries))} and references {tuple(np.shape(references))} differ "
                         "in image size or feature dimension")
    return _neighbours(rows_q, rows_r, metric, k, chunk, exclude_self=False)


def leave_one_out_neighbours(references: ArrayLike | torch.Tensor, metric: str = "psnr", k: int = 1,
                             chunk: int | None = None) -> Neighbours:
    """Each reference's ``k`` nearest among the others (itself excluded; its duplicates are not)."""
    _check_search(metric, k, chunk, len(references) - 1)
    rows = _as_rows(references, metric, "references")
    return _neighbours(rows, rows, metric, k, chunk, exclude_self=True)


def _to_uint8(images: ArrayLike | torch.Tensor, what: str) -> list[np.ndarray]:
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"{what} must be images (N, 3, H, W) in [0, 1], got shape {array.shape}")
    tiles = np.clip(np.rint(array.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)  # (N, H, W, 3)
    return list(tiles)


def _score_label(metric: str, index: int, score: float) -> str:
    if metric == "psnr":
        return f"#{index} {score:.1f}dB" if math.isfinite(score) else f"#{index} identical"
    return f"#{index} {score:.3f}"


def neighbour_sheet(queries: ArrayLike | torch.Tensor, references: ArrayLike | torch.Tensor, result: Neighbours,
                    k: int | None = None, query_labels: Sequence[str] | None = None,
                    reference_ids: Sequence[int] | None = None) -> np.ndarray:
    """Rows [query | its ``k`` nearest references] as one uint8 image (H_s, W_s, 3), for the caller to save.

    ``queries`` (Q, 3, H, W) and ``references`` (R, 3, H, W) in [0, 1] are the images shown (for
    feature metrics, the images the features came from); ``result`` comes from
    :func:`nearest_neighbours` or :func:`leave_one_out_neighbours` on them. Under each neighbour:
    its reference index and score; under each query, ``query_labels`` (default ``query <i>``).
    ``k``: neighbours shown (default all of ``result``'s). ``reference_ids``: the number shown for
    each reference instead of its index (e.g. its subject id).
    """
    k = result.indices.shape[1] if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= result.indices.shape[1]:
        raise ValueError(f"k must be an integer in [1, {result.indices.shape[1]}] (the result's neighbours), got {k!r}")
    query_tiles, reference_tiles = _to_uint8(queries, "queries"), _to_uint8(references, "references")
    if len(query_tiles) != len(result.indices):
        raise ValueError(f"got {len(query_tiles)} query images for a result of {len(result.indices)} queries")
    labels = list(query_labels) if query_labels is not None else [f"query {i}" for i in range(len(query_tiles))]
    if len(labels) != len(query_tiles):
        raise ValueError(f"got {len(labels)} query labels for {len(query_tiles)} queries; give one per query or None")
    ids = list(reference_ids) if reference_ids is not None else list(range(len(reference_tiles)))
    if len(ids) != len(reference_tiles):
        raise ValueError(f"got {len(ids)} reference ids for {len(reference_tiles)} references; give one per reference "
                         "or None")
    tiles, captions = [], []
    for q, (indices, scores) in enumerate(zip(result.indices, result.scores, strict=True)):
        tiles.append(query_tiles[q])
        captions.append(labels[q])
        for index, score in zip(indices[:k], scores[:k], strict=True):
            tiles.append(reference_tiles[int(index)])
            captions.append(_score_label(result.metric, int(ids[int(index)]), float(score)))
    return contact_sheet(tiles, columns=k + 1, labels=captions)
