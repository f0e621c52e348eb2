"""The micro settings of the chaos runs and the faults the tests inject into stores.

The corpus is the smallest the flow tests use: 3 subjects of 4 views at 16 px, one subject per
renders shard; the fit follows ``tests/workflows/test_demo.py``'s micro settings with one subject
per fitting shard (subject 0 fits the decoder), so each stage has three shards to lose or keep.
"""

from __future__ import annotations

from pathlib import Path

from rodin_core.storage import open_store

from ..generation_data import MICRO_NETWORKS

SUBJECTS = 3
RENDER_SETTINGS = ["render.samples=2"]
RENDER_ARGS = ["--subjects", str(SUBJECTS), "--shard-size", "1", "--views", "4", "--resolution", "16",
               *(arg for item in RENDER_SETTINGS for arg in ("--set", item))]
FIT_SETTINGS = [
    "corpus.subjects=3", "render.views=4", "render.resolution=16", "triplane.resolution=8", "triplane.channels=4",
    "triplane.rescale_min=4", "triplane.decoder.hidden=16", "fit.shared_subjects=1", "fit.shared_steps=4",
    "fit.steps=4", "fit.rays_per_step=128", "fit.coarse_samples=8", "fit.fine_samples=8", "fit.eval_every=2",
    "fit.holdout_views=1", "fit.shard_size=1", *MICRO_NETWORKS,
]
FIT_ARGS = [arg for item in FIT_SETTINGS for arg in ("--set", item)]
TRAIN_ARGS = ["--steps", "2", "--workers", "1", "--set", "base.train.batch_size=2", "--set", "base.train.log_every=1"]
"""Two steps of the base model on one Ray Train worker."""
SHARDS = [f"shard-{i:06d}" for i in range(SUBJECTS)]


def data_file(root: Path, stage: str, shard_id: str, name: str) -> Path:
    """The local path of a committed data file of ``stage``."""
    manifest = open_store(str(root)).stage(stage).read_manifest(shard_id)
    return root / stage / manifest.file(name).path


def corrupt(path: Path) -> None:
    """Flip one byte in the middle of ``path`` (its size stays)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    """Cut ``path`` to half its size, as a copy that stopped half-way leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {"corrupted": corrupt, "truncated": truncate}
