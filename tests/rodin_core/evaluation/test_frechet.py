"""The Fréchet distance (Heusel et al. 2017, §3): identity, symmetry, growth with noise, the Gaussian
closed form, the floor of a set against its halves, labels and errors."""

import itertools
import math

import numpy as np
import pytest
import torch

from rodin_core.evaluation.features import VGGFeatures
from rodin_core.evaluation.frechet import (
    FrechetResult,
    frechet_distance,
    frechet_floor,
    frechet_from_moments,
)

from .synthetic import add_noise, smooth_images

SHAPES = [(24, 64), (300, 8)]
"""(samples, dimension): fewer samples than dimensions (the nuclear-norm form), and more (the covariance form)."""


def gaussian(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)) * rng.uniform(0.5, 2.0, size=dim) + shift  # (n, dim)


@pytest.mark.parametrize(("n", "dim"), SHAPES)
def test_a_set_is_at_distance_zero_from_itself_and_the_distance_is_symmetric(n: int, dim: int) -> None:
    a, b = gaussian(n, dim, 0, shift=3.0), gaussian(n + 5, dim, 1)
    trace = np.trace(np.cov(a, rowvar=False))
    assert frechet_distance(a, a, features="f").value <= 1e-6 * trace
    ab, ba = frechet_distance(a, b, features="f"), frechet_distance(b, a, features="f")
    assert ab.value > 1.0 and ab.value == pytest.approx(ba.value, rel=1e-9)
    assert (ab.n_a, ab.n_b, ba.n_a) == (n, n + 5, n + 5)


@pytest.mark.parametrize(("n", "dim"), SHAPES)
def test_both_forms_agree_with_the_moments(n: int, dim: int) -> None:
    a, b = gaussian(n, dim, 2), gaussian(n, dim, 3, shift=0.5)
    moments = frechet_from_moments(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(torch.from_numpy(a).float(), b, features="f").value == pytest.approx(moments, rel=1e-5)


def test_closed_form_for_gaussians_with_diagonal_covariances() -> None:
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)  # 5 + (4 + 1 + 0)
    assert frechet_from_moments(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(expected, rel=1e-12)
    rng = np.random.default_rng(0)
    a = mu_a + rng.normal(size=(20000, 3)) * np.sqrt(var_a)
    b = mu_b + rng.normal(size=(20000, 3)) * np.sqrt(var_b)
    assert frechet_distance(a, b, features="f").value == pytest.approx(expected, rel=0.03)


def test_rank_deficient_covariances_give_a_real_non_negative_distance() -> None:
    v = np.random.default_rng(0).normal(size=(6, 2))
    sigma = v @ v.T  # (6, 6), rank 2: rounding makes some eigenvalues negative
    value = frechet_from_moments(np.zeros(6), sigma, np.zeros(6), sigma)
    assert isinstance(value, float) and 0.0 <= value <= 1e-9 * np.trace(sigma)


def test_distance_grows_with_noise_added_to_the_features() -> None:
    a = gaussian(200, 16, 4)
    noise = np.random.default_rng(5).normal(size=a.shape)
    values = [frechet_distance(a, a + std * noise, features="f").value for std in (0.0, 0.1, 0.3, 1.0, 3.0)]
    assert abs(values[0]) < 1e-9 and all(x < y for x, y in itertools.pairwise(values))  # 0 up to float64 rounding


def test_distance_grows_with_noise_added_to_the_images(vgg: VGGFeatures) -> None:
    images = smooth_images(24)
    clean = vgg(images)
    values = [frechet_distance(clean, vgg(add_noise(images, std)), features=vgg.name).value
              for std in (0.03, 0.1, 0.3)]
    assert 0.0 < values[0] < values[1] < values[2]


def test_floor_compares_two_seeded_random_halves() -> None:
    a = gaussian(41, 4, 6)
    floor = frechet_floor(a, features="f", seed=7)
    assert (floor.n_a, floor.n_b) == (20, 20) and floor.value > 0.0
    assert floor == frechet_floor(a, features="f", seed=np.random.default_rng(7))
    assert floor.value != frechet_floor(a, features="f", seed=8).value
    far = frechet_distance(a, gaussian(41, 4, 9, shift=2.0), features="f")
    assert floor.value < far.value


def test_a_grouped_floor_keeps_each_group_on_one_side() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(20, 6)) * 3.0  # 20 subjects
    views = np.repeat(centres, 5, axis=0) + 0.1 * rng.normal(size=(100, 6))  # 5 close views of each
    groups = np.repeat(np.arange(20), 5)
    by_row = frechet_floor(views, features="f", seed=1)
    by_subject = frechet_floor(views, features="f", seed=1, groups=groups)
    assert (by_subject.n_a, by_subject.n_b) == (50, 50)
    # split row by row, both halves hold views of all 20 subjects; split by subject, 10 heads face 10 others
    assert by_row.value < 0.2 * by_subject.value
    odd = frechet_floor(views[:95], features="f", seed=1, groups=groups[:95])  # 19 groups: one left out
    assert (odd.n_a, odd.n_b) == (45, 45)
    assert by_subject == frechet_floor(views, features="f", seed=1, groups=groups.tolist())


