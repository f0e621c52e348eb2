"""Table 2 of the paper at tiny scale: the base model's components added one at a time (§3.2, §4.4).

Four configurations of the base model (overrides of the preset, :data:`CONFIGURATIONS`):

- A. baseline: the tri-plane concatenated on channels (``base.unet.plane_layout=channels``) in a plain
  2D U-Net, unconditional (``base.latent_conditioning=false``), no 3D-aware convolution;
- B. + latent conditioning: A conditioned on z of the frontal view (the preset's encoder);
- C. + roll-out: B on the rolled-out planes (``plane_layout=rollout``);
- D. + 3D-aware convolution: C with the preset's ``aware_resolutions`` (the preset itself).

Each is trained in-process with the same steps, batch and seed on the fitted tri-planes of one store
(:func:`base_ablation.train`), then measured with :mod:`rodin_core.evaluation` through the generation
pipeline, the bilinear up-sample standing in for the upsampler (:class:`BaseOnlyPipeline`), so that
only the base model differs:

- samples: one per training subject, drawn in one batch with seed 0; z is the training subject's own
  latent for B-D (the empirical distribution of z, i.e. a perfect latent prior), none for A;
- Fréchet distance on the shift-tolerant VGG16 features (``vgg16-stlpips``) of the samples' renders
  against the ground-truth renders of the training subjects at the views of
  :func:`~rodin_core.evaluation.sample_quality.quality_views`, and its floor (two halves of the training subjects);
- nearest training subject (PSNR of the renders over those views, median over samples) next to the
  training set's own leave-one-out baseline;
- conditional reconstruction (Table 4, B-D only): view 0 of held-out and of some training subjects
  inverted and scored with PSNR / LPIPS against their held-out and other views;
- parameters, FLOPs of one training step (U-Net and encoder, forward and backward, as counted by
  :func:`~rodin_core.networks.summary.flop_counter`) and wall seconds of training and measuring.

Run on a copy of a fitted store (read only): ``.venv/bin/python benchmarks/ablation.py --out data/tiny
--steps 150 --threads 1``.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import numpy as np
import torch
from base_ablation import ablation_parser, batches, latents, load_corpus, train
from torch import Tensor, nn

from rodin_core.config import RodinConfig, load_config
from rodin_core.datasets.layout import RENDERS_STAGE
from rodin_core.datasets.plane_stats import read_plane_stats
from rodin_core.datasets.renders import iter_subjects, renders_index
from rodin_core.evaluation.features import VGGFeatures
from rodin_core.evaluation.quality_job import reference_subjects, spread_pick
from rodin_core.evaluation.reconstruction import evaluation_views, measure_subject
from rodin_core.evaluation.reconstruction_job import fitted_planes
from rodin_core.evaluation.sample_quality import (
    ReferenceSet,
    build_reference,
    quality_views,
    score_samples,
)
from rodin_core.generation import GenerationPipeline, SampleOptions
from rodin_core.generation.pipeline import stage_respacing
from rodin_core.generation.sampling import sample_base
from rodin_core.metrics import LPIPS
from rodin_core.networks import count_parameters
from rodin_core.networks.summary import flop_counter
from rodin_core.storage import open_store
from rodin_core.training.base import BaseStage
from rodin_core.triplane.rescale import upsample_planes

_CHANNELS = ["base.unet.plane_layout=channels", "base.unet.aware_resolutions=[]"]
CONFIGURATIONS: dict[str, list[str]] = {
    "A. baseline (channels)": ["base.latent_conditioning=false", *_CHANNELS],
    "B. + latent conditioning": _CHANNELS,
    "C. + roll-out": ["base.unet.aware_resolutions=[]"],
    "D. + 3D-aware conv": [],
}
"""Table 2's rows as overrides of the preset (D is the preset's base model)."""
PAPER_FID = {"A. baseline (channels)": 39.2, "B. + latent conditioning": 37.4, "C. + roll-out": 28.4,
             "D. + 3D-aware conv": 26.1}
"""The FID of each row in the paper's Table 2."""
TRAINED_OPTIONS = SampleOptions()
"""Sampling with each configuration's trained settings (guidance scale, sampler, steps)."""


