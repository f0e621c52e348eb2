"""What the training stages read besides the tri-planes (paper §3.2, §3.3, appendix B.1; issue 5).

Prepared once from the earlier stages' committed shards, before any trainer starts:

- ``frontals/``: view 0 (the frontal view, what the encoders read) of every subject of each
  ``triplanes/`` shard, as a shard with the same id (``frontals.parquet``: subject id, RGBA PNG),
  copied from the renders. A shard is skipped while it is committed for the same subjects and
  renders.
- ``stats/``: the per-channel normalisation statistics of the tri-planes, computed once over the
  whole corpus; every stage and every checkpoint uses them (a corpus fitted further later keeps
  them, with a warning, so that the stages stay consistent).
- the frozen shared decoder of the fitting stage, for the upsampler's perceptual loss and the
  sample renders;
- ``latents/``: z of every training subject for the latent prior (appendix B.4), encoded by the
  trained base's learned encoder (its EMA) or by frozen CLIP.

Held-out subjects (``corpus.holdout_subjects``, paper §4.5, appendix C.5 Table 4): the statistics
and the latents are computed over the training subjects only, and what they were computed over
(:func:`training_digest`) names the first held-out id, so latents of another holdout are computed
again and statistics of another holdout are refused (the stages trained on them saw other subjects).

And where the trainers publish: ``checkpoints/`` holds one shard per stage (``base``,
``upsampler``, ``prior``), the stage's latest checkpoint (``model.safetensors``,
``optimizer.safetensors``, ``checkpoint.json``), re-committed at every checkpoint; the newest
commit wins. Generation reads it with :func:`read_stage_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import safetensors.torch
import torch
from torch import Tensor, nn

from render.corpus import VIEWS_TABLE
from rodin_core.checkpoint import (
    CHECKPOINT_JSON,
    MODEL_FILE,
    Checkpoint,
    check_format_version,
    checkpoint_files,
    checkpoint_from_files,
)
from rodin_core.config import CorpusConfig, RodinConfig
from rodin_core.datasets.triplanes import (
    FRONTALS_FILE,
    FRONTALS_SCHEMA,
    FRONTALS_STAGE,
    TriplaneDataset,
    collate_samples,
    iter_planes,
)
from rodin_core.encoders import build_encoder
from rodin_core.fitting.loop import freeze_decoder
from rodin_core.storage import Manifest, StageStore, config_hash, open_store
from rodin_core.training.prior import encode_latents
from rodin_core.triplane.decoder_io import decoder_from_bytes
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.stats import (
    STATS_SHARD,
    STATS_STAGE,
    PlaneStats,
    compute_plane_stats,
    read_plane_stats,
    write_plane_stats,
)
from workflows.fit_data import (
    DECODER_CONFIG,
    DECODER_SHARD,
    DECODER_STAGE,
    DECODER_WEIGHTS,
    RENDERS_STAGE,
    TRIPLANES_STAGE,
    RenderSource,
    renders_index,
)

log = logging.getLogger(__name__)

PROGRESS_EVERY = 100
"""Subjects between progress lines of a pass over the corpus."""
CHECKPOINTS_STAGE = "checkpoints"
"""Store stage of the trained stages' latest checkpoints, one shard per stage."""
LATENTS_STAGE = LATENTS_SHARD = "latents"
LATENTS_FILE = "latents.safetensors"
ENCODE_BATCH = 64
"""Frontal views encoded at a time when computing the latents."""


class TrainDataError(RuntimeError):
    """An input of the training stages is missing; the message names the URI and the command to run."""


@dataclass(frozen=True)
class FrontalsJob:
    """One ``frontals/`` shard to write: the subjects of the ``triplanes/`` shard with the same id."""

    shard_id: str
    subject_ids: list[int]
    digest: str
    """Config hash of the shard: its subjects and the config hashes of the renders they come from."""
    sources: dict[int, RenderSource]
    """Where each subject's views are."""


def committed_triplane_shards(out: str, storage_options: dict | None = None) -> tuple[StageStore, list[str]]:
    """The ``triplanes/`` stage of ``out`` and its committed shard ids; a clear error when there are none."""
    stage = open_store(out, storage_options).stage(TRIPLANES_STAGE)
    shards = stage.committed_shards()
    if not shards:
        raise TrainDataError(f"no committed tri-planes under {stage.uri}; fit them first: "
                             f"`rodin fit --renders <renders root> --out {out}`")
    return stage, shards


