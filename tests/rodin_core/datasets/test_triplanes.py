"""TriplaneDataset streams committed tri-plane shards joined with their frontal views (paper §3.2)."""

import itertools
import uuid

import numpy as np
import pyarrow as pa
import pytest
import torch

from rodin_core.datasets.errors import CorruptInputError, DatasetError
from rodin_core.datasets.triplane_records import (
    FitResult,
    planes_to_safetensors,
    records_table,
)
from rodin_core.datasets.triplanes import (
    FRONTALS_SCHEMA,
    TriplaneDataset,
    collate_samples,
    iter_planes,
    subject_ids,
)
from rodin_core.imaging import encode_png
from rodin_core.storage import open_store

SHARDS = {"shard-000000": [0, 1, 2, 3], "shard-000001": [4, 5, 6]}
FAILED = 2
"""Subject whose fit failed: it has a record but no planes."""


def planes_of(subject: int) -> torch.Tensor:
    return torch.full((3, 2, 4, 4), float(subject))  # (3, C, H, W), values identify the subject


def frontal_of(subject: int) -> np.ndarray:
    image = np.zeros((6, 5, 4), np.uint8)  # (Hi, Wi, RGBA)
    image[..., 0] = subject
    image[..., 3] = 255
    return image


def write_corpus(uri: str) -> None:
    store = open_store(uri)
    for shard, subjects in SHARDS.items():
        results = [FitResult(s, planes_of(s), 30.0, 31.0, 10, 0.1, error="NaN loss" if s == FAILED else None)
                   for s in subjects]
        writer = store.stage("triplanes").begin(shard)
        writer.write_bytes("planes.safetensors", planes_to_safetensors(results))
        writer.write_table("records.parquet", records_table(results))
        writer.commit(subjects, "test")
        frontals = pa.Table.from_pylist([{"subject_id": s, "png": encode_png(frontal_of(s))} for s in subjects],
                                        schema=FRONTALS_SCHEMA)
        writer = store.stage("frontals").begin(shard)
        writer.write_table("frontals.parquet", frontals)
        writer.commit(subjects, "test")


@pytest.fixture
def corpus() -> str:
    uri = f"memory://rodin-dataset-{uuid.uuid4().hex}"
    write_corpus(uri)
    return uri


GOOD = [0, 1, 3, 4, 5, 6]


def epoch_ids(dataset: TriplaneDataset, epoch: int = 0) -> list[int]:
    return [s.subject_id for s in dataset.iter_epoch(epoch)]


def test_streams_every_fitted_subject_with_its_planes_and_frontal(corpus: str) -> None:
    samples = list(TriplaneDataset(corpus, shuffle_buffer=2).iter_epoch(0))
    assert sorted(s.subject_id for s in samples) == GOOD
    for sample in samples:
        assert sample.planes.dtype == torch.float32
        assert torch.equal(sample.planes, planes_of(sample.subject_id))
        assert sample.frontal.shape == (4, 6, 5)
        assert sample.frontal[0, 0, 0].item() == pytest.approx(sample.subject_id / 255)
        assert torch.all(sample.frontal[3] == 1.0)


def test_subject_ids_and_iter_planes_skip_the_failed_subject(corpus: str) -> None:
    assert subject_ids(corpus) == GOOD
    assert [s for s, _ in iter_planes(corpus)] == GOOD


def test_same_seed_same_order_and_epochs_reshuffle(corpus: str) -> None:
    a, b = TriplaneDataset(corpus, seed=3, shuffle_buffer=3), TriplaneDataset(corpus, seed=3, shuffle_buffer=3)
    assert epoch_ids(a) == epoch_ids(b)
    orders = {tuple(epoch_ids(a, epoch)) for epoch in range(6)}
    assert len(orders) > 1
    assert all(sorted(order) == GOOD for order in orders)


def test_iteration_is_infinite_over_epochs(corpus: str) -> None:
    ids = [s.subject_id for s in itertools.islice(iter(TriplaneDataset(corpus)), 3 * len(GOOD))]
    assert sorted(ids) == sorted(GOOD * 3)


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_split_is_disjoint_and_complete(corpus: str, world_size: int) -> None:
    """2 ranks split the 2 shards; 3 ranks (more than shards) split the subjects."""
    parts = [epoch_ids(TriplaneDataset(corpus, rank=r, world_size=world_size)) for r in range(world_size)]
    assert all(parts)
    assert sorted(itertools.chain(*parts)) == GOOD