class BaseOnlyPipeline(GenerationPipeline):
    """The generation pipeline with the bilinear up-sample of the base sample in place of the diffusion upsampler."""

    def generate(self, z: Tensor, *, seed: int, options: SampleOptions = TRAINED_OPTIONS,
                 on_x0: Any = None) -> Tensor:
        """Raw tri-planes (3, C, H, H): the base sample of z (ignored without latent conditioning), up-sampled."""
        latent = self._latent(z)  # (1, D)
        conditioned = self.cfg.base.latent_conditioning
        with torch.no_grad():
            low = sample_base(self.base, self.cfg, self.stats, latent if conditioned else None, n=1,
                              generator=self._generator(seed), guidance_scale=self.guidance_scale(options),
                              sampler=options.sampler, respacing=stage_respacing(self.cfg, "base", options))
        return upsample_planes(low, self.resolution)[0].float().cpu()  # (3, C, H, H)


def pipeline_of(stage: BaseStage, cfg: RodinConfig, decoder: nn.Module) -> BaseOnlyPipeline:
    """The trained stage's EMA network and encoder as a :class:`BaseOnlyPipeline`."""
    encoder = stage.modules.get("encoder_ema", stage.encoder)
    return BaseOnlyPipeline(cfg, decoder, stage.modules["ema"], nn.Identity(), encoder, stage.stats,
                            encoder_error=None if encoder is not None else "no latent conditioning")


def step_flops(cfg: RodinConfig, stats: Any, batch: Any) -> int:
    """FLOPs of one ``train_step`` (forward and backward of the U-Net and the encoder) of a fresh stage."""
    stage = BaseStage(cfg, stats)
    with flop_counter() as counter:
        stage.train_step(batch, 0)
    return counter.get_total_flops()


def sample_latents(stage: BaseStage, corpus: Any, cfg: RodinConfig) -> Tensor:
    """z (N, D) of the training subjects through the trained encoder; zeros (ignored) without latent conditioning."""
    if stage.encoder is None:
        return torch.zeros(len(corpus.samples), cfg.encoder.latent_dim)
    return latents(stage, corpus)


def reconstruct(pipeline: GenerationPipeline, renders: str, ids: list[int], sources: dict, lpips: LPIPS,
                other_views: int) -> dict[str, float]:
    """Median over ``ids`` of the inverted avatars' PSNR and LPIPS at their held-out and other views (Table 4)."""
    stage = open_store(renders).stage(RENDERS_STAGE)
    psnrs, distances = [], []
    for subject in iter_subjects(stage, ids, sources):
        views = evaluation_views(subject.n_views, pipeline.cfg.fit.holdout_views, other_views)
        views = {group: views[group] for group in ("held_out", "other")}
        result = measure_subject(pipeline, subject, None, lpips, seed=0, views=views)
        scores = [s for group in result.scores["inverted"].values() for s in group.per_view]
        psnrs.append(statistics.mean(s.psnr for s in scores))
        distances.append(statistics.mean(s.lpips for s in scores))
    return {"psnr": float(statistics.median(psnrs)), "lpips": float(statistics.median(distances))}


