"""The sample-quality report of a trained model (paper §4.2-4.3, §4.5 Table 4, appendices C.4 and C.5).

:class:`QualityReport` holds what :func:`rodin_core.evaluation.quality_job.measure_quality`
measured, in two parts:

- conditional reconstruction (§4.5, appendix C.5) of training subjects and of held-out subjects,
  reported separately: per view group (:data:`~rodin_core.evaluation.reconstruction.VIEW_GROUPS`),
  the median over the group's subjects of each subject's mean over the views
  (:class:`ReconstructionMedians`) of the inverted avatar's PSNR against the fitted tri-plane's
  render ("PSNR vs fitted render", the headline: the fitted tri-plane is the upper bound) and of
  the inverted and fitted scores against the ground truth;
- unconditional samples (§4.2, appendix C.4): the spread of their normalised planes, their nearest
  training subjects with the training set's leave-one-out baseline, and the Fréchet distance to
  the training renders with its floor (:mod:`.sample_quality`).

It gives a JSON document (:meth:`QualityReport.to_json`: non-finite numbers as null), a markdown
page (:meth:`QualityReport.table`) and two pictures as uint8 arrays (:func:`samples_sheet`,
:func:`pairs_sheet`). It writes nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rodin_core.evaluation.neighbours import Neighbours, neighbour_sheet
from rodin_core.evaluation.reconstruction import (
    VIEW_GROUPS,
    ImageScores,
    SubjectReconstruction,
)
from rodin_core.evaluation.sample_quality import ReferenceSet, SampleQuality, as_strips
from rodin_core.generation import Avatar, SampleOptions
from rodin_core.imaging import contact_sheet

SUBJECT_GROUPS = ("training", "held_out")
"""Reconstructed subjects: seen by diffusion training, or held out of it (``corpus.holdout_subjects``)."""
GROUP_TITLES = {"training": "training", "held_out": "held-out"}
VIEW_TITLES = {"held_out": "held-out views", "other": "other views", "input": "input view"}


def median_scores(scores: Sequence[ImageScores]) -> ImageScores:
    """The metric-wise median of ``scores`` (at least one)."""
    if not scores:
        raise ValueError("median_scores needs at least one ImageScores, got none")
    return ImageScores(*(float(np.median([getattr(s, name) for s in scores])) for name in ("psnr", "ssim", "lpips")))


@dataclass(frozen=True)
class ReconstructionMedians:
    """One (subject group, view group) cell: medians over subjects of each subject's mean over the group's views."""

    subjects: int
    """Subjects measured."""
    views: int
    """Views of the group per subject."""
    psnr_vs_fitted: float
    """Inverted avatar vs fitted tri-plane render, dB; NaN when no subject has a fitted tri-plane."""
    inverted: ImageScores
    """Inverted avatar vs ground truth."""
    fitted: ImageScores | None
    """Fitted tri-plane vs ground truth; None when no subject has one."""

    def to_dict(self) -> dict[str, Any]:
        return {"subjects": self.subjects, "views": self.views, "psnr_vs_fitted": self.psnr_vs_fitted,
                "inverted": asdict(self.inverted), "fitted": asdict(self.fitted) if self.fitted else None}


def reconstruction_medians(results: Sequence[SubjectReconstruction]) -> dict[str, ReconstructionMedians]:
    """View group -> :class:`ReconstructionMedians` of ``results`` (groups nobody was measured at left out)."""
    cells = {}
    for group in VIEW_GROUPS:
        measured = [r for r in results if group in r.scores["inverted"]]
        if not measured:
            continue
        fitted = [r.scores["fitted"][group].mean for r in measured if group in r.scores.get("fitted", {})]
        vs_fitted = [r.psnr_vs_fitted(group) for r in measured if group in r.vs_fitted]
        cells[group] = ReconstructionMedians(
            len(measured), len(measured[0].scores["inverted"][group].views),
            float(np.median(vs_fitted)) if vs_fitted else math.nan,
            median_scores([r.scores["inverted"][group].mean for r in measured]),
            median_scores(fitted) if fitted else None)
    return cells


def median_score(neighbours: Neighbours | None) -> float:
    """Median over queries of the closest reference's score; NaN for None."""
    return float(np.median(neighbours.best_score)) if neighbours is not None else math.nan


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (also inside dicts and lists) replaced by None, numpy scalars as Python."""
    if isinstance(value, Mapping):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class QualityReport:
    """Sample quality of the trained model of one dataset root (see the module docstring)."""

    out: str
    renders: str
    n: int
    seed: int
    """Sample i was drawn with seed ``seed + i``, as ``rodin sample --seed``; also the inversions' seed."""
    options: SampleOptions
    guidance_scale: float
    """The CFG scale λ the options resolve to (Eq. 3)."""
    steps: dict[str, int]
    """Training steps of the checkpoints used."""
    held_out: list[int]
    """Every subject the checkpoints held out of training (reconstructed or not)."""
    reconstruction: dict[str, list[SubjectReconstruction]]
    """Subject group (:data:`SUBJECT_GROUPS`) -> the reconstructed subjects of that group."""
    lpips: str
    """LPIPS network and where its weights came from."""
    samples: list[Avatar]
    reference_ids: list[int]
    """The training subjects the samples were compared with."""
    views: tuple[int, ...]
    """Rig views of the sample comparisons, view 0 (frontal) first."""
    quality: SampleQuality
    features: str
    """Name of the Fréchet distance's image features."""
    samples_sheet: np.ndarray
    """(H, W, 3) uint8: one row per sample, its renders at ``views``."""
    neighbour_sheet: np.ndarray
    """(H, W, 3) uint8: one row per sample, its renders beside those of its nearest training subject."""
    seconds: float

    def medians(self) -> dict[str, dict[str, ReconstructionMedians]]:
        """Subject group -> view group -> :class:`ReconstructionMedians` (groups without subjects left out)."""
        return {group: reconstruction_medians(results) for group, results in self.reconstruction.items() if results}

    def _nearest(self, neighbours: Neighbours | None, index: int, score: str) -> dict[str, Any] | None:
        if neighbours is None:
            return None
        return {"subject_id": self.reference_ids[int(neighbours.best_index[index])],
                score: float(neighbours.best_score[index])}

    def to_dict(self) -> dict[str, Any]:
        """Every number of the report as JSON-ready values (non-finite floats stay floats; :meth:`to_json` nulls them)."""
        q = self.quality
        medians = self.medians()
        samples = [{"index": i, "seed": avatar.meta.get("seed"),
                    "nearest_render": self._nearest(q.nearest, i, "psnr"),
                    "nearest_truth_frontal": self._nearest(q.nearest_truth, i, "psnr"),
                    "nearest_encoder": self._nearest(q.nearest_encoder, i, "cosine_distance")}
                   for i, avatar in enumerate(self.samples)]
        return {
            "paper": "Rodin §4.2-4.3, §4.5 (Table 4), appendices C.4 and C.5: sample quality",
            "dataset": self.out, "renders": self.renders, "n": self.n, "seed": self.seed,
            "options": {**asdict(self.options), "guidance_scale": self.guidance_scale},
            "checkpoint_steps": self.steps,
            "reconstruction": {
                "lpips": self.lpips, "held_out_subjects": self.held_out,
                **{group: {"subjects": [r.subject_id for r in self.reconstruction.get(group, [])],
                           "median": {view: cell.to_dict() for view, cell in medians.get(group, {}).items()},
                           "per_subject": [r.to_dict() for r in self.reconstruction.get(group, [])]}
                   for group in SUBJECT_GROUPS}},
            "samples": {
                "seeds": [avatar.meta.get("seed") for avatar in self.samples], "views": list(self.views),
                "training_subjects": self.reference_ids,
                "plane_std": {"samples": q.spread.samples, "data": q.spread.data, "ratio": q.spread.ratio},
                "nearest_neighbours": {
                    "median_psnr": median_score(q.nearest),
                    "training_leave_one_out_median_psnr": median_score(q.baseline),
                    "median_truth_frontal_psnr": median_score(q.nearest_truth),
                    "median_encoder_distance": median_score(q.nearest_encoder),
                    "training_leave_one_out_median_encoder_distance": median_score(q.baseline_encoder)},
                "per_sample": samples,
                "frechet": {"features": self.features,
                            "samples_vs_training": q.frechet.to_dict() if q.frechet else None,
                            "floor": q.frechet_floor.to_dict() if q.frechet_floor else None}},
            "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON, non-finite numbers (PSNR of identical images) as null."""
        return json.dumps(finite_or_none(self.to_dict()), indent=2, allow_nan=False)

    def table(self) -> str:
        """The report as a markdown page: settings, reconstruction medians, sample measures, nearest subjects."""
        return "\n".join([*self._heading(), "", *self._reconstruction_table(), "", *self._samples_table(), "",
                          *self._neighbours_table()])

    def _heading(self) -> list[str]:
        last = self.seed + self.n - 1
        steps = ", ".join(f"{name} {step}" for name, step in self.steps.items())
        sampler = self.options.sampler or "each stage's own"
        return [f"# Sample quality of `{self.out}`", "",
                (f"Checkpoints at steps {steps}; {self.n} samples with seeds {self.seed}..{last} (those of `rodin "
                 f"sample --n {self.n} --seed {self.seed}`), guidance {self.guidance_scale:g}, {sampler} "
                 f"sampler, {'default' if self.options.steps is None else self.options.steps} steps.")]

    def _reconstruction_table(self) -> list[str]:
        lines = ["## Conditional reconstruction (§4.5, Table 4)", "",
                 ("Medians over subjects of each subject's mean over the views. PSNR vs fitted render: the avatar "
                  "inverted from view 0 against the subject's fitted tri-plane (the upper bound) seen from the same "
                  f"camera; the other columns are against the ground truth. LPIPS: {self.lpips}."), "",
                 ("| subjects | count | views | PSNR vs fitted render | inverted PSNR | inverted SSIM | inverted LPIPS "
                  "| fitted PSNR | fitted SSIM | fitted LPIPS |"),
                 "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        medians = self.medians()
        for group in SUBJECT_GROUPS:
            if group not in medians:
                lines.append(f"| {GROUP_TITLES[group]} | 0 | - | - | - | - | - | - | - | - |")
                continue
            for view, cell in medians[group].items():
                fitted = cell.fitted
                lines.append(
                    f"| {GROUP_TITLES[group]} | {cell.subjects} | {VIEW_TITLES[view]} ({cell.views}) | "
                    f"{_number(cell.psnr_vs_fitted)} | {_number(cell.inverted.psnr)} | {_number(cell.inverted.ssim, 3)} "
                    f"| {_number(cell.inverted.lpips, 4)} | {_number(fitted.psnr if fitted else None)} | "
                    f"{_number(fitted.ssim if fitted else None, 3)} | {_number(fitted.lpips if fitted else None, 4)} |")
        return lines

    def _samples_table(self) -> list[str]:
        q = self.quality
        frechet = q.frechet.label if q.frechet else f"Fréchet distance on {self.features}"
        images = f"{q.frechet.n_a} vs {q.frechet.n_b} renders" if q.frechet else "too few renders"
        views = ", ".join(map(str, self.views))
        return ["## Unconditional samples (§4.2-4.3, appendix C.4)", "",
                (f"Compared with the {len(self.reference_ids)} training subjects at views {views} (view 0 frontal). "
                 "Baseline: each training subject against the others (leave-one-out)."), "",
                "| measure | samples | training data |", "|---|---:|---:|",
                f"| std of the normalised tri-planes | {_number(q.spread.samples, 3)} | {_number(q.spread.data, 3)} |",
                f"| std ratio, samples / data | {_number(q.spread.ratio, 3)} | 1 |",
                (f"| nearest training subject, PSNR over the views (median) | {_number(median_score(q.nearest))} dB | "
                 f"{_number(median_score(q.baseline))} dB |"),
                f"| nearest ground-truth frontal, PSNR (median) | {_number(median_score(q.nearest_truth))} dB | - |",
                (f"| nearest in the encoder's space, cosine distance (median) | "
                 f"{_number(median_score(q.nearest_encoder), 4)} | {_number(median_score(q.baseline_encoder), 4)} |"),
                (f"| {frechet} ({images}) | {_number(q.frechet.value if q.frechet else None, 3)} | floor "
                 f"{_number(q.frechet_floor.value if q.frechet_floor else None, 3)} (two halves of the subjects) |")]

    def _neighbours_table(self) -> list[str]:
        q = self.quality
        lines = ["## Nearest training subject of each sample (appendix C.4)", "",
                 ("| sample | seed | renders: subject | PSNR | frontal truth: subject | PSNR | encoder: subject "
                  "| cosine distance |"), "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for i, avatar in enumerate(self.samples):
            cells = []
            for neighbours, digits in ((q.nearest, 2), (q.nearest_truth, 2), (q.nearest_encoder, 4)):
                found = neighbours is not None
                cells += [str(self.reference_ids[int(neighbours.best_index[i])]) if found else "-",
                          _number(float(neighbours.best_score[i]) if found else None, digits)]
            lines.append(f"| {i} | {avatar.meta.get('seed')} | {' | '.join(cells)} |")
        return lines


def _number(value: float | None, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, ``inf`` for identical images, ``-`` for None or NaN."""
    if value is None or math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def samples_sheet(renders: np.ndarray, seeds: Sequence[int], views: Sequence[int]) -> np.ndarray:
    """uint8 renders (N, V, H, W, 3) -> one labelled row per sample (its seed under view 0) -> (H_s, W_s, 3) uint8."""
    tiles = [image for sample in renders for image in sample]
    labels = [f"seed {seed}" if index == 0 else f"view {views[index]}" for seed in seeds for index in range(len(views))]
    return contact_sheet(tiles, len(views), labels)


def pairs_sheet(quality: SampleQuality, reference: ReferenceSet, seeds: Sequence[int]) -> np.ndarray:
    """One row per sample: its renders at the views, then those of its nearest training subject (subject id, PSNR)."""
    strips = as_strips(quality.renders)  # (N, 3, H, V * W)
    return neighbour_sheet(strips, as_strips(reference.fitted), quality.nearest, k=1,
                           query_labels=[f"seed {seed}" for seed in seeds], reference_ids=reference.subject_ids)