def test_collate_stacks_samples(corpus: str) -> None:
    samples = list(TriplaneDataset(corpus).iter_epoch(0))[:3]
    batch = collate_samples(samples)
    assert batch.subject_ids.tolist() == [s.subject_id for s in samples]
    assert batch.planes.shape == (3, 3, 2, 4, 4) and batch.frontal.shape == (3, 4, 6, 5)
    with pytest.raises(DatasetError, match="at least 1"):
        collate_samples([])


def test_clear_errors_without_triplanes_or_frontals() -> None:
    uri = f"memory://rodin-dataset-{uuid.uuid4().hex}"
    with pytest.raises(DatasetError, match="rodin fit"):
        TriplaneDataset(uri)
    write_corpus(uri)
    open_store(uri).stage("frontals").delete_manifest("shard-000001")
    dataset = TriplaneDataset(uri, rank=1, world_size=2)
    with pytest.raises(DatasetError, match="no committed frontals shard"):
        epoch_ids(dataset)
    with pytest.raises(DatasetError, match="not committed"):
        TriplaneDataset(uri, shard_ids=["shard-000009"])


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_held_out_subjects_are_never_read(corpus: str, world_size: int) -> None:
    """Ids from ``held_out_from`` on (corpus.holdout_subjects, paper §4.5) never reach training."""
    training = [0, 1, 3, 4]  # GOOD below 5
    parts = [epoch_ids(TriplaneDataset(corpus, rank=r, world_size=world_size, held_out_from=5), epoch=e)
             for r in range(world_size) for e in range(2)]
    assert sorted(itertools.chain(*parts)) == sorted(training * 2)
    ids = [s.subject_id for s in itertools.islice(iter(TriplaneDataset(corpus, held_out_from=5)), 20)]
    assert set(ids) == set(training)
    assert subject_ids(corpus, held_out_from=5) == training
    assert [s for s, _ in iter_planes(corpus, held_out_from=5)] == training


def test_shards_of_held_out_subjects_only_leave_the_plan(corpus: str) -> None:
    dataset = TriplaneDataset(corpus, held_out_from=4)  # shard-000001 holds 4, 5, 6: all held out
    assert dataset.shard_ids == ["shard-000000"]
    parts = [epoch_ids(TriplaneDataset(corpus, rank=r, world_size=2, held_out_from=4)) for r in range(2)]
    assert all(parts) and sorted(itertools.chain(*parts)) == [0, 1, 3]
    assert list(iter_planes(corpus, shard_ids=["shard-000001"], held_out_from=4)) == []
    with pytest.raises(DatasetError, match=r"only held-out subjects \(ids >= 0, corpus.holdout_subjects\)"):
        TriplaneDataset(corpus, held_out_from=0)


def commit_planes(uri: str, shard: str, subjects: list[int]) -> None:
    results = [FitResult(s, planes_of(s), 30.0, 31.0, 10, 0.1) for s in subjects]
    writer = open_store(uri).stage("triplanes").begin(shard)
    writer.write_bytes("planes.safetensors", planes_to_safetensors(results))
    writer.write_table("records.parquet", records_table(results))
    writer.commit(subjects, "test")


def test_subjects_in_two_shards_are_refused_naming_the_shards(corpus: str) -> None:
    commit_planes(corpus, "shard-000002", [5, 6])  # shard-000001 holds them too
    message = r"tri-plane shards shard-000001, shard-000002 of .*triplanes hold the same subjects \(5..6\)"
    for read in (lambda: TriplaneDataset(corpus), lambda: subject_ids(corpus), lambda: list(iter_planes(corpus))):
        with pytest.raises(DatasetError, match=message) as caught:
            read()
        assert "\n" not in str(caught.value)


def test_subjects_no_shard_holds_are_refused(corpus: str) -> None:
    commit_planes(corpus, "shard-000002", [9, 10])  # no shard holds 7 and 8
    with pytest.raises(DatasetError, match=r"no committed tri-plane shard of .* holds subjects 7..8 .*rodin fit"):
        TriplaneDataset(corpus)


def test_a_damaged_shard_names_the_file_and_the_refit(corpus: str) -> None:
    stage = open_store(corpus).stage("triplanes")
    entry = stage.read_manifest("shard-000001").file("planes.safetensors")
    path = f"{stage.root}/{entry.path}"
    stage.fs.pipe_file(path, stage.fs.cat_file(path)[:-7])
    command = f"`rodin fit --renders {corpus} --out {corpus} --shards 1`"
    with pytest.raises(CorruptInputError, match=r"shard 'shard-000001'.*planes.safetensors has \d+ bytes") as caught:
        epoch_ids(TriplaneDataset(corpus, rank=1, world_size=2))
    assert str(caught.value).endswith(command) and "\n" not in str(caught.value)
    with pytest.raises(CorruptInputError, match="planes.safetensors"):
        list(iter_planes(corpus))
