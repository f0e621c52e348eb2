"""SubjectViews validation, view splitting and background compositing (paper §3.1, B.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rodin_core.triplane.subject import SubjectViews, split_views


def _arrays(views: int = 5, size: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(views, size, size, 4), dtype=np.uint8)
    c2w = np.tile(np.eye(4), (views, 1, 1))
    c2w[:, :3, 3] = [0.0, -4.0, 0.0]
    k = np.tile(np.array([[10.0, 0, size / 2], [0, 10.0, size / 2], [0, 0, 1]]), (views, 1, 1))
    return images, c2w, k


def test_from_arrays_scales_uint8_and_keeps_shapes() -> None:
    images, c2w, k = _arrays()
    subject = SubjectViews.from_arrays(7, images, c2w, k)
    assert subject.subject_id == 7 and subject.n_views == 5 and (subject.height, subject.width) == (6, 6)
    assert subject.images.dtype == torch.float32 and subject.c2w.shape == (5, 4, 4)
    np.testing.assert_allclose(subject.images.numpy(), images / 255.0, atol=1e-7)


@pytest.mark.parametrize("change, message", [
    (lambda i, c, k: (i[..., :3], c, k), r"\(V, H, W, 4\)"),
    (lambda i, c, k: (np.where(i > 200, np.nan, i / 255.0), c, k), "NaN"),
    (lambda i, c, k: (i / 100.0, c, k), r"\[0, 1\]"),
    (lambda i, c, k: (i, c[:-1], k), r"c2w must be \(5, 4, 4\)"),
    (lambda i, c, k: (i, c, k[:, :2]), r"intrinsics must be \(5, 3, 3\)"),
    (lambda i, c, k: (i, c * 2.0, k), "bottom rows"),
    (lambda i, c, k: (i, c, -k), "positive focal"),
])
def test_from_arrays_rejects_bad_data_with_the_offending_value(change, message) -> None:
    images, c2w, k = change(*_arrays())
    with pytest.raises(ValueError, match=message) as info:
        SubjectViews.from_arrays(3, images, c2w, k)
    assert "subject 3" in str(info.value)


def test_target_rgb_composites_straight_alpha_onto_grey() -> None:
    images = np.zeros((1, 1, 3, 4), np.float32)
    images[0, 0, 0] = [1.0, 0.0, 0.0, 1.0]  # opaque red
    images[0, 0, 1] = [1.0, 0.0, 0.0, 0.0]  # transparent: background only
    images[0, 0, 2] = [0.0, 1.0, 0.0, 0.5]  # half-covered green
    subject = SubjectViews.from_arrays(0, images, np.eye(4)[None], np.eye(3)[None])
    rgb = subject.target_rgb(0.5)[0, 0].numpy()
    np.testing.assert_allclose(rgb, [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.25, 0.75, 0.25]])
    with pytest.raises(ValueError, match="background"):
        subject.target_rgb(2.0)


@pytest.mark.parametrize("views, holdout", [(32, 4), (10, 3), (5, 3), (300, 8), (3, 1), (4, 0)])
def test_split_views_is_a_deterministic_even_partition_without_view_0(views: int, holdout: int) -> None:
    train, held = split_views(views, holdout)
    assert (train, held) == split_views(views, holdout)
    assert len(held) == holdout and 0 not in held and 0 in train
    assert sorted(train + held) == list(range(views))
    if holdout >= 2:
        gaps = np.diff(held)
        assert gaps.max() - gaps.min() <= 1  # evenly spread over views 1..V-1
        assert held[-1] - held[0] >= (views - 1) * (holdout - 1) / holdout - 1


def test_split_views_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError, match="at most 3"):
        split_views(5, 4)
    with pytest.raises(ValueError, match="n_views"):
        split_views(0, 0)
