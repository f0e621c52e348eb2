"""Host-side glue of the tri-plane fitting stage (paper appendix B.2): renders in, tri-plane shards out.

The fitting stage has its own shards of ``fit.shard_size`` subject ids, keyed by id: shard ``i``
covers the same ids whichever renders are committed (:func:`fitting_plan`). Subjects with ids below
``fit.shared_subjects`` (phase A) fit the shared decoder and are cut into shards of their own;
then every shard (phase B) is fitted with the frozen decoder, phase A's subjects starting from
their phase A planes; a shard whose ids are not all rendered waits (it is never fitted). Store
layout under the dataset root ``out`` (renders may live under another root)::

    decoder/    one committed shard "decoder": decoder.safetensors + decoder.json, phase B's starting
                planes (warm_start.safetensors, shared_planes.safetensors)
    triplanes/  shard-NNNNNN: planes.safetensors (float16, subject_<id>) + records.parquet

A tri-plane shard is current when it holds the planned subjects and its config hash covers the
decoder's sha256, the tri-plane and fitting settings and the renders' config hashes; any other
shard is fitted again. Pure host code: the flow in :mod:`workflows.fit_triplanes` schedules it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import safetensors.torch
import torch

from rodin_core.config import RodinConfig
from rodin_core.datasets.decoder import (
    load_shared_planes,
    load_warm_start,
    read_decoder,
)
from rodin_core.datasets.errors import FitDataError
from rodin_core.datasets.integrity import corrupt_inputs, id_ranges
from rodin_core.datasets.layout import (
    DECODER_CONFIG,
    DECODER_SHARD,
    DECODER_SHARED_PLANES,
    DECODER_STAGE,
    DECODER_WARM_START,
    DECODER_WEIGHTS,
    PLANES_FILE,
    RECORDS_FILE,
    RENDERS_STAGE,
    TRIPLANES_STAGE,
)
from rodin_core.datasets.renders import (
    RenderSource,
    iter_subjects,
    rendered_corpus_size,
    renders_index,
)
from rodin_core.datasets.triplane_records import (
    FitResult,
    planes_from_safetensors,
    planes_to_safetensors,
    records_table,
)
from rodin_core.fitting.loop import fit_shared_decoder, fit_subject, mean_planes
from rodin_core.fitting.preview import compare_views
from rodin_core.imaging import contact_sheet
from rodin_core.rendering.renderer import RenderSettings
from rodin_core.storage import (
    Manifest,
    ShardCorruptError,
    ShardWriter,
    StageStore,
    Store,
    config_hash,
    open_store,
    shard_id_for,
)
from rodin_core.triplane.decoder_io import decoder_to_bytes
from rodin_core.triplane.subject import split_views

log = logging.getLogger(__name__)

PHASE_B_ONLY_FIELDS = ("steps", "target_psnr", "patience", "min_improvement", "shard_size")
"""Fit settings phase A never reads: changing them keeps the committed decoder."""
PROGRESS_LINES = 10
"""Progress log lines per subject (phase B) or per phase A run."""
COMPARISON_SUBJECTS, COMPARISON_VIEWS = 3, 3
"""Subjects and held-out views shown by :func:`comparison_sheet`."""


@dataclass(frozen=True)
class FitPlan:
    """The fitting shards of a corpus: ``shards[i]`` holds the rendered subject ids of fitting shard ``i``.

    Shards are keyed by subject id, never by position: shard ``i`` always covers the same range of
    ids, whichever renders are committed, so a shard is never re-planned onto other subjects.
    """

    shared_ids: list[int]
    """Phase A's subjects: ids below ``fit.shared_subjects``."""
    shards: list[list[int]]
    shared_shards: int
    """Shards ``0 .. shared_shards - 1`` hold exactly the phase A subjects (fitted in phase B like the
    others, from their phase A planes)."""
    missing: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    """Shard index -> the ids of its range that no committed renders shard holds (such a shard waits)."""


@dataclass(frozen=True)
class FitShardJob:
    """Everything one fitting task needs besides the config and the store URIs."""

    shard_index: int
    subject_ids: list[int]
    digest: str
    """Config hash the shard is committed with (:func:`planes_hash`)."""
    decoder_sha256: str
    """sha256 of the committed decoder weights the planes are fitted against."""
    sources: dict[int, RenderSource]

    @property
    def shard_id(self) -> str:
        return shard_id_for(self.shard_index)


@dataclass(frozen=True)
class FitShardReport:
    """Outcome of fitting (or skipping) one tri-plane shard."""

    shard_id: str
    attempt_id: str
    subject_ids: list[int]
    seconds: float
    skipped: bool
    subject_errors: int = 0
    """Subjects of the shard whose fit failed (recorded in records.parquet with their error)."""


