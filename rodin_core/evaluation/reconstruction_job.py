"""Host-side glue of the conditional reconstruction metrics (paper §4.5, appendix C.5 Table 4).

:func:`measure_reconstruction` reads from a dataset root ``out``:

- the committed base and upsampler checkpoints and the frozen decoder (the generation pipeline,
  :func:`rodin_core.generation.job.load_pipeline`), and from the configs saved in those checkpoints
  the subjects every stage held out of training (``corpus.holdout_subjects``);
- the fitted tri-planes of those subjects (``triplanes/``), the upper bound of the metrics;
- their rendered views and cameras (``renders/`` of the dataset root ``renders``, default ``out``);

and scores each subject with :func:`rodin_core.evaluation.reconstruction.measure_subject`. It writes
nothing; the result is a :class:`ReconstructionReport` (a table and a JSON document).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from rodin_core.datasets.checkpoints import committed_config, committed_step
from rodin_core.datasets.layout import (
    CHECKPOINTS_STAGE,
    PLANES_FILE,
    RENDERS_STAGE,
    TRIPLANES_STAGE,
)
from rodin_core.datasets.renders import iter_subjects, renders_index
from rodin_core.datasets.triplane_records import planes_from_safetensors
from rodin_core.datasets.triplanes import committed_triplane_shards
from rodin_core.evaluation.reconstruction import (
    DEFAULT_OTHER_VIEWS,
    GroupSummary,
    SubjectReconstruction,
    aggregate,
    evaluation_views,
    format_table,
    held_out_subjects,
    measure_subject,
)
from rodin_core.generation import GenerationPipeline, SampleOptions
from rodin_core.generation.job import load_pipeline
from rodin_core.metrics import LPIPS
from rodin_core.storage import open_store
from rodin_core.triplane.subject import SubjectViews

log = logging.getLogger(__name__)

PIPELINE_STAGES = ("base", "upsampler")
"""The stages portrait inversion runs through (§4.5): a subject is unseen when both held it out."""


class ReconstructionInputError(ValueError):
    """The dataset root cannot be measured as asked; the message says what to do."""


@dataclass
class ReconstructionReport:
    """The Table 4 metrics of one dataset root: per subject, averaged, and how they were made."""

    out: str
    renders: str
    results: list[SubjectReconstruction]
    summary: dict[str, dict[str, GroupSummary]]
    held_out: list[int]
    """Every subject the checkpoints held out of training (measured or not)."""
    lpips_network: str
    lpips_description: str
    seed: int
    options: SampleOptions
    guidance_scale: float
    """The CFG scale λ the options resolve to (Eq. 3)."""
    steps: dict[str, int]
    """Training steps of the checkpoints used."""
    seconds: float

    def table(self) -> str:
        """The fixed-width table of :func:`rodin_core.evaluation.reconstruction.format_table`."""
        return format_table(self.results, self.summary)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: settings, per-subject scores (``held_out`` says whether training saw it), means."""
        return {
            "paper": "Rodin, appendix C.5, Table 4: conditional avatar reconstruction",
            "dataset": self.out, "renders": self.renders, "seed": self.seed,
            "options": {**asdict(self.options), "guidance_scale": self.guidance_scale},
            "checkpoint_steps": self.steps,
            "lpips": {"network": self.lpips_network, "description": self.lpips_description},
            "held_out_subjects": self.held_out,
            "subjects": [{**r.to_dict(), "held_out": r.subject_id in set(self.held_out)} for r in self.results],
            "mean": {source: {group: cell.to_dict() for group, cell in groups.items()}
                     for source, groups in self.summary.items()},
            "seconds": round(self.seconds, 3),
        }


def trained_held_out(out: str, storage_options: dict | None = None) -> list[int]:
    """Ids of the subjects that the committed base and upsampler checkpoints of ``out`` both held out."""
    configs = {name: committed_config(out, name, storage_options) for name in PIPELINE_STAGES}
    missing = [name for name, config in configs.items() if config is None]
    if missing:
        raise ReconstructionInputError(f"no committed {' and '.join(missing)} checkpoint under "
                                       f"{out}/{CHECKPOINTS_STAGE}; train them first: `rodin train all "
                                       f"--out {out}`")
    return held_out_subjects(configs)


