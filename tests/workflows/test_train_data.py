"""Inputs of the training stages (workflows.train_data): frontals, statistics, decoder, checkpoints, latents.

:func:`make_corpus` writes a small synthetic dataset root the way the render and fit stages
commit theirs (renders with a frontal view, fitted tri-planes with one failed subject, a shared
decoder); the Ray and flow tests of the training stage reuse it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import safetensors.torch
import torch

from render.corpus import VIEWS_SCHEMA, VIEWS_TABLE
from rodin_core.checkpoint import save_checkpoint
from rodin_core.config import RodinConfig, load_config
from rodin_core.datasets.triplanes import FRONTALS_FILE, TriplaneDataset
from rodin_core.fitting.records import RECORDS_SCHEMA
from rodin_core.imaging import decode_png, encode_png
from rodin_core.storage import open_store, shard_id_for
from rodin_core.training.registry import build_stage
from rodin_core.triplane.decoder_io import decoder_to_bytes
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.stats import compute_plane_stats
from workflows import train_data
from workflows.fit_data import (
    DECODER_CONFIG,
    DECODER_SHARD,
    DECODER_WEIGHTS,
    PLANES_FILE,
    RECORDS_FILE,
)
from workflows.train_data import TrainDataError

TINY = [
    "triplane.channels=4", "triplane.resolution=8", "triplane.rescale_min=4", "triplane.decoder.hidden=16",
    "render.resolution=24", "encoder.latent_dim=16", "encoder.image_size=16", "encoder.learned_channels=4",
    "base.unet.model_channels=8", "base.unet.channel_mult=[1]", "base.unet.attention_resolutions=[]",
    "base.unet.aware_resolutions=[4]",
    "base.unet.num_head_channels=8", "base.diffusion.steps=50", "base.diffusion.sampling_steps=5",
    "upsampler.unet.model_channels=8", "upsampler.unet.channel_mult=[1]", "upsampler.unet.attention_resolutions=[]",
    "upsampler.unet.aware_resolutions=[8]", "upsampler.unet.num_head_channels=8", "upsampler.diffusion.steps=50",
    "upsampler.diffusion.sampling_steps=5", "upsampler.patch_size=18",
    "prior.mlp.depth=2", "prior.mlp.width=32", "prior.diffusion.steps=50", "prior.diffusion.sampling_steps=5",
    "base.train.batch_size=4", "upsampler.train.batch_size=2", "prior.train.batch_size=4",
]
"""A training config of a few thousand parameters per network for the synthetic corpus."""
SUBJECTS = list(range(9))
FAILED = 4
"""The subject whose fit failed: it has no planes and must never be trained on."""
FIT_SHARDS = [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
RENDER_SHARDS = [[0, 1, 2, 3, 4], [5, 6, 7, 8]]


def tiny_config(*overrides: str) -> RodinConfig:
    return load_config("tiny", None, [*TINY, *overrides])


def subject_planes(subject_id: int, cfg: RodinConfig) -> torch.Tensor:
    """A smooth, subject-dependent tri-plane (3, C, H, W) with channel-dependent offsets and scales."""
    size, channels = cfg.triplane.resolution, cfg.triplane.channels
    grid = torch.linspace(0, math.pi, size)
    wave = torch.sin(grid[:, None] * (1 + subject_id % 3) + grid[None, :])  # (H, W)
    scales = torch.arange(1, channels + 1, dtype=torch.float32)[:, None, None] * 0.5  # (C, 1, 1)
    offsets = torch.linspace(-1, 1, channels)[:, None, None]  # (C, 1, 1)
    planes = offsets + scales * wave  # (C, H, W)
    return torch.stack([planes, planes.flip(-1), planes.transpose(-1, -2)]) * (1 + 0.1 * subject_id)  # (3, C, H, W)


def frontal_png(subject_id: int, size: int) -> bytes:
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., 0] = (20 * subject_id) % 256
    rgba[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = (200, 100 + subject_id, 50, 255)
    return encode_png(rgba)


def make_corpus(root: Path, cfg: RodinConfig) -> str:
    """Commit renders (views 0 and 1), tri-planes (subject :data:`FAILED` failed) and a decoder under ``root``."""
    store = open_store(str(root))
    size = cfg.render.resolution
    renders = store.stage("renders")
    for index, ids in enumerate(RENDER_SHARDS):
        rows = [{"subject_id": s, "view_index": v, "png": frontal_png(s + 100 * v, size),
                 "c2w": np.eye(4).ravel().tolist(), "intrinsics": np.eye(3).ravel().tolist(), "width": size,
                 "height": size} for s in ids for v in (0, 1)]
        writer = renders.begin(shard_id_for(index))
        writer.write_table(VIEWS_TABLE, pa.Table.from_pylist(rows, schema=VIEWS_SCHEMA))
        writer.commit(ids, "renders-config", extra={"views": 2})
    planes_stage = store.stage("triplanes")
    for index, ids in enumerate(FIT_SHARDS):
        good = [s for s in ids if s != FAILED]
        tensors = {f"subject_{s}": subject_planes(s, cfg).half().contiguous() for s in good}
        records = [{"subject_id": s, "psnr_holdout": 25.0, "psnr_train": 26.0, "steps": 10, "seconds": 1.0,
                    "error": "diverged" if s == FAILED else None} for s in ids]
        writer = planes_stage.begin(shard_id_for(index))
        writer.write_bytes(PLANES_FILE, safetensors.torch.save(tensors))
        writer.write_table(RECORDS_FILE, pa.Table.from_pylist(records, schema=RECORDS_SCHEMA))
        writer.commit(ids, f"planes-{index}")
    decoder = TriplaneDecoder(cfg.triplane.decoder)
    weights, config_json = decoder_to_bytes(decoder)
    writer = store.stage("decoder").begin(DECODER_SHARD)
    writer.write_bytes(DECODER_WEIGHTS, weights)
    writer.write_bytes(DECODER_CONFIG, config_json.encode("utf-8"))
    writer.commit(SUBJECTS[:4], "decoder-config")
    return str(root)


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    return make_corpus(tmp_path / "store", tiny_config())


def test_frontals_are_view_0_aligned_with_the_triplane_shards(corpus: str) -> None:
    pending, current = train_data.plan_frontals(corpus, corpus)
    assert [job.shard_id for job in pending] == ["shard-000000", "shard-000001", "shard-000002"] and current == []
    assert [train_data.extract_frontals_shard(corpus, corpus, job) for job in pending] == [4, 4, 1]
    stage = open_store(corpus).stage("frontals")
    assert stage.committed_shards() == ["shard-000000", "shard-000001", "shard-000002"]
    table = stage.read_table("shard-000001", FRONTALS_FILE).to_pydict()
    assert table["subject_id"] == [4, 5, 6, 7]  # shard 1 spans two renders shards
    assert all(np.array_equal(decode_png(png), decode_png(frontal_png(s, 24)))
               for s, png in zip(table["subject_id"], table["png"], strict=True))
    assert train_data.plan_frontals(corpus, corpus) == ([], ["shard-000000", "shard-000001", "shard-000002"])
    samples = list(TriplaneDataset(corpus, shuffle_buffer=1).iter_epoch(0))
    assert sorted(s.subject_id for s in samples) == [s for s in SUBJECTS if s != FAILED]


def test_frontals_of_missing_renders_name_the_fix(corpus: str, tmp_path: Path) -> None:
    other = make_corpus(tmp_path / "other", tiny_config())
    open_store(other).stage("renders").delete_manifest("shard-000001")
    with pytest.raises(TrainDataError, match=r"subjects \[5, 6, 7\].*rodin render --out"):
        train_data.plan_frontals(other, corpus)
    with pytest.raises(TrainDataError, match=r"no committed tri-planes under .*triplanes; fit them first: `rodin fit"):
        train_data.plan_frontals(corpus, str(tmp_path / "empty"))


def test_stats_are_computed_once_over_the_fitted_subjects(corpus: str, caplog: pytest.LogCaptureFixture) -> None:
    cfg = tiny_config()
    stats, computed = train_data.ensure_stats(corpus)
    expected = compute_plane_stats(subject_planes(s, cfg).half().float() for s in SUBJECTS if s != FAILED)
    assert computed and stats.count == len(SUBJECTS) - 1
    torch.testing.assert_close(stats.mean, expected.mean)
    torch.testing.assert_close(stats.std, expected.std)
    again, computed = train_data.ensure_stats(corpus)
    assert not computed and torch.equal(again.mean, stats.mean)
    open_store(corpus).stage("triplanes").delete_manifest("shard-000002")
    with caplog.at_level("WARNING"):
        kept, computed = train_data.ensure_stats(corpus)
    assert not computed and torch.equal(kept.std, stats.std)
    assert "they are kept" in caplog.text


def commit_base(corpus: str, cfg: RodinConfig, stats, folder: Path) -> None:
    """Commit an untrained base checkpoint of ``cfg`` (its learned encoder makes the latents)."""
    stage = build_stage("base", cfg, stats)
    save_checkpoint(folder, modules=stage.modules, optimizers=stage.optimizers, step=1, config=stage.config())
    train_data.commit_stage_checkpoint(corpus, "base", folder, stage.config(), {"step": 1})


def test_held_out_subjects_stay_out_of_the_stats_and_the_latents(corpus: str, tmp_path: Path) -> None:
    """corpus.holdout_subjects (paper §4.5, appendix C.5): the last ids are never seen by training."""
    cfg = tiny_config("corpus.subjects=9", "corpus.holdout_subjects=2")  # ids 7 and 8 held out
    training = [s for s in SUBJECTS if s not in (FAILED, 7, 8)]
    stats, computed = train_data.ensure_stats(corpus, corpus=cfg.corpus)
    expected = compute_plane_stats(subject_planes(s, cfg).half().float() for s in training)
    assert computed and stats.count == len(training) == 6
    torch.testing.assert_close(stats.mean, expected.mean)
    torch.testing.assert_close(stats.std, expected.std)
    assert open_store(corpus).stage("stats").read_manifest("stats").extra["held_out_from"] == 7
    assert train_data.ensure_stats(corpus, corpus=cfg.corpus)[1] is False

    for job in train_data.plan_frontals(corpus, corpus)[0]:
        train_data.extract_frontals_shard(corpus, corpus, job)
    commit_base(corpus, cfg, stats, tmp_path / "ckpt")
    assert train_data.ensure_latents(cfg, corpus) == (6, True)
    assert train_data.read_latents(corpus)[0].tolist() == training
    fewer = tiny_config("corpus.subjects=9", "corpus.holdout_subjects=1")  # only id 8 held out
    assert train_data.ensure_latents(fewer, corpus) == (7, True)  # another holdout: computed again
    assert train_data.read_latents(corpus)[0].tolist() == sorted([*training, 7])
    assert train_data.ensure_latents(fewer, corpus) == (7, False)

    with pytest.raises(TrainDataError, match=r"computed with subjects from id 7 held out, but the config trains "
                                             r"with subjects from id 8 held out .*manifests/stats.json.*--fresh"):
        train_data.ensure_stats(corpus, corpus=fewer.corpus)
    with pytest.raises(TrainDataError, match=r"trains with no held-out subjects"):
        train_data.ensure_stats(corpus, corpus=tiny_config("corpus.holdout_subjects=0").corpus)


def test_training_digest_names_the_holdout_only_when_there_is_one(corpus: str) -> None:
    shards = train_data.corpus_digest(corpus)
    assert sorted(shards) == ["shard-000000", "shard-000001", "shard-000002"]
    assert train_data.training_digest(corpus) == {"triplanes": shards}  # what stats/latents were hashed over before
    assert train_data.training_digest(corpus, corpus=tiny_config("corpus.holdout_subjects=0").corpus) == {
        "triplanes": shards}
    held = tiny_config("corpus.subjects=9", "corpus.holdout_subjects=2").corpus
    assert train_data.training_digest(corpus, corpus=held) == {"triplanes": shards, "held_out_from": 7}


def test_holdout_must_describe_the_fitted_corpus(corpus: str, caplog: pytest.LogCaptureFixture) -> None:
    short = tiny_config("corpus.subjects=8", "corpus.holdout_subjects=1").corpus  # id 8 is fitted
    with pytest.raises(TrainDataError, match=r"fitted subjects \[8\] at or above corpus.subjects=8.*"
                                             r"--set corpus.subjects=9"):
        train_data.ensure_stats(corpus, corpus=short)
    assert not open_store(corpus).stage("stats").is_committed("stats")
    with caplog.at_level("WARNING"):
        stats, _ = train_data.ensure_stats(corpus, corpus=tiny_config().corpus)  # holds out 14, 15: not fitted
    assert "holds out ids 14..15, none of which is fitted" in caplog.text
    assert stats.count == len(SUBJECTS) - 1


def test_decoder_is_frozen_and_its_absence_named(corpus: str, tmp_path: Path) -> None:
    decoder = train_data.load_decoder(corpus)
    assert not decoder.training and not any(p.requires_grad for p in decoder.parameters())
    with pytest.raises(TrainDataError, match=r"no committed decoder under .*decoder; fit the tri-planes first"):
        train_data.load_decoder(str(tmp_path / "empty"))


def test_checkpoint_commit_keeps_two_attempts_and_reads_back(corpus: str, tmp_path: Path) -> None:
    cfg = tiny_config()
    stats, _ = train_data.ensure_stats(corpus)
    stage = build_stage("base", cfg, stats)
    with pytest.raises(TrainDataError, match=r"no committed base checkpoint .*`rodin train base --out"):
        train_data.read_stage_checkpoint(corpus, "base")
    for step in (1, 2, 3):
        folder = save_checkpoint(tmp_path / f"ckpt-{step}", modules=stage.modules, optimizers=stage.optimizers,
                                 step=step, config=stage.config())
        train_data.commit_stage_checkpoint(corpus, "base", folder, stage.config(), {"step": step})
    checkpoint, manifest = train_data.read_stage_checkpoint(corpus, "base")
    assert checkpoint.step == 3 and manifest.extra["step"] == 3 and train_data.committed_step(corpus, "base") == 3
    assert len(list((Path(corpus) / "checkpoints" / "data" / "base").iterdir())) == 2  # this commit, the one before
    checkpoint.restore(stage.modules, stage.optimizers)


def test_latents_come_from_the_base_encoder_and_are_cached(corpus: str, tmp_path: Path) -> None:
    cfg = tiny_config()
    for job in train_data.plan_frontals(corpus, corpus)[0]:
        train_data.extract_frontals_shard(corpus, corpus, job)
    stats, _ = train_data.ensure_stats(corpus)
    with pytest.raises(TrainDataError, match=r"no committed base checkpoint"):
        train_data.ensure_latents(cfg, corpus)
    stage = build_stage("base", cfg, stats)
    folder = save_checkpoint(tmp_path / "ckpt", modules=stage.modules, optimizers=stage.optimizers, step=1,
                             config=stage.config())
    train_data.commit_stage_checkpoint(corpus, "base", folder, stage.config(), {"step": 1})
    assert train_data.ensure_latents(cfg, corpus) == (len(SUBJECTS) - 1, True)
    assert train_data.ensure_latents(cfg, corpus) == (len(SUBJECTS) - 1, False)
    ids, z = train_data.read_latents(corpus)
    assert ids.tolist() == [s for s in SUBJECTS if s != FAILED] and z.shape == (len(SUBJECTS) - 1, 16)
    frontal = TriplaneDataset(corpus, shuffle_buffer=1)
    first = next(s for s in frontal.iter_epoch(0) if s.subject_id == 0)
    with torch.no_grad():
        torch.testing.assert_close(z[0], stage.modules["encoder_ema"](first.frontal[None])[0])
