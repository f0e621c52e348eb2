"""The ``evaluate`` flow: sample quality of a trained model (paper §4.2-4.3, §4.5 Table 4, appendix C.4).

The flow body is its table of contents:

1. check the inputs from manifests: checkpoints of the three stages, decoder, plane statistics,
   tri-planes and renders (each error names the command that makes what is missing), and that the
   CLIP weights of ``features="clip"`` are on this machine;
2. measure (:func:`rodin_core.evaluation.quality_job.measure_quality`): conditional reconstruction
   of training and of held-out subjects, and ``n`` unconditional samples (those of ``rodin sample
   --n n --seed seed``) against the training subjects: spread of their planes, nearest training
   subjects, the Fréchet distance to the training renders;
3. write ``evaluation/report.json``, ``report.md``, ``samples.png`` and ``neighbours.png`` under
   the dataset root (plain files, rewritten by each run);
4. publish the tables and the neighbour sheet as Prefect artifacts, and return where the files are.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from rodin_core.datasets.layout import (
    EVALUATION_FOLDER,
    EVALUATION_JSON,
    EVALUATION_MARKDOWN,
    EVALUATION_NEIGHBOURS,
    EVALUATION_SAMPLES,
)
from rodin_core.evaluation.quality_job import (
    DEFAULT_SAMPLES,
    check_features,
    check_quality_inputs,
    measure_quality,
)
from rodin_core.evaluation.quality_report import QualityReport, median_score
from rodin_core.generation import SampleOptions
from rodin_core.imaging import encode_png
from rodin_core.storage import open_store
from workflows.artifacts import publish_image, write_report
from workflows.logs import relay_logs

__all__ = ["evaluate"]

TAGS = ["rodin", "evaluate"]
ARTIFACT_KEY = "evaluate-report"
SHEET_ARTIFACT_KEY = "evaluate-neighbours"
WRITE_RETRIES = 2
WRITE_RETRY_DELAY_S = 5


@task(cache_policy=NO_CACHE, tags=TAGS)
def check_inputs(out: str, renders: str | None, n: int, features: str, clip_model: str, clip_pretrained: str | None,
                 preset: str | None, storage_options: dict | None) -> None:
    """Refuse a bad ``n``, unknown features or absent CLIP weights, and a dataset root that lacks an input."""
    check_quality_inputs(out, renders, n=n, preset=preset, storage_options=storage_options)
    check_features(features, clip_model, clip_pretrained)


@task(cache_policy=NO_CACHE, tags=TAGS)
def measure(out: str, renders: str | None, n: int, seed: int, features: str, clip_model: str,
            clip_pretrained: str | None, options: SampleOptions, subjects: list[int] | None, preset: str | None,
            device: str, storage_options: dict | None) -> QualityReport:
    """Reconstruct training and held-out subjects, draw the samples and measure them, relaying the progress lines."""
    with relay_logs("rodin_core"):
        return measure_quality(out, renders, n=n, seed=seed, features=features, clip_model=clip_model,
                               clip_pretrained=clip_pretrained, options=options, subjects=subjects, preset=preset,
                               device=device, storage_options=storage_options)


@task(retries=WRITE_RETRIES, retry_delay_seconds=WRITE_RETRY_DELAY_S, cache_policy=NO_CACHE, tags=TAGS)
def write_outputs(report: QualityReport, out: str, storage_options: dict | None) -> dict[str, str]:
    """Write the report's JSON, markdown and pictures under ``evaluation/``; returns the URI of each."""
    store = open_store(out, storage_options)
    files = {EVALUATION_JSON: report.to_json().encode("utf-8"), EVALUATION_MARKDOWN: report.table().encode("utf-8"),
             EVALUATION_SAMPLES: encode_png(report.samples_sheet),
             EVALUATION_NEIGHBOURS: encode_png(report.neighbour_sheet)}
    return {name: write_report(store, f"{EVALUATION_FOLDER}/{name}", data) for name, data in files.items()}


def headline(report: QualityReport) -> dict[str, Any]:
    """The numbers people compare first: PSNR vs fitted render per subject group (held-out views), the samples'
    spread ratio, nearest-neighbour PSNR against its baseline, and the Fréchet distance against its floor."""
    quality, medians = report.quality, report.medians()
    return {"psnr_vs_fitted": {group: cells["held_out"].psnr_vs_fitted if "held_out" in cells else None
                               for group, cells in medians.items()},
            "plane_std_ratio": quality.spread.ratio, "nearest_psnr": median_score(quality.nearest),
            "training_leave_one_out_psnr": median_score(quality.baseline),
            "frechet": quality.frechet.value if quality.frechet else None,
            "frechet_floor": quality.frechet_floor.value if quality.frechet_floor else None,
            "frechet_label": quality.frechet.label if quality.frechet else None}


@flow(name="evaluate")
def evaluate(out: str = "data/tiny", renders: str | None = None, n: int = DEFAULT_SAMPLES, seed: int = 0,
             features: str = "vgg", clip_model: str = "ViT-B-32", clip_pretrained: str | None = None,
             subjects: list[int] | None = None, guidance_scale: float | None = None, sampler: str | None = None,
             steps: int | None = None, preset: str | None = None, device: str = "cpu",
             storage_options: dict | None = None) -> dict[str, Any]:
    """Evaluate the model trained under ``out`` and write the report to ``{out}/evaluation/``.

    ``renders``: dataset root of the renders (default ``out``). ``n`` samples, sample i with seed
    ``seed + i``; ``guidance_scale``, ``sampler`` and ``steps`` as for ``rodin sample`` (also used
    by the inversions). ``features``: ``vgg`` or ``clip`` (``clip_model`` with ``clip_pretrained``,
    an open_clip tag cached locally or a ``.safetensors`` path) for the Fréchet distance.
    ``subjects``: reconstruct these ids (default: the held-out subjects and a spread of training
    ones). ``preset``: refuse checkpoints of another preset. Returns ``{store, files, table,
    headline, flow_seconds}``.
    """
    start = time.perf_counter()
    logger = get_run_logger()
    options = SampleOptions(guidance_scale=guidance_scale, sampler=sampler, steps=steps)
    check_inputs(out, renders, n, features, clip_model, clip_pretrained, preset, storage_options)
    logger.info("evaluating %s: %d samples from seed %d, %s features", out, n, seed, features)
    report = measure(out, renders, n, seed, features, clip_model, clip_pretrained, options, subjects, preset, device,
                     storage_options)
    files = write_outputs(report, out, storage_options)
    table = report.table()
    create_markdown_artifact(markdown=table, key=ARTIFACT_KEY, description="evaluate: sample quality")
    neighbours = files[EVALUATION_NEIGHBOURS]
    publish_image(SHEET_ARTIFACT_KEY, "evaluate: nearest training subjects", encode_png(report.neighbour_sheet),
                  neighbours, caption=f"Each sample (seeds {seed}..{seed + n - 1}) at views "
                  f"{', '.join(map(str, report.views))} beside the training subject whose fitted tri-plane renders "
                  "closest (appendix C.4).")
    logger.info("evaluation of %s in %.1f s; report at %s", out, report.seconds, files[EVALUATION_MARKDOWN])
    return {"store": out, "files": files, "table": table, "headline": headline(report),
            "flow_seconds": round(time.perf_counter() - start, 3)}