def plan_frontals(renders: str, out: str, storage_options: dict | None = None) -> tuple[list[FrontalsJob], list[str]]:
    """(``frontals/`` shards to write, ids of those already current), one per committed ``triplanes/`` shard."""
    planes_stage, shards = committed_triplane_shards(out, storage_options)
    sources = renders_index(open_store(renders, storage_options).stage(RENDERS_STAGE))
    frontals = open_store(out, storage_options).stage(FRONTALS_STAGE)
    pending, current = [], []
    for shard_id in shards:
        ids = list(planes_stage.read_manifest(shard_id).subject_ids)
        missing = [s for s in ids if s not in sources]
        if missing:
            raise TrainDataError(f"subjects {missing[:10]} of {planes_stage.uri} shard {shard_id} are in no committed "
                                 f"renders shard of {renders}/{RENDERS_STAGE}; pass the renders root they were "
                                 f"fitted from (`--renders`), or re-render them with `rodin render --out {renders}`")
        digest = config_hash({"subjects": ids, "renders": sorted({sources[s].config_hash for s in ids})})
        if frontals.is_committed(shard_id) and frontals.read_manifest(shard_id).config_hash == digest:
            current.append(shard_id)
        else:
            pending.append(FrontalsJob(shard_id, ids, digest, {s: sources[s] for s in ids}))
    return pending, current


def extract_frontals_shard(renders: str, out: str, job: FrontalsJob, storage_options: dict | None = None) -> int:
    """Copy view 0 of ``job``'s subjects from the renders into ``frontals/{job.shard_id}``; returns the count.

    Reads only the id, view index and PNG columns of each renders shard involved. A failure is
    recorded under ``frontals/failures/`` and raised again.
    """
    renders_stage = open_store(renders, storage_options).stage(RENDERS_STAGE)
    stage = open_store(out, storage_options).stage(FRONTALS_STAGE)
    writer = stage.begin(job.shard_id)
    try:
        by_shard: dict[str, list[int]] = {}
        for subject_id in job.subject_ids:
            by_shard.setdefault(job.sources[subject_id].shard_id, []).append(subject_id)
        pngs: dict[int, bytes] = {}
        for renders_shard, ids in sorted(by_shard.items()):
            table = renders_stage.read_table(renders_shard, VIEWS_TABLE, columns=["subject_id", "view_index", "png"])
            wanted = pc.and_(pc.equal(table["view_index"], 0), pc.is_in(table["subject_id"], pa.array(ids, pa.int64())))
            rows = table.filter(wanted).to_pydict()
            pngs.update(zip(rows["subject_id"], rows["png"], strict=True))
        missing = [s for s in job.subject_ids if s not in pngs]
        if missing:
            raise TrainDataError(f"renders of subjects {missing} have no view 0 (the frontal view); re-render their "
                                 f"shards ({sorted({job.sources[s].shard_id for s in missing})}) with "
                                 f"`rodin render --out {renders}`")
        ids = sorted(job.subject_ids)
        writer.write_table(FRONTALS_FILE, pa.table({"subject_id": ids, "png": [pngs[s] for s in ids]},
                                                   schema=FRONTALS_SCHEMA))
        writer.commit(ids, job.digest, extra={"renders_shards": sorted(by_shard)})
        return len(ids)
    except Exception as exc:
        stage.record_failure(job.shard_id, writer.attempt_id, exc, {"subject_ids": job.subject_ids})
        raise


def corpus_digest(out: str, storage_options: dict | None = None) -> dict[str, str]:
    """``{triplanes shard id: committed attempt id}``: the tri-planes the statistics and latents were computed over."""
    stage, shards = committed_triplane_shards(out, storage_options)
    return {shard_id: stage.read_manifest(shard_id).attempt_id for shard_id in shards}


def training_digest(out: str, storage_options: dict | None = None,
                    corpus: CorpusConfig | None = None) -> dict[str, object]:
    """What the statistics and latents are computed over (JSON, hashed into their manifests).

    ``{"triplanes": corpus_digest}``, plus ``"held_out_from"`` (the first held-out subject id, §4.5)
    when ``corpus`` holds subjects out; without held-out subjects the digest is the one computed
    before held-out subjects existed, so such committed statistics and latents stay current.
    """
    digest: dict[str, object] = {"triplanes": corpus_digest(out, storage_options)}
    if corpus is not None and corpus.first_held_out is not None:
        digest["held_out_from"] = corpus.first_held_out
    return digest