def fitting_plan(subject_ids: list[int], shared_subjects: int, shard_size: int, corpus_size: int = 0) -> FitPlan:
    """The shards of both phases over the corpus ids 0..N-1 (N: the largest rendered id + 1, or ``corpus_size``,
    the subjects the renders were made for, when larger).

    Phase A's shards cut ids ``0 .. min(shared_subjects, N) - 1`` into ``shard_size`` ids each, phase
    B's the ids after them; each shard holds the rendered ids of its range, and ids of its range
    without renders are listed in :attr:`FitPlan.missing`.
    """
    if shard_size < 1 or shared_subjects < 1:
        raise ValueError(f"fit.shard_size={shard_size} and fit.shared_subjects={shared_subjects} must be >= 1")
    rendered = set(subject_ids)
    if any(s < 0 for s in rendered):
        raise ValueError(f"subject ids must be >= 0, got {sorted(s for s in rendered if s < 0)[:10]}")
    span = max(max(rendered, default=-1) + 1, corpus_size)
    shared_span = min(shared_subjects, span)
    if shared_span < shared_subjects:
        log.warning("only %d rendered subjects for fit.shared_subjects=%d: phase A fits the decoder on all of them",
                    span, shared_subjects)
    ranges = [range(a, min(a + shard_size, shared_span)) for a in range(0, shared_span, shard_size)]
    shared_shards = len(ranges)
    ranges += [range(a, min(a + shard_size, span)) for a in range(shared_span, span, shard_size)]
    shards = [[s for s in ids if s in rendered] for ids in ranges]
    missing = {i: [s for s in ids if s not in rendered] for i, ids in enumerate(ranges)}
    return FitPlan([s for s in range(shared_span) if s in rendered], shards, shared_shards,
                   {i: ids for i, ids in missing.items() if ids})


def plan_over_renders(cfg: RodinConfig, renders: StageStore,
                      shards: list[int] | None = None) -> tuple[dict[int, RenderSource], FitPlan]:
    """Where each committed renders subject is and the fitting plan over them (manifests only).

    Raises :class:`FitDataError` when nothing is rendered, when a subject of phase A has no renders,
    or when ``shards`` (fitting shards to re-fit) holds an index that is not a shard of the plan.
    """
    sources = renders_index(renders)
    plan = fitting_plan(list(sources), cfg.fit.shared_subjects, cfg.fit.shard_size, rendered_corpus_size(renders))
    unrendered = [s for i, ids in plan.missing.items() if i < plan.shared_shards for s in ids]
    if unrendered:
        raise FitDataError(f"phase A fits the decoder on subjects 0..{len(plan.shared_ids) + len(unrendered) - 1} "
                           f"(fit.shared_subjects), but no committed renders shard of {renders.uri} holds "
                           f"subjects {id_ranges(unrendered)}; re-render them with the options the corpus was "
                           f"rendered with (`rodin render --out {renders.store.uri}`), then fit again")
    bad = [i for i in shards or [] if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(plan.shards)]
    if bad:
        raise FitDataError(f"shards {bad} are not fitting shards: rendered subject ids 0..{max(sources)} in shards of "
                           f"fit.shard_size={cfg.fit.shard_size} give indices 0..{len(plan.shards) - 1}")
    return sources, plan


def decoder_hash(cfg: RodinConfig, shared_ids: list[int], sources: dict[int, RenderSource]) -> str:
    """Hash of everything that determines the shared decoder (phase A)."""
    fit = {k: v for k, v in dataclasses.asdict(cfg.fit).items() if k not in PHASE_B_ONLY_FIELDS}
    return config_hash({"triplane": dataclasses.asdict(cfg.triplane), "fit": fit, "subjects": shared_ids,
                        "renders": sorted({sources[s].config_hash for s in shared_ids})})


def planes_hash(cfg: RodinConfig, decoder_sha256: str, subject_ids: list[int],
                sources: dict[int, RenderSource]) -> str:
    """Hash of everything that determines the planes of ``subject_ids`` (``fit.shard_size`` excepted)."""
    fit = {k: v for k, v in dataclasses.asdict(cfg.fit).items() if k != "shard_size"}
    return config_hash({"decoder_sha256": decoder_sha256, "triplane": dataclasses.asdict(cfg.triplane),
                        "fit": fit, "renders": sorted({sources[s].config_hash for s in subject_ids})})