def test_a_floor_over_several_splits_is_the_mean_of_those_splits() -> None:
    a = gaussian(40, 6, 2)
    rng = np.random.default_rng(5)
    one_by_one = [frechet_floor(a, features="f", seed=rng).value for _ in range(3)]  # the same stream of splits
    floor = frechet_floor(a, features="f", seed=5, splits=3)
    assert floor.value == pytest.approx(float(np.mean(one_by_one)), rel=1e-12)
    assert len(set(one_by_one)) == 3 and (floor.n_a, floor.n_b) == (20, 20)
    with pytest.raises(ValueError, match=r"^frechet_floor needs a positive integer number of splits, got 0$"):
        frechet_floor(a, features="f", splits=0)


def test_a_floor_needs_one_group_id_per_row_and_two_rows_a_side() -> None:
    a = gaussian(12, 3, 0)
    with pytest.raises(ValueError, match=r"^frechet_floor got 6 group ids for 12 feature rows; give one per row$"):
        frechet_floor(a, features="f", groups=np.arange(6))
    with pytest.raises(ValueError, match=r"two halves of at least 2 samples, got 12 samples in 3 groups$"):
        frechet_floor(a, features="f", groups=[0] * 10 + [1, 2])


def test_labels_say_which_features_were_used() -> None:
    assert FrechetResult(1.0, 2, 2, "vgg16-stlpips").label == "Fréchet distance on vgg16-stlpips"
    assert FrechetResult(1.0, 2, 2, "clip:ViT-B-32:openai").label == "CLIP-FID"
    assert FrechetResult(1.0, 2, 2, "clip:ViT-B-32:random").label == "Fréchet distance on clip:ViT-B-32:random"
    assert FrechetResult(1.0, 2, 2, "inception-v3").label == "FID"
    assert FrechetResult(1.5, 3, 4, "f").to_dict() == {
        "label": "Fréchet distance on f", "value": 1.5, "n_a": 3, "n_b": 4, "features": "f"}


def test_bad_inputs_raise_clear_errors() -> None:
    a = gaussian(10, 4, 0)
    with pytest.raises(ValueError, match=r"differ in dimension: a is \(10, 4\), b is \(10, 5\)"):
        frechet_distance(a, gaussian(10, 5, 1), features="f")
    with pytest.raises(ValueError, match="at least 2 samples per set, got 10 and 1"):
        frechet_distance(a, a[:1], features="f")
    with pytest.raises(ValueError, match=r"matrix \(N, F\).*\(4,\)"):
        frechet_distance(a[0], a, features="f")
    bad = a.copy()
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match="1 non-finite values"):
        frechet_distance(a, bad, features="f")
    with pytest.raises(ValueError, match="two halves of at least 2 samples, got 3"):
        frechet_floor(a[:3], features="f")
    with pytest.raises(ValueError, match="means"):
        frechet_from_moments(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