def measure(stage: BaseStage, cfg: RodinConfig, corpus: Any, reference: ReferenceSet, features: VGGFeatures,
            recon: dict[str, Any]) -> dict[str, Any]:
    """Samples scored against ``reference`` and, with latent conditioning, the reconstructions of ``recon``."""
    pipeline = pipeline_of(stage, cfg, corpus.decoder)
    z = sample_latents(stage, corpus, cfg) if cfg.base.latent_conditioning else None  # (N, D)
    with torch.no_grad():
        low = sample_base(pipeline.base, cfg, stage.stats, z, n=len(corpus.samples),
                          generator=torch.Generator().manual_seed(0))  # (N, 3, C, h, h), one batch
    planes = upsample_planes(low, cfg.triplane.resolution)  # (N, 3, C, H, H)
    quality = score_samples(pipeline, planes, reference, stage.stats, features)
    row: dict[str, Any] = {
        "fd": quality.frechet.value, "fd_floor": quality.frechet_floor.value if quality.frechet_floor else None,
        "nn_psnr": float(np.median(quality.nearest.best_score)),
        "nn_baseline": float(np.median(quality.baseline.best_score)) if quality.baseline else None,
        "spread": quality.spread.ratio}
    if cfg.base.latent_conditioning:
        for group, ids in recon["ids"].items():
            scores = reconstruct(pipeline, recon["renders"], ids, recon["sources"], recon["lpips"],
                                 recon["other_views"])
            row[f"recon_{group}"] = scores
    return row


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(rows: list[dict[str, Any]], steps: int, batch: int) -> None:
    print(f"\nSame budget for every row: {steps} steps at batch {batch}, seed 0. FD: Fréchet distance on "
          f"vgg16-stlpips features of the samples' renders vs the training subjects' ground truth (floor: two halves "
          f"of the subjects, {_cell(rows[0]['fd_floor'])}). NN PSNR: median over samples of the PSNR to the nearest "
          f"training subject's fitted renders (training set's own leave-one-out: {_cell(rows[0]['nn_baseline'])} dB). "
          "Reconstruction: view 0 inverted, PSNR dB / LPIPS at held-out and other views, median over subjects.\n")
    print("| configuration | paper FID | params | GFLOPs/step | train s | final loss | FD ↓ | NN PSNR ↑ | "
          "spread | recon. held-out | recon. training | measure s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for row in rows:
        recon = {group: (f"{row[key]['psnr']:.2f} / {row[key]['lpips']:.3f}" if key in row else "-")
                 for group in ("held_out", "training") for key in [f"recon_{group}"]}
        print(f"| {row['configuration']} | {PAPER_FID[row['configuration']]} | {row['parameters'] / 1e6:.3f} M | "
              f"{row['flops'] / 1e9:.2f} | {row['train_s']:.0f} | {row['loss']:.4f} | {_cell(row['fd'])} | "
              f"{_cell(row['nn_psnr'])} | {_cell(row['spread'])} | {recon['held_out']} | {recon['training']} | "
              f"{row['measure_s']:.0f} |")


def merge_tables(paths: list[str]) -> None:
    """Print the table of rows written by several runs (``--json``), e.g. one configuration per process."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        with open(path) as handle:
            rows += json.load(handle)
    rows.sort(key=lambda row: row["configuration"])
    print_table(rows, rows[0]["steps"], rows[0]["batch_size"])


def main() -> None:
    parser = ablation_parser(__doc__.splitlines()[0], CONFIGURATIONS)
    parser.add_argument("--steps", type=int, default=150, help="training steps of every configuration")
    parser.add_argument("--quality-views", type=int, default=4, help="rig views besides the frontal one for FD / NN")
    parser.add_argument("--recon-training", type=int, default=4, help="training subjects reconstructed")
    parser.add_argument("--recon-other-views", type=int, default=2, help="other views of each reconstruction")
    parser.add_argument("--table", nargs="+", default=None, metavar="JSON",
                        help="only print the table of the rows in these --json files")
    args = parser.parse_args()
    if args.table:
        merge_tables(args.table)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = load_config(args.preset, args.config, args.extra)
    corpus = load_corpus(args.out, preset)
    stats = read_plane_stats(args.out)
    sources = renders_index(open_store(args.out).stage(RENDERS_STAGE))
    held_out = [s for s in range(preset.corpus.first_held_out, preset.corpus.subjects) if s in sources]
    recon_ids = {"held_out": held_out, "training": spread_pick(corpus.ids, args.recon_training)}
    print(f"{len(corpus.samples)} training subjects {corpus.ids}; held out {held_out}", flush=True)
    features, lpips = VGGFeatures(), LPIPS("auto")
    reference_planes = fitted_planes(args.out, corpus.ids)
    recon = {"ids": recon_ids, "renders": args.out, "sources": sources, "lpips": lpips,
             "other_views": args.recon_other_views}
    reference: ReferenceSet | None = None
    first_batch = next(batches(corpus, preset.base.train.batch_size, preset.base.train.seed))
    rows = []
    for name in args.settings:
        cfg = load_config(args.preset, args.config, [*args.extra, *CONFIGURATIONS[name]])
        print(f"{name}: {' '.join(CONFIGURATIONS[name]) or '(preset)'}", flush=True)
        flops = step_flops(cfg, stats, first_batch)
        start = time.perf_counter()
        stage, steps, loss, _ = train(cfg, corpus, stats, 0.0, args.steps)
        train_s = time.perf_counter() - start
        if reference is None:
            n_views = next(iter_subjects(open_store(args.out).stage(RENDERS_STAGE), corpus.ids[:1], sources)).n_views
            reference = build_reference(pipeline_of(stage, cfg, corpus.decoder),
                                        reference_subjects(args.out, corpus.ids, sources, reference_planes),
                                        quality_views(n_views, args.quality_views))
        start = time.perf_counter()
        row = {"configuration": name, "overrides": CONFIGURATIONS[name], "steps": steps,
               "batch_size": cfg.base.train.batch_size, "parameters": count_parameters(stage.model), "flops": flops,
               "train_s": round(train_s, 1), "loss": loss,
               **measure(stage, cfg, corpus, reference, features, recon)}
        row["measure_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_table(rows, args.steps, preset.base.train.batch_size)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
