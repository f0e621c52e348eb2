"""Host-side glue of the sample-quality evaluation (paper §4.2-4.3, §4.5 Table 4, appendices C.4 and C.5).

:func:`measure_quality` reads from a dataset root ``out``:

- the committed base, upsampler and prior checkpoints and the frozen decoder (the generation
  pipeline, :func:`rodin_core.generation.job.load_pipeline`), and from their configs the subjects
  every stage held out of training;
- the corpus plane statistics (``stats/``, :func:`rodin_core.datasets.plane_stats.read_plane_stats`);
- the fitted tri-planes (``triplanes/``) and the renders (``renders/`` of the dataset root
  ``renders``, default ``out``) of the training subjects, the successfully fitted ones below the
  first held-out id, and of the held-out subjects;

and measures:

1. conditional reconstruction (:func:`~rodin_core.evaluation.reconstruction_job.measure_reconstruction`)
   of training subjects and of held-out subjects, reported separately;
2. ``n`` unconditional samples, sample i drawn with seed ``seed + i`` exactly as the ``generate``
   flow draws them (``rodin sample --n n --seed seed`` makes the same avatars), scored against the
   training subjects (:func:`~rodin_core.evaluation.sample_quality.score_samples`).

It writes nothing: the result is a :class:`~rodin_core.evaluation.quality_report.QualityReport`;
the ``evaluate`` flow writes its files. :func:`check_quality_inputs` tells, from manifests only,
what is missing and the command that makes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from rodin_core.datasets.checkpoints import committed_step
from rodin_core.datasets.layout import RENDERS_STAGE, TRIPLANES_STAGE
from rodin_core.datasets.plane_stats import read_plane_stats
from rodin_core.datasets.renders import RenderSource, iter_subjects, renders_index
from rodin_core.datasets.triplanes import committed_triplane_shards, subject_ids
from rodin_core.encoders import resolve_clip_weights
from rodin_core.evaluation.features import CLIPFeatures, ImageFeatures, VGGFeatures
from rodin_core.evaluation.quality_report import (
    QualityReport,
    pairs_sheet,
    samples_sheet,
)
from rodin_core.evaluation.reconstruction import (
    DEFAULT_OTHER_VIEWS as RECONSTRUCTION_OTHER_VIEWS,
)
from rodin_core.evaluation.reconstruction_job import (
    ReconstructionInputError,
    fitted_planes,
    measure_reconstruction,
    trained_held_out,
)
from rodin_core.evaluation.sample_quality import (
    DEFAULT_OTHER_VIEWS,
    ReferenceSet,
    build_reference,
    quality_views,
    score_samples,
)
from rodin_core.generation import GenerationPipeline, SampleOptions
from rodin_core.generation.job import (
    GENERATION_ERRORS,
    input_digests,
    load_pipeline,
    trained_config,
)
from rodin_core.stage_specs import STAGE_NAMES
from rodin_core.storage import open_store
from rodin_core.triplane.subject import SubjectViews

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 16
"""Unconditional samples of an evaluation."""
DEFAULT_TRAINING_SUBJECTS = 8
"""Training subjects reconstructed when the caller does not choose, evenly spread over their ids."""
FEATURES = ("vgg", "clip")
"""Image features of the Fréchet distance: the shift-tolerant VGG16 of stlpips, or an open_clip image tower."""
CLIP_REMEDY = ("pass --clip-pretrained (clip_pretrained=) the path of a local open_clip .safetensors file "
               "(weights saved with safetensors)")


class QualityInputError(ValueError):
    """The dataset root cannot be evaluated as asked; the message says what to do."""


EVALUATION_ERRORS = (QualityInputError, ReconstructionInputError, *GENERATION_ERRORS)
"""Failures caused by the inputs, whose message says what to do (the CLI prints them as one line)."""


def check_quality_inputs(out: str, renders: str | None = None, *, n: int = DEFAULT_SAMPLES, preset: str | None = None,
                         storage_options: dict | None = None) -> None:
    """Refuse a bad ``n`` and a dataset root without checkpoints, decoder, statistics, tri-planes or renders.

    Reads manifests and configs only; each error names what is missing and the command that makes
    it. ``preset``: refuse checkpoints trained with another preset.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise QualityInputError(f"n must be a positive integer (the samples to draw), got {n!r}")
    input_digests(out, storage_options, stages=STAGE_NAMES, preset=preset)
    trained_config(out, storage_options, preset)
    read_plane_stats(out, storage_options)
    committed_triplane_shards(out, storage_options)
    renders_index(open_store(renders or out, storage_options).stage(RENDERS_STAGE))


