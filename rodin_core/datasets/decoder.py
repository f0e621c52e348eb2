"""The one loader of the shared decoder fitted in phase A (paper §3.1, appendix B.2), and its companions.

The decoder stage holds one shard: the decoder's weights and config, the mean of phase A's planes
(where phase B starts a new subject) and phase A's planes themselves. Fitting, training, generation
and evaluation all load the decoder through :func:`read_decoder` / :func:`load_decoder`.
"""

from __future__ import annotations

import logging

import safetensors.torch
import torch

from rodin_core.datasets.errors import FitDataError, StageInputError
from rodin_core.datasets.layout import (
    DECODER_CONFIG,
    DECODER_SHARD,
    DECODER_SHARED_PLANES,
    DECODER_STAGE,
    DECODER_WARM_START,
    DECODER_WEIGHTS,
)
from rodin_core.datasets.triplane_records import planes_from_safetensors
from rodin_core.storage import Manifest, StageStore, open_store
from rodin_core.triplane.decoder_io import decoder_from_bytes
from rodin_core.triplane.field import TriplaneDecoder, freeze_decoder

log = logging.getLogger(__name__)


def read_decoder(stage: StageStore, expected_sha256: str | None = None) -> tuple[TriplaneDecoder, str]:
    """The committed decoder of the decoder ``stage``, verified and frozen, and the sha256 of its weights.

    ``expected_sha256``: the weights it must have (a fit planned against one decoder refuses another).
    """
    if not stage.is_committed(DECODER_SHARD):
        raise StageInputError(f"no committed decoder under {stage.uri}; fit the tri-planes first: "
                              f"`rodin fit --renders <renders root> --out {stage.store.uri}`")
    sha256 = stage.read_manifest(DECODER_SHARD).file(DECODER_WEIGHTS).sha256
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise FitDataError(f"the decoder at {stage.uri} changed while fitting (weights sha256 {sha256}, this run "
                           f"planned {expected_sha256}); re-run the flow so that every shard uses the same decoder")
    weights = stage.read_bytes(DECODER_SHARD, DECODER_WEIGHTS)
    config = stage.read_bytes(DECODER_SHARD, DECODER_CONFIG).decode("utf-8")
    return freeze_decoder(decoder_from_bytes(weights, config, source=f"{stage.uri}/{DECODER_SHARD}")), sha256


def load_decoder(out: str, storage_options: dict | None = None) -> tuple[TriplaneDecoder, str]:
    """:func:`read_decoder` of the dataset root ``out``."""
    return read_decoder(open_store(out, storage_options).stage(DECODER_STAGE))


def committed_decoder(stage: StageStore, digest: str) -> Manifest | None:
    """The decoder's manifest when it is committed for config hash ``digest``, else None."""
    if not stage.is_committed(DECODER_SHARD):
        return None
    manifest = stage.read_manifest(DECODER_SHARD)
    if manifest.config_hash != digest:
        log.info("the committed decoder has config %s, not %s: phase A runs again", manifest.config_hash, digest)
        return None
    return manifest


def load_shared_planes(stage: StageStore) -> dict[int, torch.Tensor]:
    """Phase A's planes by subject id (float32 (3, C, H, W)), committed with the decoder ({} if absent)."""
    manifest = stage.read_manifest(DECODER_SHARD)
    if DECODER_SHARED_PLANES not in {f.name for f in manifest.files}:
        return {}
    return {s: p.float() for s, p in planes_from_safetensors(stage.read_bytes(DECODER_SHARD, DECODER_SHARED_PLANES)).items()}


def load_warm_start(stage: StageStore) -> torch.Tensor | None:
    """Phase B's starting planes (3, C, H, W) committed with the decoder; None for a decoder without them."""
    manifest = stage.read_manifest(DECODER_SHARD)
    if DECODER_WARM_START not in {f.name for f in manifest.files}:
        return None
    return safetensors.torch.load(stage.read_bytes(DECODER_SHARD, DECODER_WARM_START))["planes"]