def check_holdout(out: str, corpus: CorpusConfig, storage_options: dict | None = None) -> None:
    """Check that ``corpus`` describes the fitted corpus of ``out`` where held-out subjects are concerned.

    Raises :class:`TrainDataError` when subjects are held out but fitted ids reach ``corpus.subjects``
    (the held-out ids would not be the corpus's last ones); warns when no held-out subject is fitted
    (fitting has not reached them, or the corpus was rendered with fewer subjects than ``corpus.subjects``).
    """
    first = corpus.first_held_out
    if first is None:
        return
    stage, shards = committed_triplane_shards(out, storage_options)
    fitted = {s for shard in shards for s in stage.read_manifest(shard).subject_ids}
    beyond = sorted(s for s in fitted if s >= corpus.subjects)
    if beyond:
        raise TrainDataError(f"{out} holds fitted subjects {beyond[:10]} at or above corpus.subjects="
                             f"{corpus.subjects}, so the held-out subjects (corpus.holdout_subjects="
                             f"{corpus.holdout_subjects}: ids {first}..{corpus.subjects - 1}) are not the corpus's "
                             f"last ones; train with the corpus.subjects the corpus was rendered with "
                             f"(e.g. --set corpus.subjects={max(fitted) + 1})")
    if not any(s >= first for s in fitted):
        log.warning("corpus.holdout_subjects=%d holds out ids %d..%d, none of which is fitted in %s (fitted ids "
                    "%d..%d): every fitted subject is trained on. If the corpus was rendered with fewer subjects "
                    "than corpus.subjects=%d, train with the same corpus.subjects", corpus.holdout_subjects, first,
                    corpus.subjects - 1, out, min(fitted), max(fitted), corpus.subjects)


def ensure_stats(out: str, storage_options: dict | None = None,
                 corpus: CorpusConfig | None = None) -> tuple[PlaneStats, bool]:
    """The committed normalisation statistics of ``out``, computed and committed first when missing.

    Returns ``(stats, computed)``. ``corpus``: its held-out subjects (§4.5) are left out (None: every
    fitted subject counts). Statistics committed over another set of tri-plane shards are kept
    (every trained stage depends on them) with a warning saying how to recompute them; statistics
    committed with other held-out subjects raise :class:`TrainDataError`.
    """
    held_out_from = corpus.first_held_out if corpus is not None else None
    if corpus is not None:
        check_holdout(out, corpus, storage_options)
    digest = training_digest(out, storage_options, corpus)
    stage = open_store(out, storage_options).stage(STATS_STAGE)
    if stage.is_committed(STATS_SHARD):
        manifest = stage.read_manifest(STATS_SHARD)
        committed_from = manifest.extra.get("held_out_from")
        if committed_from != held_out_from:
            raise TrainDataError(
                f"the plane statistics of {out} were computed {_holdout_words(committed_from)}, but the config "
                f"trains {_holdout_words(held_out_from)} (corpus.holdout_subjects); the stages trained with them "
                f"saw other subjects. Either train with the held-out subjects they were made with, or "
                f"delete {stage.uri}/manifests/{STATS_SHARD}.json and retrain every stage from scratch "
                f"(`rodin train all --out {out} --fresh`)")
        stats = read_plane_stats(out, storage_options)
        if manifest.config_hash != config_hash(digest):
            log.warning("the plane statistics of %s were computed over %d subjects before the tri-planes changed; "
                        "they are kept so that every stage uses the same ones. To recompute them, delete %s/manifests/"
                        "%s.json and retrain every stage", out, stats.count, stage.uri, STATS_SHARD)
        return stats, False
    planes = iter_planes(out, storage_options, list(digest["triplanes"]), held_out_from=held_out_from)
    stats = compute_plane_stats(_logged(planes, "plane statistics"))
    write_plane_stats(out, stats, storage_options, config=digest, extra={"held_out_from": held_out_from})
    log.info("plane statistics of %d subjects committed to %s (mean %s, std %s%s)", stats.count, stage.uri,
             _rounded(stats.mean.tolist()), _rounded(stats.std.tolist()),
             "" if held_out_from is None else f"; subjects from id {held_out_from} held out")
    return stats, True


def _holdout_words(held_out_from: int | None) -> str:
    """``"with no held-out subjects"`` or ``"with subjects from id N held out"``."""
    return "with no held-out subjects" if held_out_from is None else f"with subjects from id {held_out_from} held out"


def _logged(items: Iterator[tuple[int, Tensor]], label: str) -> Iterator[Tensor]:
    """The tensors of ``(subject id, tensor)`` items, with a progress line every 100 subjects and at the end."""
    start, count = time.perf_counter(), 0
    for count, (_, tensor) in enumerate(items, start=1):
        if count % PROGRESS_EVERY == 0:
            log.info("%s: %d subjects read (%.1f s)", label, count, time.perf_counter() - start)
        yield tensor
    log.info("%s: %d subjects read in %.1f s", label, count, time.perf_counter() - start)


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 4) for v in values]