def check_features(features: str, clip_model: str = "ViT-B-32", clip_pretrained: str | None = None) -> None:
    """Refuse unknown ``features`` (:data:`FEATURES`), and CLIP weights that are not on this machine.

    ``clip``: ``clip_pretrained`` is an open_clip tag whose weights are in the local Hugging Face
    cache or a local ``.safetensors`` path (default ``openai``); otherwise
    :class:`rodin_core.encoders.EncoderUnavailableError` names both options.
    """
    if features not in FEATURES:
        raise QualityInputError(f"unknown features {features!r}; choose one of {', '.join(FEATURES)}")
    if features == "clip":
        resolve_clip_weights(clip_model, clip_pretrained or "openai", remedy=CLIP_REMEDY)


def feature_extractor(features: str | ImageFeatures = "vgg", clip_model: str = "ViT-B-32",
                      clip_pretrained: str | None = None, device: torch.device | str = "cpu") -> ImageFeatures:
    """The image features named by ``features`` (checked by :func:`check_features`), or ``features`` itself when it
    is an extractor already."""
    if not isinstance(features, str):
        return features
    check_features(features, clip_model, clip_pretrained)
    if features == "clip":
        return CLIPFeatures(clip_model, clip_pretrained or "openai", device=device)
    return VGGFeatures(device=device)


def training_subjects(out: str, held_out: Sequence[int], rendered: Sequence[int],
                      storage_options: dict | None = None) -> list[int]:
    """Rendered, successfully fitted subjects below the first held-out id (every one when none is held out)."""
    first = min(held_out) if held_out else None
    ids = [s for s in subject_ids(out, storage_options, held_out_from=first) if s in set(rendered)]
    if not ids:
        raise QualityInputError(f"no training subject of {out} is both fitted ({out}/{TRIPLANES_STAGE}) and rendered; "
                                f"fit the corpus first: `rodin fit --renders <renders root> --out {out}`")
    return ids


def spread_pick(ids: Sequence[int], count: int) -> list[int]:
    """``count`` of ``ids`` at evenly spaced positions (all of them when there are fewer)."""
    if count >= len(ids):
        return list(ids)
    return [ids[int((k + 0.5) * len(ids) / count)] for k in range(count)]


def reconstruction_subjects(training: Sequence[int], held_out: Sequence[int], rendered: Sequence[int],
                            subjects: Sequence[int] | None = None,
                            training_count: int = DEFAULT_TRAINING_SUBJECTS) -> dict[str, list[int]]:
    """``{"training": ids, "held_out": ids}`` to reconstruct.

    Default: ``training_count`` training subjects spread over their ids and every rendered held-out
    subject. ``subjects``: exactly these ids, each in the group it belongs to.
    """
    held = set(held_out)
    if subjects is None:
        return {"training": spread_pick(training, training_count),
                "held_out": [s for s in held_out if s in set(rendered)]}
    chosen = sorted(set(subjects))
    absent = [s for s in chosen if s not in set(rendered)]
    if absent:
        raise QualityInputError(f"subjects {absent} are not rendered; rendered ids: {min(rendered)}..{max(rendered)}")
    return {"training": [s for s in chosen if s not in held], "held_out": [s for s in chosen if s in held]}


def reference_subjects(renders: str, ids: Sequence[int], sources: dict[int, RenderSource],
                       planes: dict[int, Tensor], storage_options: dict | None = None
                       ) -> Iterator[tuple[SubjectViews, Tensor]]:
    """``(views, fitted raw planes)`` of each subject of ``ids``, read one subject at a time."""
    stage = open_store(renders, storage_options).stage(RENDERS_STAGE)
    for subject in iter_subjects(stage, list(ids), sources):
        yield subject, planes[subject.subject_id]


