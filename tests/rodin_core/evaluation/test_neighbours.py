"""Nearest neighbours of generated samples among training subjects (paper appendix C.4): planted
duplicates, ordering against brute force, leave-one-out, chunking, cosine scale invariance, the sheet."""

import math

import numpy as np
import pytest
import torch

from rodin_core.evaluation.neighbours import (
    Neighbours,
    leave_one_out_neighbours,
    nearest_neighbours,
    neighbour_sheet,
)
from rodin_core.imaging import LABEL_HEIGHT
from rodin_core.metrics import psnr

from .synthetic import add_noise, smooth_images


@pytest.fixture(scope="module")
def references() -> torch.Tensor:
    return smooth_images(23, size=16, seed=10)  # (R, 3, 16, 16)


def brute_force_psnr(queries: torch.Tensor, references: torch.Tensor) -> np.ndarray:
    return np.array([[psnr(q.numpy(), r.numpy()) for r in references] for q in queries])  # (Q, R)


def test_a_planted_duplicate_is_found_first_with_infinite_psnr(references: torch.Tensor) -> None:
    queries = smooth_images(4, size=16, seed=11)
    queries[1] = references[13]
    queries[2] = add_noise(references[5], 0.001)
    result = nearest_neighbours(queries, references, "psnr", k=3)
    assert isinstance(result, Neighbours) and result.higher_is_closer
    assert result.indices.shape == result.scores.shape == (4, 3)
    assert result.best_index[1] == 13 and result.best_score[1] == math.inf
    assert np.isfinite(result.scores[1, 1:]).all()
    assert result.best_index[2] == 5 and 50.0 < result.best_score[2] < math.inf


def test_top_k_matches_brute_force_psnr(references: torch.Tensor) -> None:
    queries = smooth_images(5, size=16, seed=12)
    result = nearest_neighbours(queries, references, "psnr", k=4)
    table = brute_force_psnr(queries, references)
    assert np.array_equal(result.indices, np.argsort(-table, axis=1)[:, :4])
    np.testing.assert_allclose(result.scores, np.take_along_axis(table, result.indices, axis=1), rtol=1e-9)
    assert (np.diff(result.scores, axis=1) <= 0).all()


def test_l2_and_cosine_match_brute_force_on_features() -> None:
    generator = torch.Generator().manual_seed(0)
    queries, references = torch.randn(6, 10, generator=generator), torch.randn(30, 10, generator=generator)
    l2 = nearest_neighbours(queries, references, "l2", k=5)
    distances = torch.cdist(queries.double(), references.double()).numpy()  # (Q, R)
    assert not l2.higher_is_closer and np.array_equal(l2.indices, np.argsort(distances, axis=1)[:, :5])
    np.testing.assert_allclose(l2.scores, np.sort(distances, axis=1)[:, :5], rtol=1e-9)
    cosine = nearest_neighbours(queries.numpy(), references.numpy(), "cosine", k=5)
    similarity = torch.nn.functional.cosine_similarity(queries[:, None].double(), references[None].double(), dim=2)
    assert np.array_equal(cosine.indices, np.argsort(-similarity.numpy(), axis=1)[:, :5])
    np.testing.assert_allclose(cosine.scores, 1.0 - np.sort(similarity.numpy(), axis=1)[:, ::-1][:, :5], atol=1e-12)


def test_cosine_is_invariant_to_scale() -> None:
    generator = torch.Generator().manual_seed(1)
    queries, references = torch.randn(7, 12, generator=generator), torch.randn(40, 12, generator=generator)
    scales_q, scales_r = torch.rand(7, 1, generator=generator) * 10 + 0.1, torch.rand(40, 1, generator=generator) + 0.01
    plain = nearest_neighbours(queries, references, "cosine", k=3)
    scaled = nearest_neighbours(queries * scales_q, references * scales_r, "cosine", k=3)
    assert np.array_equal(plain.indices, scaled.indices)
    np.testing.assert_allclose(plain.scores, scaled.scores, atol=1e-12)


def test_leave_one_out_excludes_self_but_not_duplicates(references: torch.Tensor) -> None:
    planted = references.clone()
    planted[9] = planted[3]
    result = leave_one_out_neighbours(planted, "psnr", k=2, chunk=4)
    assert (result.indices != np.arange(len(planted))[:, None]).all()
    assert (result.best_index[3], result.best_index[9]) == (9, 3) and result.best_score[3] == math.inf
    table = brute_force_psnr(planted, planted)
    np.fill_diagonal(table, -math.inf)
    assert np.array_equal(result.indices, np.argsort(-table, axis=1, kind="stable")[:, :2])


