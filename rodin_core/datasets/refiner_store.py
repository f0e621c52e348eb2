"""The ``refiner/`` stage: the one committed convolutional refiner of a dataset root (paper §3.3, Fig. 8).

One shard, ``refiner``, holding ``refiner.safetensors`` and ``refiner.json``
(:mod:`rodin_core.networks.refiner_io`); a new training commits over it, the newest commit wins.
"""

from __future__ import annotations

from rodin_core.datasets.errors import StageInputError
from rodin_core.datasets.layout import REFINER_SHARD, REFINER_STAGE
from rodin_core.networks.refiner_io import (
    REFINER_JSON,
    REFINER_WEIGHTS,
    TrainedRefiner,
    refiner_from_bytes,
    refiner_to_bytes,
)
from rodin_core.storage import Manifest, config_hash, open_store


def commit_refiner(out: str, refiner: TrainedRefiner, storage_options: dict | None = None) -> Manifest:
    """Commit ``refiner`` as the ``refiner`` shard of ``out``; its manifest's config hash is that of its JSON."""
    tensors, text = refiner_to_bytes(refiner)
    writer = open_store(out, storage_options).stage(REFINER_STAGE).begin(REFINER_SHARD)
    writer.write_bytes(REFINER_WEIGHTS, tensors)
    writer.write_bytes(REFINER_JSON, text.encode("utf-8"))
    return writer.commit([], config_hash({"refiner": text}), extra={"scale": refiner.scale})


def read_refiner(out: str, storage_options: dict | None = None) -> TrainedRefiner:
    """The committed refiner of ``out`` (verified); :class:`StageInputError` naming the command that trains one."""
    stage = open_store(out, storage_options).stage(REFINER_STAGE)
    if not stage.is_committed(REFINER_SHARD):
        raise StageInputError(f"no committed refiner under {stage.uri}; train one: `rodin train refiner --out {out} "
                              "--hr-renders <root of `rodin render --resolution 2x` of the same subjects>`")
    return refiner_from_bytes(stage.read_bytes(REFINER_SHARD, REFINER_WEIGHTS),
                              stage.read_bytes(REFINER_SHARD, REFINER_JSON), source=f"{stage.uri}/{REFINER_SHARD}")