def training_reference(pipeline: GenerationPipeline, renders: str, out: str, training: Sequence[int],
                       sources: dict[int, RenderSource], views: int = DEFAULT_OTHER_VIEWS,
                       storage_options: dict | None = None) -> ReferenceSet:
    """The :class:`~rodin_core.evaluation.sample_quality.ReferenceSet` of the ``training`` subjects (fitted under
    ``out``, rendered under ``renders``) at view 0 and ``views`` others (:func:`quality_views`)."""
    planes = fitted_planes(out, training, storage_options)
    n_views = sources[training[0]].views or next(reference_subjects(renders, training[:1], sources, planes,
                                                                    storage_options))[0].n_views
    return build_reference(pipeline, reference_subjects(renders, training, sources, planes, storage_options),
                           quality_views(n_views, views))


def measure_quality(
    out: str,
    renders: str | None = None,
    *,
    n: int = DEFAULT_SAMPLES,
    seed: int = 0,
    features: str | ImageFeatures = "vgg",
    clip_model: str = "ViT-B-32",
    clip_pretrained: str | None = None,
    options: SampleOptions | None = None,
    subjects: Sequence[int] | None = None,
    training_count: int = DEFAULT_TRAINING_SUBJECTS,
    views: int = DEFAULT_OTHER_VIEWS,
    reconstruction_views: int = RECONSTRUCTION_OTHER_VIEWS,
    lpips: str = "auto",
    preset: str | None = None,
    device: torch.device | str = "cpu",
    storage_options: dict | None = None,
    pipeline: GenerationPipeline | None = None,
) -> QualityReport:
    """Reconstruction of training and held-out subjects, and ``n`` samples against the training set, of ``out``.

    ``seed``: sample i uses ``seed + i`` (as ``rodin sample``); the inversions and the Fréchet
    floor's split use ``seed``. ``features``: ``vgg``, ``clip`` (with ``clip_model`` and
    ``clip_pretrained``, see :func:`feature_extractor`) or an extractor. ``options``: sampling
    settings of samples and inversions (default: the trained ones). ``subjects``: reconstruct these
    ids (default: :func:`reconstruction_subjects` with ``training_count``). ``views``: rig views
    besides the frontal one at which samples are compared; ``reconstruction_views``: the ``other``
    view group of the reconstruction; ``lpips``: its LPIPS network. ``preset``: refuse checkpoints
    of another preset. ``pipeline``: the pipeline of ``out`` when the caller has loaded it.
    """
    start = time.perf_counter()
    renders = renders or out
    options = options or SampleOptions()
    check_quality_inputs(out, renders, n=n, preset=preset, storage_options=storage_options)
    extractor = feature_extractor(features, clip_model, clip_pretrained, device)
    pipeline = pipeline or load_pipeline(out, storage_options, preset, device)
    stats = read_plane_stats(out, storage_options)
    held_out = trained_held_out(out, storage_options)
    sources = renders_index(open_store(renders, storage_options).stage(RENDERS_STAGE))
    training = training_subjects(out, held_out, list(sources), storage_options)
    chosen = reconstruction_subjects(training, held_out, list(sources), subjects, training_count)
    log.info("reconstructing training subjects %s and held-out subjects %s", chosen["training"], chosen["held_out"])
    reconstruction = measure_reconstruction(out, renders, subjects=chosen["training"] + chosen["held_out"], seed=seed,
                                            options=options, lpips=lpips, other_views=reconstruction_views,
                                            device=device, storage_options=storage_options, pipeline=pipeline)
    results = {group: [r for r in reconstruction.results if r.subject_id in set(ids)] for group, ids in chosen.items()}
    began = time.perf_counter()
    samples = pipeline.sample(n, seed=seed, options=options)
    log.info("%d samples drawn in %.1f s (seeds %d..%d)", n, time.perf_counter() - began, seed, seed + n - 1)
    reference = training_reference(pipeline, renders, out, training, sources, views, storage_options)
    quality = score_samples(pipeline, torch.stack([a.planes for a in samples]), reference, stats, extractor, seed=seed)
    seeds = [int(a.meta["seed"]) for a in samples]
    steps = {name: committed_step(out, name, storage_options) or 0 for name in STAGE_NAMES}
    return QualityReport(out, renders, n, seed, options, pipeline.guidance_scale(options), steps, held_out, results,
                         f"{reconstruction.lpips_network} ({reconstruction.lpips_description})", samples, training,
                         reference.views, quality, extractor.name, samples_sheet(quality.renders, seeds, reference.views),
                         pairs_sheet(quality, reference, seeds), time.perf_counter() - start)