def fitted_planes(out: str, subject_ids: Sequence[int], storage_options: dict | None = None
                  ) -> dict[int, torch.Tensor]:
    """Fitted raw planes (3, C, H, W) float32 of those ``subject_ids`` that have them (failed fits have none)."""
    stage, shards = committed_triplane_shards(out, storage_options)
    wanted, found = set(subject_ids), {}
    for shard in shards:
        if wanted & set(stage.read_manifest(shard).subject_ids):
            planes = planes_from_safetensors(stage.read_bytes(shard, PLANES_FILE))
            found.update((s, p.float()) for s, p in planes.items() if s in wanted)
    return found


def measure_reconstruction(
    out: str,
    renders: str | None = None,
    *,
    subjects: Sequence[int] | None = None,
    seed: int = 0,
    options: SampleOptions | None = None,
    lpips: str = "auto",
    other_views: int = DEFAULT_OTHER_VIEWS,
    device: torch.device | str = "cpu",
    storage_options: dict | None = None,
    on_subject: Callable[[SubjectReconstruction, SubjectViews], None] | None = None,
    pipeline: GenerationPipeline | None = None,
) -> ReconstructionReport:
    """Invert view 0 of each held-out subject of ``out`` and score it against its views (Table 4).

    ``subjects``: measure these ids instead of the held-out ones (the report says which of them
    training saw). ``seed`` and ``options`` drive every inversion; ``lpips`` picks the LPIPS network
    (:data:`rodin_core.metrics.LPIPS_NETWORKS`); ``other_views`` sizes the ``other`` view group.
    ``on_subject(result, views)`` is called after each subject (progress, pictures). ``pipeline``: the
    pipeline of ``out``'s checkpoints when the caller has loaded it already (default: loaded here).
    """
    start = time.perf_counter()
    renders = renders or out
    options = options or SampleOptions()
    held_out = trained_held_out(out, storage_options)
    sources = renders_index(open_store(renders, storage_options).stage(RENDERS_STAGE))
    if subjects is None:
        if not held_out:
            raise ReconstructionInputError(
                f"the checkpoints of {out} held no subject out of training (corpus.holdout_subjects=0, or they were "
                "saved before it existed), so no subject is unseen; retrain with corpus.holdout_subjects > 0, or "
                "pass --subjects to measure chosen subjects (seen in training)")
        ids = [s for s in held_out if s in sources]
        if not ids:
            raise ReconstructionInputError(
                f"none of the held-out subjects {held_out[0]}..{held_out[-1]} is rendered under {renders}/"
                f"{RENDERS_STAGE}; render the whole corpus (`rodin render --out {renders}` with the training preset)")
    else:
        ids = sorted(set(subjects))
        absent = [s for s in ids if s not in sources]
        if absent:
            raise ReconstructionInputError(f"subjects {absent} are not rendered under {renders}/{RENDERS_STAGE}; "
                                           f"rendered ids: {min(sources)}..{max(sources)}")
        seen = [s for s in ids if s not in set(held_out)]
        if seen:
            log.warning("subjects %s were seen in training: their metrics are not those of unseen subjects", seen)
    pipeline = pipeline or load_pipeline(out, storage_options, device=device, require_prior=False)
    metric = LPIPS(lpips)
    fitted = fitted_planes(out, ids, storage_options)
    for subject_id in ids:
        if subject_id not in fitted:
            log.warning("subject %d has no fitted tri-plane in %s/%s (not fitted, or its fit failed): only its "
                        "inverted avatar is measured", subject_id, out, TRIPLANES_STAGE)
    results = []
    renders_stage = open_store(renders, storage_options).stage(RENDERS_STAGE)
    for subject in iter_subjects(renders_stage, ids, sources):
        views = evaluation_views(subject.n_views, pipeline.cfg.fit.holdout_views, other_views)
        result = measure_subject(pipeline, subject, fitted.get(subject.subject_id), metric, seed=seed,
                                 options=options, views=views)
        results.append(result)
        log.info("subject %d measured in %.1f s (%d of %d)", subject.subject_id, result.seconds, len(results), len(ids))
        if on_subject is not None:
            on_subject(result, subject)
    steps = {name: committed_step(out, name, storage_options) or 0 for name in PIPELINE_STAGES}
    return ReconstructionReport(out, renders, results, aggregate(results), held_out, metric.network,
                                metric.description, seed, options, pipeline.guidance_scale(options), steps,
                                time.perf_counter() - start)
