"""A tiny fitted corpus on disk (renders, decoder, tri-planes) for the training-data, flow and Ray Train tests."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import safetensors.torch
import torch

from rodin_core.config import RodinConfig, load_config
from rodin_core.datasets.layout import (
    DECODER_CONFIG,
    DECODER_SHARD,
    DECODER_WEIGHTS,
    PLANES_FILE,
    RECORDS_FILE,
    VIEWS_TABLE,
)
from rodin_core.datasets.renders import VIEWS_SCHEMA
from rodin_core.datasets.triplane_records import RECORDS_SCHEMA
from rodin_core.imaging import encode_png
from rodin_core.storage import open_store, shard_id_for
from rodin_core.triplane.decoder_io import decoder_to_bytes
from rodin_core.triplane.field import TriplaneDecoder

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



def add_recipes(out: str, seed: int = 0) -> None:
    """Commit each renders shard again with its subjects' recipes and captions (``subjects.parquet``), as the
    render stage writes them: what caption variants are made from."""
    from render.caption import caption_for
    from render.recipe import sample_recipe
    from rodin_core.datasets.layout import RENDERS_STAGE, SUBJECTS_TABLE
    from rodin_core.datasets.renders import SUBJECTS_SCHEMA

    stage = open_store(out).stage(RENDERS_STAGE)
    for shard in stage.committed_shards():
        manifest = stage.read_manifest(shard)
        views = stage.read_table(shard, VIEWS_TABLE)
        rows = [{"subject_id": r.subject_id, "recipe_json": r.to_json(), "caption": caption_for(r),
                 "render_seconds": 1.0} for r in (sample_recipe(seed, s) for s in manifest.subject_ids)]
        writer = stage.begin(shard)
        writer.write_table(VIEWS_TABLE, views)
        writer.write_table(SUBJECTS_TABLE, pa.Table.from_pylist(rows, schema=SUBJECTS_SCHEMA))
        writer.commit(list(manifest.subject_ids), manifest.config_hash, extra=manifest.extra)
