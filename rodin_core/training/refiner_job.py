"""Training the refiner of a dataset root and committing it (paper §3.3, Fig. 8): what ``rodin train refiner`` runs.

Reads the fitted tri-planes and decoder of ``out``, the corpus they were fitted to and the same
subjects rendered at 2x or 4x (``high``); renders the fitted planes from the high-resolution
cameras, trains a :class:`~rodin_core.networks.refiner.ConvRefiner` on the training subjects and
commits it under ``out/refiner/``. The last ``holdout_subjects`` fitted subjects and the corpus's
held-out ones are never trained on (``benchmarks/refiner_eval.py`` measures the refiner on them);
rendering at 2x costs 4x, so ``high`` may hold only some subjects: training uses those it holds.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from rodin_core.config import RodinConfig
from rodin_core.datasets.decoder import load_decoder
from rodin_core.datasets.integrity import id_ranges
from rodin_core.datasets.refiner_pairs import (
    RefinerDataError,
    concat_pairs,
    high_resolution_subjects,
    iter_pairs,
)
from rodin_core.datasets.refiner_store import commit_refiner
from rodin_core.datasets.triplanes import iter_planes
from rodin_core.generation.job import render_settings
from rodin_core.networks.perceptual import PerceptualLoss
from rodin_core.networks.refiner import ConvRefiner, RefinerConfig
from rodin_core.networks.refiner_io import TrainedRefiner
from rodin_core.training.refiner import RefinerTrainConfig, check_patch, train_refiner

log = logging.getLogger(__name__)


def split_subjects(fitted: list[int], cfg: RodinConfig, holdout: int) -> tuple[list[int], list[int]]:
    """(training, held-out) subject ids: the last ``holdout`` fitted ids and the corpus's held-out ids are held out."""
    last = set(sorted(fitted)[len(fitted) - holdout:]) if holdout else set()
    held = sorted(s for s in fitted if s in last or not cfg.corpus.is_training_subject(s))
    train = sorted(s for s in fitted if s not in held)
    if not train:
        raise RefinerDataError(f"no training subject is left: {len(fitted)} fitted subjects, {len(held)} held out; "
                               "fit more subjects or lower refiner.holdout_subjects")
    return train, held


def train_refiner_to_store(cfg: RodinConfig, out: str, high: str, renders: str | None = None,
                           net: RefinerConfig | None = None, train: RefinerTrainConfig | None = None,
                           storage_options: dict | None = None, device: torch.device | str = "cpu",
                           progress: bool = False, cache: str | Path | None = None) -> dict[str, Any]:
    """Train the refiner of ``out`` on the high-resolution renders ``high``, commit it; returns a JSON-ready summary.

    ``net.scale`` is taken from the two corpora's image sides; ``renders`` defaults to ``out``; ``cache``: a local
    folder for the renders of the fitted planes (:func:`~rodin_core.datasets.refiner_pairs.render_inputs`).
    """
    train = train or RefinerTrainConfig()
    decoder, decoder_sha256 = load_decoder(out, storage_options)
    planes = dict(iter_planes(out, storage_options))
    train_ids, held_ids = split_subjects(sorted(planes), cfg, train.holdout_subjects)
    rendered = set(high_resolution_subjects(high, storage_options))
    skipped = [s for s in train_ids if s not in rendered]
    train_ids = [s for s in train_ids if s in rendered]
    if not train_ids:
        raise RefinerDataError(f"none of the training subjects {id_ranges(skipped)} is in the high-resolution renders "
                               f"at {high}; render them there with `rodin render --resolution <2x side> --out {high}`")
    if skipped:
        log.info("the high-resolution renders hold %d of the training subjects; %s are left out",
                 len(train_ids), id_ranges(skipped))
    start = time.perf_counter()
    pairs = concat_pairs(list(iter_pairs(cfg, renders or out, high, {s: planes[s] for s in train_ids}, decoder,
                                         render_settings(cfg), storage_options, progress, cache)))
    pair_seconds = time.perf_counter() - start
    net = dataclasses.replace(net or RefinerConfig(), scale=pairs.scale)
    check_patch(train, net.scale)
    torch.manual_seed(train.seed)
    model = ConvRefiner(net).to(device)
    perceptual = PerceptualLoss(train.perceptual_backend).to(device) if train.perceptual_weight > 0 else None

    def report(step: int, terms: dict[str, float]) -> None:
        log.info("refiner step %d/%d: %s", step, train.steps, ", ".join(f"{k} {v:.4f}" for k, v in terms.items()))

    start = time.perf_counter()
    history = train_refiner(model, pairs, train, perceptual, on_log=report)
    meta = {"input_resolution": int(pairs.inputs.shape[-1]), "camera_radius": cfg.render.camera_radius,
            "background": cfg.fit.background, "decoder_sha256": decoder_sha256, "preset": cfg.preset,
            "render": {"coarse_samples": cfg.fit.coarse_samples, "fine_samples": cfg.fit.fine_samples},
            "train": train.to_dict(), "train_subjects": train_ids, "held_out_subjects": held_ids,
            "pairs": len(pairs), "high_renders": high, "history": history}
    manifest = commit_refiner(out, TrainedRefiner(model.cpu().eval(), meta), storage_options)
    return {"refiner": f"{out}/refiner", "attempt": manifest.attempt_id, "scale": net.scale,
            "input_resolution": meta["input_resolution"], "pairs": len(pairs), "train_subjects": train_ids,
            "held_out_subjects": held_ids, "skipped_subjects": skipped, "pair_seconds": round(pair_seconds, 1),
            "train_seconds": round(time.perf_counter() - start, 1), "first": history[0], "last": history[-1]}