def committed_planes(stage: StageStore, shard_id: str, subject_ids: list[int], digest: str) -> str | None:
    """Attempt id of tri-plane shard ``shard_id`` when it is committed for these subjects and ``digest``."""
    if not stage.is_committed(shard_id):
        return None
    manifest = stage.read_manifest(shard_id)
    if manifest.config_hash == digest and list(manifest.subject_ids) == subject_ids:
        return manifest.attempt_id
    return None


def has_subject_errors(stage: StageStore, shard_id: str) -> bool:
    """Whether the committed shard's records hold a subject whose fit failed, or cannot be read."""
    try:
        errors = stage.read_table(shard_id, RECORDS_FILE, columns=["error"]).column("error")
    except ShardCorruptError:
        return True
    return errors.null_count < len(errors)


def failed_shards(stage: StageStore, shard_count: int) -> list[int]:
    """Indices (< ``shard_count``) of shards whose records hold an error, or whose last attempt failed.

    A failure record counts until a later commit of its shard recovers it, so a shard whose
    re-fit failed is picked although an older commit of it is still in place.
    """
    committed = set(stage.committed_shards())
    failing = {str(r.get("shard_id")) for r in stage.unrecovered_failures()}
    return [i for i in range(shard_count)
            if shard_id_for(i) in failing or (shard_id_for(i) in committed and has_subject_errors(stage, shard_id_for(i)))]


def write_planes(writer: ShardWriter, results: list[FitResult], digest: str, extra: dict) -> Manifest:
    """Write planes (float16) and records of ``results`` under ``writer``'s attempt, then commit."""
    writer.write_bytes(PLANES_FILE, planes_to_safetensors(results))
    writer.write_table(RECORDS_FILE, records_table(results))
    errors = sum(r.error is not None for r in results)
    return writer.commit([r.subject_id for r in results], digest, extra={**extra, "subject_errors": errors})


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch threads, restored afterwards.

    The count is process-wide: tasks sharing one process (the thread-pool runner) share it.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class ProgressLog:
    """``progress`` callback of the fitting loop: about :data:`PROGRESS_LINES` log lines per run."""

    def __init__(self, label: str, total_steps: int) -> None:
        self.label = label
        self.total = total_steps
        self.every = max(1, math.ceil(total_steps / PROGRESS_LINES))
        self.start = time.perf_counter()
        self.psnr: float | None = None

    def __call__(self, step: int, loss: float, psnr: float | None) -> None:
        self.psnr = psnr if psnr is not None else self.psnr
        if step % self.every == 0 or step == self.total:
            rate = step / max(time.perf_counter() - self.start, 1e-9)
            held = f"{self.psnr:.2f} dB" if self.psnr is not None else "n/a"
            log.info("%s: step %d/%d, loss %.5f, held-out PSNR %s, %.1f steps/s", self.label, step, self.total,
                     loss, held, rate)


def fit_shard_to_store(cfg: RodinConfig, renders: str, out: str, job: FitShardJob,
                       storage_options: dict | None = None) -> FitShardReport:
    """Phase B of one shard: fit each subject with the frozen decoder, commit planes + records.

    A subject whose fit fails is recorded with its error and the others go on. Any other failure
    (renders, decoder, storage) is recorded with ``record_failure`` and raised again for a retry; a
    damaged input is a :class:`~rodin_core.datasets.errors.CorruptInputError` naming its repair.
    """
    start = time.perf_counter()
    store = open_store(out, storage_options)
    stage = store.stage(TRIPLANES_STAGE)
    writer = stage.begin(job.shard_id)
    try:
        with corrupt_inputs(renders):
            decoder = read_decoder(store.stage(DECODER_STAGE), job.decoder_sha256)[0]
            warm_start = load_warm_start(store.stage(DECODER_STAGE))
            shared = load_shared_planes(store.stage(DECODER_STAGE))
        renders_stage = open_store(renders, storage_options).stage(RENDERS_STAGE)
        log.info("fitting %s: subjects %s, attempt %s", job.shard_id, job.subject_ids, writer.attempt_id)
        results = []
        for subject in iter_subjects(renders_stage, job.subject_ids, job.sources):
            label = f"{job.shard_id} subject {subject.subject_id}"
            result = fit_subject(subject, decoder, cfg.triplane, cfg.fit, progress=ProgressLog(label, cfg.fit.steps),
                                 init=shared.get(subject.subject_id, warm_start))
            if result.error:
                log.warning("%s failed: %s", label, result.error)
            else:
                log.info("%s: held-out PSNR %.2f dB after %d steps (%.1f s)", label, result.psnr_holdout,
                         result.steps, result.seconds)
            results.append(result)
        seconds = time.perf_counter() - start
        manifest = write_planes(writer, results, job.digest, {"phase": "B", "seconds": round(seconds, 3),
                                                             "decoder_sha256": job.decoder_sha256})
        return FitShardReport(job.shard_id, writer.attempt_id, job.subject_ids, seconds, False,
                              manifest.extra["subject_errors"])
    except Exception as exc:
        stage.record_failure(job.shard_id, writer.attempt_id, exc, {
            "subject_ids": job.subject_ids, "config_hash": job.digest, "decoder_sha256": job.decoder_sha256})
        raise


