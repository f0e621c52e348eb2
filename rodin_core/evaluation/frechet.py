"""Fréchet distance between two sets of image features (Heusel et al. 2017, §3; paper §4.3).

Heusel et al. ("GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", 2017, §3) fit a Gaussian to each set of features and take the Fréchet (2-Wasserstein)
distance between the two Gaussians:

    d² = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})

On Inception features this is the FID; on CLIP image embeddings it is CLIP-FID (Kynkäänniemi et
al. 2023), the paper's §4.3 metric. On other features (``vgg16-stlpips``) the value is
reported as "Fréchet distance on <features>", never as FID: numbers on different features are not
comparable.

Everything is computed in float64. The trace of the matrix square root is computed without
forming it: Σ_a Σ_b has the same eigenvalues as the symmetric positive semi-definite
Σ_a^{1/2} Σ_b Σ_a^{1/2}, so Tr (Σ_a Σ_b)^{1/2} is the sum of the square roots of that matrix's
eigenvalues. When the sets are smaller than the feature dimension the same eigenvalues are the
squared singular values of A_aᵀ A_b (A: the centred features over sqrt(n − 1)), an n_a x n_b matrix,
and the trace is its nuclear norm. Either way there is no complex arithmetic (a general ``sqrtm``
returns an imaginary part from rounding); eigenvalues that rounding makes slightly negative are set
to 0, and a distance that rounding makes slightly negative is returned as 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class FrechetResult:
    """A Fréchet distance between two feature sets and what it was computed on."""

    value: float
    """d², in squared feature units (lower is closer; 0 for identical statistics)."""
    n_a: int
    """Samples of the first set."""
    n_b: int
    """Samples of the second set."""
    features: str
    """Name of the features (e.g. ``vgg16-stlpips``, ``clip:ViT-B-32:openai``)."""

    @property
    def label(self) -> str:
        """``CLIP-FID`` on pretrained CLIP features, ``FID`` on Inception's, else ``Fréchet distance on <features>``."""
        if self.features.startswith("clip:") and not self.features.endswith(":random"):
            return "CLIP-FID"
        if self.features.startswith("inception"):
            return "FID"
        return f"Fréchet distance on {self.features}"

    def to_dict(self) -> dict[str, float | int | str]:
        return {"label": self.label, "value": self.value, "n_a": self.n_a, "n_b": self.n_b, "features": self.features}


def as_features(features: ArrayLike | torch.Tensor, what: str = "features") -> np.ndarray:
    """``features`` (N, F), numpy or torch, as float64 numpy; a ValueError for another shape or non-finite values."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a matrix (N, F) of N feature vectors, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} holds {int((~np.isfinite(array)).sum())} non-finite values; check the images")
    return array


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; rounding's negative eigenvalues become 0."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_from_moments(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray) -> float:
    """d² between the Gaussians N(mu_a (F,), sigma_a (F, F)) and N(mu_b, sigma_b), in float64."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    dim = mu_a.shape[0]
    if mu_a.shape != (dim,) or mu_b.shape != (dim,) or sigma_a.shape != (dim, dim) or sigma_b.shape != (dim, dim):
        raise ValueError(f"moments must be means (F,) and covariances (F, F) of one F, got {mu_a.shape}, "
                         f"{sigma_a.shape}, {mu_b.shape}, {sigma_b.shape}")
    root_a = _sqrt_psd((sigma_a + sigma_a.T) / 2)
    inner = root_a @ sigma_b @ root_a  # (F, F), symmetric PSD with the eigenvalues of Σ_a Σ_b
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    trace_root = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    return _finish(float(np.sum((mu_a - mu_b) ** 2)), float(np.trace(sigma_a) + np.trace(sigma_b)), trace_root)


def frechet_distance(a: ArrayLike | torch.Tensor, b: ArrayLike | torch.Tensor, *, features: str) -> FrechetResult:
    """Fréchet distance between feature sets ``a`` (N_a, F) and ``b`` (N_b, F), each of at least 2 samples.

    ``features`` names what ``a`` and ``b`` are (an extractor's ``name``), for the result's label.
    """
    a, b = as_features(a, "a"), as_features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in dimension: a is {a.shape}, b is {b.shape}; use one extractor")
    if min(len(a), len(b)) < 2:
        raise ValueError(f"a covariance needs at least 2 samples per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)  # (F,)
    if len(a) * len(b) <= a.shape[1] ** 2:
        centred_a = (a - mu_a) / np.sqrt(len(a) - 1)  # (N_a, F): Σ_a = centred_aᵀ centred_a
        centred_b = (b - mu_b) / np.sqrt(len(b) - 1)  # (N_b, F)
        singular = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False)  # (min(N_a, N_b),)
        trace_root = float(singular.sum())
        traces = float((centred_a**2).sum() + (centred_b**2).sum())
        value = _finish(float(np.sum((mu_a - mu_b) ** 2)), traces, trace_root)
    else:
        value = frechet_from_moments(mu_a, np.cov(a, rowvar=False), mu_b, np.cov(b, rowvar=False))
    return FrechetResult(value, len(a), len(b), features)


def frechet_floor(values: ArrayLike | torch.Tensor, *, features: str, seed: int | np.random.Generator = 0,
                  groups: ArrayLike | None = None, splits: int = 1) -> FrechetResult:
    """Fréchet distance between two random disjoint halves of one feature set ``values`` (N, F), N >= 4.

    The value a set of this size reaches against its own distribution: a sample set cannot be
    expected to come closer to the training set than the training set's halves are to each other
    (and, with half the samples, this floor is itself biased upwards). ``groups`` (N,) keeps the rows
    of one group together: with the renders of K subjects at V views each, ``np.repeat(range(K), V)``
    splits the subjects into two halves, so that no subject is seen on both sides (split row by row,
    the other views of the same subjects sit on the other side). Without groups every row is its own.
    With an odd count one group is left out. ``seed`` (or a generator) draws the split; with
    ``splits`` > 1 the value is the mean over that many splits drawn one after the other (one split
    of a few hundred renders in hundreds of feature dimensions varies several-fold from draw to draw).
    """
    array = as_features(values)
    ids = np.arange(len(array)) if groups is None else np.asarray(groups).reshape(-1)
    if len(ids) != len(array):
        raise ValueError(f"frechet_floor got {len(ids)} group ids for {len(array)} feature rows; give one per row")
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ValueError(f"frechet_floor needs a positive integer number of splits, got {splits!r}")
    unique = np.unique(ids)
    rng = np.random.default_rng(seed)
    half = len(unique) // 2
    results = []
    for _ in range(splits):
        order = rng.permutation(len(unique))
        side_a, side_b = np.isin(ids, unique[order[:half]]), np.isin(ids, unique[order[half:2 * half]])
        if min(side_a.sum(), side_b.sum()) < 2:
            raise ValueError(f"frechet_floor splits the set into two halves of at least 2 samples, got {len(array)} "
                             f"samples in {len(unique)} groups")
        results.append(frechet_distance(array[side_a], array[side_b], features=features))
    return FrechetResult(float(np.mean([r.value for r in results])), results[0].n_a, results[0].n_b, features)


def _finish(mean_term: float, traces: float, trace_root: float) -> float:
    """‖μ_a − μ_b‖² + Tr Σ_a + Tr Σ_b − 2 Tr (Σ_a Σ_b)^{1/2}, rounding below 0 returned as 0."""
    return max(mean_term + traces - 2.0 * trace_root, 0.0)