def load_decoder(out: str, storage_options: dict | None = None) -> TriplaneDecoder:
    """The committed shared decoder of the fitting stage, frozen (eval mode, no gradients to its weights)."""
    stage = open_store(out, storage_options).stage(DECODER_STAGE)
    if not stage.is_committed(DECODER_SHARD):
        raise TrainDataError(f"no committed decoder under {stage.uri}; fit the tri-planes first: "
                             f"`rodin fit --renders <renders root> --out {out}`")
    weights = stage.read_bytes(DECODER_SHARD, DECODER_WEIGHTS)
    config = stage.read_bytes(DECODER_SHARD, DECODER_CONFIG).decode("utf-8")
    return freeze_decoder(decoder_from_bytes(weights, config, source=f"{stage.uri}/{DECODER_SHARD}"))


def commit_stage_checkpoint(out: str, stage_name: str, directory: str | os.PathLike, config: dict, extra: dict,
                            storage_options: dict | None = None) -> Manifest:
    """Commit the checkpoint folder ``directory`` as shard ``stage_name`` of ``checkpoints/``.

    ``config`` is the stage's config (its hash is the manifest's), ``extra`` (JSON) goes into the
    manifest (step, run name, ...). Then every attempt folder of the shard but this commit and the
    one it replaced (a reader may still be reading it) is deleted.
    """
    stage = open_store(out, storage_options).stage(CHECKPOINTS_STAGE)
    previous = stage.read_manifest(stage_name).attempt_id if stage.is_committed(stage_name) else None
    writer = stage.begin(stage_name)
    for name, data in checkpoint_files(directory).items():
        writer.write_bytes(name, data)
    manifest = writer.commit([], config_hash(config), extra=extra)
    folder = f"{stage.root}/data/{stage_name}"
    stage.fs.invalidate_cache(folder)
    for path in (p.rstrip("/") for p in stage.fs.ls(folder, detail=False)):
        if path != folder and path.rsplit("/", 1)[-1] not in (manifest.attempt_id, previous):
            stage.fs.rm(path, recursive=True)
    return manifest


def read_stage_checkpoint(out: str, stage_name: str, storage_options: dict | None = None
                          ) -> tuple[Checkpoint, Manifest]:
    """The committed checkpoint of stage ``stage_name`` (verified) and its manifest."""
    stage = open_store(out, storage_options).stage(CHECKPOINTS_STAGE)
    if not stage.is_committed(stage_name):
        raise TrainDataError(f"no committed {stage_name} checkpoint under {stage.uri}; train that stage first: "
                             f"`rodin train {stage_name} --out {out}`")
    manifest = stage.read_manifest(stage_name)
    files = {entry.name: stage.read_bytes(stage_name, entry.name) for entry in manifest.files}
    return checkpoint_from_files(files, where=f"{stage.uri}/{stage_name}"), manifest


def committed_config(out: str, stage_name: str, storage_options: dict | None = None) -> dict | None:
    """The ``config`` of the committed checkpoint of ``stage_name`` (reads its JSON only), or None.

    Raises :class:`~rodin_core.checkpoint.CheckpointError` when it has another format version."""
    stage = open_store(out, storage_options).stage(CHECKPOINTS_STAGE)
    if not stage.is_committed(stage_name):
        return None
    body = json.loads(stage.read_bytes(stage_name, CHECKPOINT_JSON))
    check_format_version(body, f"{stage.uri}/{stage_name}")
    return body["config"]


def committed_step(out: str, stage_name: str, storage_options: dict | None = None) -> int | None:
    """Step of the committed checkpoint of ``stage_name`` (from its manifest), or None."""
    stage = open_store(out, storage_options).stage(CHECKPOINTS_STAGE)
    if not stage.is_committed(stage_name):
        return None
    return int(stage.read_manifest(stage_name).extra.get("step", 0))


def latent_encoder(cfg: RodinConfig, out: str, storage_options: dict | None = None,
                   device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The frozen encoder whose z the prior learns, and what identifies it (JSON).

    ``encoder.kind = learned``: the EMA of the encoder trained with the committed base checkpoint;
    ``clip``: the frozen CLIP encoder of ``cfg.encoder``.
    """
    if cfg.encoder.kind != "learned":
        return build_encoder(cfg.encoder, device).eval(), {"encoder": dataclasses.asdict(cfg.encoder)}
    checkpoint, manifest = read_stage_checkpoint(out, "base", storage_options)
    base_cfg = RodinConfig.from_dict(checkpoint.config["rodin"])
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
