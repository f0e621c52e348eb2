"""The ``latents/`` stage: z of every training subject, the data of the latent prior (appendix B.4).

Encoded by the trained base's learned encoder (its EMA) or by frozen CLIP, over the training
subjects only (held-out subjects, §4.5, never get a z here). Latents are computed again when the
encoder, the base checkpoint, the tri-plane shards or the held-out subjects change.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import safetensors.torch
import torch
from torch import Tensor, nn

from rodin_core.checkpoint import MODEL_FILE
from rodin_core.config import RodinConfig
from rodin_core.datasets.checkpoints import read_stage_checkpoint
from rodin_core.datasets.errors import TrainDataError
from rodin_core.datasets.layout import (
    LATENTS_FILE,
    LATENTS_SHARD,
    LATENTS_STAGE,
)
from rodin_core.datasets.triplanes import (
    TriplaneDataset,
    collate_samples,
    training_digest,
)
from rodin_core.encoders import build_encoder
from rodin_core.storage import config_hash, open_store
from rodin_core.training.prior import encode_latents

log = logging.getLogger(__name__)


ENCODE_BATCH = 64
"""Frontal views encoded at a time when computing the latents."""


def latent_encoder(cfg: RodinConfig, out: str, storage_options: dict | None = None,
                   device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The frozen encoder whose z the prior learns, and what identifies it (JSON).

    ``encoder.kind = learned``: the EMA of the encoder trained with the committed base checkpoint;
    ``clip``: the frozen CLIP encoder of ``cfg.encoder``. A base model without latent conditioning reads no z,
    so it has no latents to learn.
    """
    if not cfg.base.latent_conditioning:
        raise TrainDataError("base.latent_conditioning is false: the base model is unconditional and reads no z, so "
                             "there is no latent prior to train; set base.latent_conditioning=true, or skip the prior")
    if cfg.encoder.kind != "learned":
        return build_encoder(cfg.encoder, device).eval(), {"encoder": dataclasses.asdict(cfg.encoder)}
    checkpoint, manifest = read_stage_checkpoint(out, "base", storage_options)
    base_cfg = RodinConfig.from_dict(checkpoint.config["rodin"])
    if not base_cfg.base.latent_conditioning:
        raise TrainDataError(f"the committed base checkpoint of {out} was trained without latent conditioning and has "
                             "no encoder, so there are no latents for the prior; retrain the base with "
                             "base.latent_conditioning=true")
    if base_cfg.encoder.kind != "learned" or base_cfg.encoder.latent_dim != cfg.encoder.latent_dim:
        raise TrainDataError(f"the committed base checkpoint of {out} uses encoder.kind={base_cfg.encoder.kind!r}, "
                             f"latent_dim={base_cfg.encoder.latent_dim}; the prior is configured for "
                             f"kind={cfg.encoder.kind!r}, latent_dim={cfg.encoder.latent_dim}. Train the prior with "
                             "the base's encoder settings, or retrain the base")
    encoder = build_encoder(base_cfg.encoder)
    encoder.load_state_dict(checkpoint.module_state("encoder_ema"))
    provenance = {"encoder": dataclasses.asdict(base_cfg.encoder),
                  "base_checkpoint_sha256": manifest.file(MODEL_FILE).sha256}
    return encoder.to(device).eval().requires_grad_(False), provenance


def ensure_latents(cfg: RodinConfig, out: str, storage_options: dict | None = None,
                   device: torch.device | str = "cpu") -> tuple[int, bool]:
    """Commit ``latents/`` (z of every fitted subject) unless current; returns ``(subjects, computed)``.

    Current means committed for the same encoder (and base checkpoint), the same tri-plane shards and the
    same held-out subjects (``cfg.corpus``, §4.5: their z is never computed).
    """
    encoder, provenance = latent_encoder(cfg, out, storage_options, device)
    digest = config_hash({**provenance, **training_digest(out, storage_options, cfg.corpus)})
    stage = open_store(out, storage_options).stage(LATENTS_STAGE)
    if stage.is_committed(LATENTS_SHARD):
        manifest = stage.read_manifest(LATENTS_SHARD)
        if manifest.config_hash == digest:
            return len(manifest.subject_ids), False
    start = time.perf_counter()
    dataset = TriplaneDataset(out, storage_options, shuffle_buffer=1, held_out_from=cfg.corpus.first_held_out)
    samples = dataset.iter_epoch(0)

    def batches():
        while chunk := [s for _, s in zip(range(ENCODE_BATCH), samples)]:
            yield collate_samples(chunk)

    ids, z = encode_latents(encoder, batches(), device)  # (N,), (N, D)
    writer = stage.begin(LATENTS_SHARD)
    writer.write_bytes(LATENTS_FILE, safetensors.torch.save({"subject_ids": ids, "z": z.contiguous()}))
    writer.commit(ids.tolist(), digest, extra={"latent_dim": int(z.shape[1]), **provenance,
                                               "held_out_from": cfg.corpus.first_held_out})
    log.info("latents of %d subjects (D=%d) committed to %s in %.1f s", z.shape[0], z.shape[1], stage.uri,
             time.perf_counter() - start)
    return int(z.shape[0]), True


def read_latents(out: str, storage_options: dict | None = None) -> tuple[Tensor, Tensor]:
    """Subject ids (N,) and latents z (N, D) committed by :func:`ensure_latents`."""
    stage = open_store(out, storage_options).stage(LATENTS_STAGE)
    if not stage.is_committed(LATENTS_SHARD):
        raise TrainDataError(f"no committed latents under {stage.uri}; they are computed when the prior trains: "
                             f"`rodin train prior --out {out}`")
    tensors = safetensors.torch.load(stage.read_bytes(LATENTS_SHARD, LATENTS_FILE))
    return tensors["subject_ids"], tensors["z"]

