"""How the base model samples, measured the way a user sees it: guidance scale and reverse process.

The checkpoints of a store are loaded once; for every setting ``GUIDANCE:RESPACING`` (e.g. ``3:50``,
the CFG scale λ of Eq. 3 and 50 ancestral steps; ``1:ddim5``, no guidance and 5 deterministic DDIM
steps) the base stage samples with it while the upsampler keeps its own trained respacing, and the
whole pipeline is scored with the sample-quality evaluation (paper §4.2-4.5, appendices C.4, C.5):

- ``recon``: conditional reconstruction of the training subjects, z from their own frontal view, the
  median over subjects of the PSNR against the render of their fitted tri-plane, per view group
  (held-out rig views, other views, the input view);
- ``nn``: median PSNR from each of ``--n`` unconditional samples (seeds 0..n-1, those of ``rodin sample``)
  to its nearest training subject in render space; ``loo``: the same between training subjects, each
  left out of its own search;
- ``std``: the samples' per-element std in the normalised plane space over the data's;
- ``frechet``: the Fréchet distance between the samples' and the training subjects' renders on the VGG16
  features of stlpips, with its floor (two halves of the training subjects).

With an x0-predicting base model few deterministic steps return about the model's conditional mean:
closest to the subject in PSNR, smoother to the eye; many ancestral steps with strong guidance give
sharper detail further from the subject. Run after ``make demo``:
``.venv/bin/python benchmarks/sampling_ablation.py --out data/tiny 3:50 1:50 1:ddim10 1:ddim5 1:ddim2``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass

import torch

from rodin_core.datasets.layout import RENDERS_STAGE
from rodin_core.datasets.plane_stats import read_plane_stats
from rodin_core.datasets.renders import renders_index
from rodin_core.evaluation.features import ImageFeatures
from rodin_core.evaluation.quality_job import feature_extractor, training_reference, training_subjects
from rodin_core.evaluation.quality_report import median_score, reconstruction_medians
from rodin_core.evaluation.reconstruction import VIEW_GROUPS
from rodin_core.evaluation.reconstruction_job import measure_reconstruction, trained_held_out
from rodin_core.evaluation.sample_quality import score_samples
from rodin_core.generation import SampleOptions
from rodin_core.generation.job import load_pipeline
from rodin_core.storage import open_store


@dataclass(frozen=True)
class Setting:
    """One way of sampling the base model."""

    guidance_scale: float
    """CFG scale λ (Eq. 3): 1 conditional, > 1 guided."""
    respacing: str
    """The base stage's ``diffusion.sampling_steps`` for this setting: ``"N"`` ancestral or ``"ddimN"`` steps."""

    @property
    def label(self) -> str:
        return f"{self.guidance_scale:g}:{self.respacing}"


def parse_setting(text: str) -> Setting:
    """``"GUIDANCE:RESPACING"`` -> :class:`Setting`; ValueError with the expected form otherwise."""
    guidance, _, respacing = text.partition(":")
    try:
        scale = float(guidance)
    except ValueError:
        scale = math.nan
    steps = respacing.removeprefix("ddim")
    if not math.isfinite(scale) or scale < 0 or not steps.isdigit() or int(steps) < 2:
        raise ValueError(f"setting {text!r}: expected GUIDANCE:STEPS or GUIDANCE:ddimSTEPS with a guidance scale "
                         ">= 0 and at least 2 steps, e.g. 3:50 or 1:ddim5")
    return Setting(scale, respacing)


def measure(out: str, settings: list[Setting], n: int, seed: int = 0, views: int = 4, lpips: str = "auto",
            features: str | ImageFeatures = "vgg") -> list[dict]:
    """One row per setting (see the module docstring) for the checkpoints and fitted subjects of ``out``;
    ``features``: those of the Fréchet distance (:func:`rodin_core.evaluation.quality_job.feature_extractor`)."""
    pipeline = load_pipeline(out, None, None, "cpu")
    configured = pipeline.cfg.base.diffusion.sampling_steps
    held_out = trained_held_out(out)
    sources = renders_index(open_store(out).stage(RENDERS_STAGE))
    training = training_subjects(out, held_out, list(sources))
    reference = training_reference(pipeline, out, out, training, sources, views)
    stats, extractor = read_plane_stats(out), feature_extractor(features)
    rows = []
    try:
        for setting in settings:
            start = time.perf_counter()
            pipeline.cfg.base.diffusion.sampling_steps = setting.respacing
            options = SampleOptions(guidance_scale=setting.guidance_scale)
            report = measure_reconstruction(out, subjects=training, seed=seed, options=options, lpips=lpips,
                                            pipeline=pipeline)
            recon = {group: cell.psnr_vs_fitted for group, cell in reconstruction_medians(report.results).items()}
            samples = pipeline.sample(n, seed=seed, options=options)
            quality = score_samples(pipeline, torch.stack([a.planes for a in samples]), reference, stats, extractor,
                                    seed=seed)
            rows.append({
                "setting": setting.label, "guidance_scale": setting.guidance_scale, "base_respacing": setting.respacing,
                "upsampler_respacing": pipeline.cfg.upsampler.diffusion.sampling_steps,
                "recon_vs_fitted": {group: round(value, 2) for group, value in recon.items()},
                "nn_median": round(median_score(quality.nearest), 2),
                "loo_median": round(median_score(quality.baseline), 2) if quality.baseline is not None else None,
                "std_ratio": round(quality.spread.ratio, 3),
                "frechet": round(quality.frechet.value, 1) if quality.frechet is not None else None,
                "frechet_floor": round(quality.frechet_floor.value, 1) if quality.frechet_floor is not None else None,
                "subjects": training, "samples": n, "seconds": round(time.perf_counter() - start, 1)})
            print(format_row(rows[-1]), flush=True)
    finally:
        pipeline.cfg.base.diffusion.sampling_steps = configured
    return rows


def format_row(row: dict) -> str:
    recon = " / ".join(f"{row['recon_vs_fitted'].get(group, math.nan):.2f}" for group in VIEW_GROUPS)
    return (f"| {row['setting']} | {recon} | {row['nn_median']:.2f} | {row['std_ratio']:.3f} | {row['frechet']} "
            f"| {row['seconds']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", type=parse_setting, metavar="GUIDANCE:RESPACING",
                        help="base sampling settings, e.g. 3:50 (CFG 3, 50 ancestral steps) or 1:ddim5")
    parser.add_argument("--out", default="data/tiny", help="dataset root with checkpoints, renders and tri-planes")
    parser.add_argument("--n", type=int, default=16, help="unconditional samples (seeds 0..n-1)")
    parser.add_argument("--views", type=int, default=4, help="rig views besides the frontal one for the samples")
    parser.add_argument("--lpips", default="auto", help="LPIPS network of the reconstruction")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| setting (CFG:base respacing) | recon vs fitted, held-out / other / input view (dB) | nn median (dB) "
          "| std ratio | Fréchet (vgg16-stlpips) | s |")
    print("|---|---|---|---|---|---|")
    rows = measure(args.out, args.settings, args.n, views=args.views, lpips=args.lpips)
    if rows and rows[0]["loo_median"] is not None:
        print(f"training subjects to each other (leave-one-out): median {rows[0]['loo_median']:.2f} dB; Fréchet "
              f"floor {rows[0]['frechet_floor']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