def fit_shared_to_store(cfg: RodinConfig, renders: str, out: str, plan: FitPlan, digest: str,
                        sources: dict[int, RenderSource], storage_options: dict | None = None) -> str:
    """Phase A: fit the decoder on ``plan.shared_ids`` and commit it with their planes.

    Their planes (``shared_planes.safetensors``) are not final: they were fitted against a decoder
    that kept moving, so phase B refines them against the frozen decoder, starting from them, like
    every other subject. Returns the sha256 of the committed decoder weights. A failure is recorded
    under the decoder stage and raised again.
    """
    start = time.perf_counter()
    store = open_store(out, storage_options)
    stage = store.stage(DECODER_STAGE)
    writer = stage.begin(DECODER_SHARD)
    try:
        subjects = list(iter_subjects(open_store(renders, storage_options).stage(RENDERS_STAGE), plan.shared_ids,
                                      sources))
        log.info("phase A: fitting the shared decoder on %d subjects for %d steps, attempt %s", len(subjects),
                 cfg.fit.shared_steps, writer.attempt_id)
        decoder, results = fit_shared_decoder(subjects, cfg.triplane, cfg.fit,
                                              progress=ProgressLog("phase A", cfg.fit.shared_steps))
        weights, config_json = decoder_to_bytes(decoder)
        writer.write_bytes(DECODER_WEIGHTS, weights)
        writer.write_bytes(DECODER_CONFIG, config_json.encode("utf-8"))
        writer.write_bytes(DECODER_WARM_START, safetensors.torch.save({"planes": mean_planes(results).contiguous()}))
        writer.write_bytes(DECODER_SHARED_PLANES, planes_to_safetensors(results))
        manifest = writer.commit(plan.shared_ids, digest, extra={"seconds": round(time.perf_counter() - start, 3)})
    except Exception as exc:
        stage.record_failure(DECODER_SHARD, writer.attempt_id, exc, {"subject_ids": plan.shared_ids,
                                                                     "config_hash": digest})
        raise
    return manifest.file(DECODER_WEIGHTS).sha256


def records_of(stage: StageStore, shard_ids: list[str]) -> dict[str, list[dict]]:
    """Rows of ``records.parquet`` of each committed shard of ``shard_ids`` (others are left out)."""
    committed = set(stage.committed_shards())
    return {s: stage.read_table(s, RECORDS_FILE).to_pylist() for s in shard_ids if s in committed}


def comparison_sheet(cfg: RodinConfig, renders: StageStore, store: Store, shard_id: str, subject_ids: list[int],
                     sources: dict[int, RenderSource], decoder_sha256: str) -> np.ndarray | None:
    """Ground truth vs fitted held-out views of the first subjects of a committed tri-plane shard.

    For each of the first :data:`COMPARISON_SUBJECTS` subjects with planes, a row of up to
    :data:`COMPARISON_VIEWS` ground-truth held-out views (composited on ``fit.background``) above
    the same views rendered from its stored float16 planes, labelled with their PSNR. Returns an
    RGB uint8 sheet, or None when no subject of the shard has planes.
    """
    decoder = read_decoder(store.stage(DECODER_STAGE), decoder_sha256)[0]
    planes = planes_from_safetensors(store.stage(TRIPLANES_STAGE).read_bytes(shard_id, PLANES_FILE))
    ids = [s for s in subject_ids if s in planes][:COMPARISON_SUBJECTS]
    if not ids:
        return None
    settings = RenderSettings(coarse_samples=cfg.fit.coarse_samples, fine_samples=cfg.fit.fine_samples, perturb=False)
    images, labels, columns = [], [], 0
    for subject in iter_subjects(renders, ids, sources):
        train, held = split_views(subject.n_views, cfg.fit.holdout_views)
        shown = (held or train)[:COMPARISON_VIEWS]
        columns = columns or len(shown)
        shown_views = compare_views(subject, planes[subject.subject_id], decoder, shown, settings, cfg.fit.background)
        images += [c.truth for c in shown_views] + [c.fitted for c in shown_views]
        labels += [f"#{subject.subject_id} v{c.view}" for c in shown_views]
        labels += [f"{c.psnr:.1f} dB" for c in shown_views]
    return contact_sheet(images, columns, labels)
