"""Inputs of the training stages (rodin_core.datasets.training_inputs): frontals, statistics, decoder, checkpoints, latents.

:func:`make_corpus` writes a small synthetic dataset root the way the render and fit stages
commit theirs (renders with a frontal view, fitted tri-planes with one failed subject, a shared
decoder); the Ray and flow tests of the training stage reuse it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rodin_core.checkpoint import save_checkpoint
from rodin_core.config import RodinConfig
from rodin_core.datasets.checkpoints import commit_stage_checkpoint, committed_step, read_stage_checkpoint
from rodin_core.datasets.decoder import load_decoder
from rodin_core.datasets.errors import StageInputError, TrainDataError
from rodin_core.datasets.frontals import extract_frontals_shard, plan_frontals
from rodin_core.datasets.layout import (
    FRONTALS_FILE,
)
from rodin_core.datasets.plane_stats import ensure_stats
from rodin_core.datasets.triplanes import TriplaneDataset, corpus_digest, training_digest
from rodin_core.imaging import decode_png
from rodin_core.storage import open_store
from rodin_core.training.latents import ensure_latents, read_latents
from rodin_core.training.registry import build_stage
from rodin_core.triplane.stats import compute_plane_stats

from ...training_corpus import (
    FAILED,
    SUBJECTS,
    frontal_png,
    make_corpus,
    subject_planes,
    tiny_config,
)


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    return make_corpus(tmp_path / "store", tiny_config())


def test_frontals_are_view_0_aligned_with_the_triplane_shards(corpus: str) -> None:
    pending, current = plan_frontals(corpus, corpus)
    assert [job.shard_id for job in pending] == ["shard-000000", "shard-000001", "shard-000002"] and current == []
    assert [extract_frontals_shard(corpus, corpus, job) for job in pending] == [4, 4, 1]
    stage = open_store(corpus).stage("frontals")
    assert stage.committed_shards() == ["shard-000000", "shard-000001", "shard-000002"]
    table = stage.read_table("shard-000001", FRONTALS_FILE).to_pydict()
    assert table["subject_id"] == [4, 5, 6, 7]  # shard 1 spans two renders shards
    assert all(np.array_equal(decode_png(png), decode_png(frontal_png(s, 24)))
               for s, png in zip(table["subject_id"], table["png"], strict=True))
    assert plan_frontals(corpus, corpus) == ([], ["shard-000000", "shard-000001", "shard-000002"])
    samples = list(TriplaneDataset(corpus, shuffle_buffer=1).iter_epoch(0))
    assert sorted(s.subject_id for s in samples) == [s for s in SUBJECTS if s != FAILED]


def test_frontals_of_missing_renders_name_the_fix(corpus: str, tmp_path: Path) -> None:
    other = make_corpus(tmp_path / "other", tiny_config())
    open_store(other).stage("renders").delete_manifest("shard-000001")
    with pytest.raises(TrainDataError, match=r"subjects \[5, 6, 7\].*rodin render --out"):
        plan_frontals(other, corpus)
    with pytest.raises(TrainDataError, match=r"no committed tri-planes under .*triplanes; fit them first: `rodin fit"):
        plan_frontals(corpus, str(tmp_path / "empty"))


def test_stats_are_computed_once_over_the_fitted_subjects(corpus: str, caplog: pytest.LogCaptureFixture) -> None:
    cfg = tiny_config()
    stats, computed = ensure_stats(corpus)
    expected = compute_plane_stats(subject_planes(s, cfg).half().float() for s in SUBJECTS if s != FAILED)
    assert computed and stats.count == len(SUBJECTS) - 1
    torch.testing.assert_close(stats.mean, expected.mean)
    torch.testing.assert_close(stats.std, expected.std)
    again, computed = ensure_stats(corpus)
    assert not computed and torch.equal(again.mean, stats.mean)
    open_store(corpus).stage("triplanes").delete_manifest("shard-000002")
    with caplog.at_level("WARNING"):
        kept, computed = ensure_stats(corpus)
    assert not computed and torch.equal(kept.std, stats.std)
    assert "they are kept" in caplog.text


def commit_base(corpus: str, cfg: RodinConfig, stats, folder: Path) -> None:
    """Commit an untrained base checkpoint of ``cfg`` (its learned encoder makes the latents)."""
    stage = build_stage("base", cfg, stats)
    save_checkpoint(folder, modules=stage.modules, optimizers=stage.optimizers, step=1, config=stage.config())
    commit_stage_checkpoint(corpus, "base", folder, stage.config(), {"step": 1})


def test_held_out_subjects_stay_out_of_the_stats_and_the_latents(corpus: str, tmp_path: Path) -> None:
    """corpus.holdout_subjects (paper §4.5, appendix C.5): the last ids are never seen by training."""
    cfg = tiny_config("corpus.subjects=9", "corpus.holdout_subjects=2")  # ids 7 and 8 held out
    training = [s for s in SUBJECTS if s not in (FAILED, 7, 8)]
    stats, computed = ensure_stats(corpus, corpus=cfg.corpus)
    expected = compute_plane_stats(subject_planes(s, cfg).half().float() for s in training)
    assert computed and stats.count == len(training) == 6
    torch.testing.assert_close(stats.mean, expected.mean)
    torch.testing.assert_close(stats.std, expected.std)
    assert open_store(corpus).stage("stats").read_manifest("stats").extra["held_out_from"] == 7
    assert ensure_stats(corpus, corpus=cfg.corpus)[1] is False

    for job in plan_frontals(corpus, corpus)[0]:
        extract_frontals_shard(corpus, corpus, job)
    commit_base(corpus, cfg, stats, tmp_path / "ckpt")
    assert ensure_latents(cfg, corpus) == (6, True)
    assert read_latents(corpus)[0].tolist() == training
    fewer = tiny_config("corpus.subjects=9", "corpus.holdout_subjects=1")  # only id 8 held out
    assert ensure_latents(fewer, corpus) == (7, True)  # another holdout: computed again
    assert read_latents(corpus)[0].tolist() == sorted([*training, 7])
    assert ensure_latents(fewer, corpus) == (7, False)

    with pytest.raises(TrainDataError, match=r"computed with subjects from id 7 held out, but the config trains "
                                             r"with subjects from id 8 held out .*manifests/stats.json.*--fresh"):
        ensure_stats(corpus, corpus=fewer.corpus)
    with pytest.raises(TrainDataError, match=r"trains with no held-out subjects"):
        ensure_stats(corpus, corpus=tiny_config("corpus.holdout_subjects=0").corpus)


def test_training_digest_names_the_holdout_only_when_there_is_one(corpus: str) -> None:
    shards = corpus_digest(corpus)
    assert sorted(shards) == ["shard-000000", "shard-000001", "shard-000002"]
    assert training_digest(corpus) == {"triplanes": shards}  # what stats/latents were hashed over before
    assert training_digest(corpus, corpus=tiny_config("corpus.holdout_subjects=0").corpus) == {
        "triplanes": shards}
    held = tiny_config("corpus.subjects=9", "corpus.holdout_subjects=2").corpus
    assert training_digest(corpus, corpus=held) == {"triplanes": shards, "held_out_from": 7}


def test_holdout_must_describe_the_fitted_corpus(corpus: str, caplog: pytest.LogCaptureFixture) -> None:
    short = tiny_config("corpus.subjects=8", "corpus.holdout_subjects=1").corpus  # id 8 is fitted
    with pytest.raises(TrainDataError, match=r"fitted subjects \[8\] at or above corpus.subjects=8.*"
                                             r"--set corpus.subjects=9"):
        ensure_stats(corpus, corpus=short)
    assert not open_store(corpus).stage("stats").is_committed("stats")
    with caplog.at_level("WARNING"):
        stats, _ = ensure_stats(corpus, corpus=tiny_config().corpus)  # holds out 14, 15: not fitted
    assert "holds out ids 14..15, none of which is fitted" in caplog.text
    assert stats.count == len(SUBJECTS) - 1


def test_decoder_is_frozen_and_its_absence_named(corpus: str, tmp_path: Path) -> None:
    decoder, _ = load_decoder(corpus)
    assert not decoder.training and not any(p.requires_grad for p in decoder.parameters())
    with pytest.raises(StageInputError, match=r"no committed decoder under .*decoder; fit the tri-planes first"):
        load_decoder(str(tmp_path / "empty"))


def test_checkpoint_commit_keeps_two_attempts_and_reads_back(corpus: str, tmp_path: Path) -> None:
    cfg = tiny_config()
    stats, _ = ensure_stats(corpus)
    stage = build_stage("base", cfg, stats)
    with pytest.raises(TrainDataError, match=r"no committed base checkpoint .*`rodin train base --out"):
        read_stage_checkpoint(corpus, "base")
    for step in (1, 2, 3):
        folder = save_checkpoint(tmp_path / f"ckpt-{step}", modules=stage.modules, optimizers=stage.optimizers,
                                 step=step, config=stage.config())
        commit_stage_checkpoint(corpus, "base", folder, stage.config(), {"step": step})
    checkpoint, manifest = read_stage_checkpoint(corpus, "base")
    assert checkpoint.step == 3 and manifest.extra["step"] == 3 and committed_step(corpus, "base") == 3
    assert len(list((Path(corpus) / "checkpoints" / "data" / "base").iterdir())) == 2  # this commit, the one before
    checkpoint.restore(stage.modules, stage.optimizers)


def test_latents_come_from_the_base_encoder_and_are_cached(corpus: str, tmp_path: Path) -> None:
    cfg = tiny_config()
    for job in plan_frontals(corpus, corpus)[0]:
        extract_frontals_shard(corpus, corpus, job)
    stats, _ = ensure_stats(corpus)
    with pytest.raises(TrainDataError, match=r"no committed base checkpoint"):
        ensure_latents(cfg, corpus)
    stage = build_stage("base", cfg, stats)
    folder = save_checkpoint(tmp_path / "ckpt", modules=stage.modules, optimizers=stage.optimizers, step=1,
                             config=stage.config())
    commit_stage_checkpoint(corpus, "base", folder, stage.config(), {"step": 1})
    assert ensure_latents(cfg, corpus) == (len(SUBJECTS) - 1, True)
    assert ensure_latents(cfg, corpus) == (len(SUBJECTS) - 1, False)
    ids, z = read_latents(corpus)
    assert ids.tolist() == [s for s in SUBJECTS if s != FAILED] and z.shape == (len(SUBJECTS) - 1, 16)
    frontal = TriplaneDataset(corpus, shuffle_buffer=1)
    first = next(s for s in frontal.iter_epoch(0) if s.subject_id == 0)
    with torch.no_grad():
        torch.testing.assert_close(z[0], stage.modules["encoder_ema"](first.frontal[None])[0])