def test_equally_close_references_rank_by_index_whatever_the_chunk(references: torch.Tensor) -> None:
    copies = references[[4, 8, 4, 1, 4, 8]]  # (6, 3, H, W): reference 4 at 0, 2, 4; reference 8 at 1, 5
    third = 0 if psnr(references[8].numpy(), references[4].numpy()) > psnr(references[8].numpy(),
                                                                           references[1].numpy()) else 3
    for chunk in (1, 2, 4, 100):
        result = nearest_neighbours(references[[4, 8]], copies, "psnr", k=3, chunk=chunk)
        assert result.indices.tolist() == [[0, 2, 4], [1, 5, third]]


@pytest.mark.parametrize("metric", ["psnr", "l2", "cosine"])
def test_chunked_search_equals_unchunked(metric: str, references: torch.Tensor) -> None:
    data = references if metric == "psnr" else references.flatten(1)[:, :20]
    queries = data[:7] * 0.9 + 0.05
    whole = nearest_neighbours(queries, data, metric, k=4, chunk=1000)
    for chunk in (1, 3, 5):
        chunked = nearest_neighbours(queries, data, metric, k=4, chunk=chunk)
        assert np.array_equal(whole.indices, chunked.indices)
        np.testing.assert_allclose(whole.scores, chunked.scores, rtol=1e-12, atol=1e-12)
    loo = leave_one_out_neighbours(data, metric, k=2, chunk=1000)
    loo_chunked = leave_one_out_neighbours(data, metric, k=2, chunk=4)
    assert np.array_equal(loo.indices, loo_chunked.indices)


def test_bad_inputs_raise_clear_errors(references: torch.Tensor) -> None:
    features = torch.randn(5, 4)
    with pytest.raises(ValueError, match="unknown metric 'ssim'"):
        nearest_neighbours(references, references, "ssim")
    with pytest.raises(ValueError, match="k=24 neighbours asked of 23 candidate references"):
        nearest_neighbours(references, references, "psnr", k=24)
    with pytest.raises(ValueError, match="k=5 neighbours asked of 4"):
        leave_one_out_neighbours(features, "l2", k=5)
    with pytest.raises(ValueError, match="chunk must be a positive integer, got 0"):
        nearest_neighbours(features, features, "l2", chunk=0)
    with pytest.raises(ValueError, match=r"psnr compares images \(N, 3, H, W\)"):
        nearest_neighbours(features, features, "psnr")
    with pytest.raises(ValueError, match=r"l2 compares feature vectors \(N, F\)"):
        nearest_neighbours(references, references, "l2")
    with pytest.raises(ValueError, match="divide uint8 by 255"):
        nearest_neighbours(references * 255, references, "psnr")
    with pytest.raises(ValueError, match="differ in image size or feature dimension"):
        nearest_neighbours(features, torch.randn(5, 3), "l2")
    with pytest.raises(ValueError, match="zero vectors; references has 1"):
        nearest_neighbours(features, torch.cat([features, torch.zeros(1, 4)]), "cosine")


def test_sheet_rows_are_a_query_and_its_neighbours(references: torch.Tensor) -> None:
    queries = references[[2, 7, 11]].clone()
    result = nearest_neighbours(queries, references, "psnr", k=3)
    sheet = neighbour_sheet(queries, references, result, k=2)
    tile = 16 + LABEL_HEIGHT
    assert sheet.shape == (3 * tile, 3 * 16, 3) and sheet.dtype == np.uint8
    as_uint8 = np.clip(np.rint(references.permute(0, 2, 3, 1).numpy() * 255), 0, 255).astype(np.uint8)
    for row, query in enumerate((2, 7, 11)):
        assert np.array_equal(sheet[row * tile:row * tile + 16, :16], as_uint8[query])
        neighbour = result.indices[row, 1]
        assert np.array_equal(sheet[row * tile:row * tile + 16, 32:48], as_uint8[neighbour])
    assert neighbour_sheet(queries, references, result).shape == (3 * tile, 4 * 16, 3)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 3\]"):
        neighbour_sheet(queries, references, result, k=4)
    with pytest.raises(ValueError, match="got 2 query images for a result of 3 queries"):
        neighbour_sheet(queries[:2], references, result)
    ids = list(range(100, 100 + len(references)))
    labelled = neighbour_sheet(queries, references, result, k=1, reference_ids=ids)
    plain = neighbour_sheet(queries, references, result, k=1)
    assert np.array_equal(labelled[:, :16], plain[:, :16]) and not np.array_equal(labelled, plain)  # the labels differ
    with pytest.raises(ValueError, match="got 2 reference ids for 23 references"):
        neighbour_sheet(queries, references, result, reference_ids=[1, 2])
