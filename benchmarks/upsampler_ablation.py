"""Upsampler ablation at tiny scale: does the trained upsampler add detail over a bilinear up-sample?

The upsampler (paper §3.3) is trained in-process on the fitted tri-planes of a store, once per setting (the
paper's direct x_0 prediction, and the residual over the bilinear up-sample with a few scales), each for the
same number of steps, then given the FITTED low-resolution planes of the training subjects (the base
resolution ``triplane.rescale_min``, clean, as a perfect base model would produce them). Its full-resolution
output is rendered from ``--views`` rig cameras and compared with the render of the fitted tri-plane; the
same for the plain bilinear up-sample of the same input, the bar the upsampler has to clear.

Run: ``.venv/bin/python benchmarks/upsampler_ablation.py --out data/tiny``.
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from base_ablation import (
    ablation_parser,
    batches,
    load_corpus,
    render_views,
    subject_psnrs,
)

from rodin_core.config import RodinConfig, apply_overrides, preset_config
from rodin_core.datasets.checkpoints import read_stage_checkpoint
from rodin_core.datasets.plane_stats import read_plane_stats
from rodin_core.generation.sampling import sample_upsampler
from rodin_core.training.upsampler import UpsamplerStage
from rodin_core.triplane.rescale import downsample_planes, upsample_planes

SETTINGS: dict[str, list[str]] = {
    "direct x0 (paper)": [],
    "residual s=1": ["upsampler.residual=true", "upsampler.residual_scale=1.0"],
    "residual s=3.5": ["upsampler.residual=true", "upsampler.residual_scale=3.5"],
}
"""Named settings: overrides of the preset's upsampler stage."""


def main() -> None:
    parser = ablation_parser(__doc__.splitlines()[0], SETTINGS)
    parser.add_argument("--steps", type=int, default=200, help="training steps per setting")
    parser.add_argument("--respacing", nargs="*", default=[None],
                        help="reverse-step counts each trained upsampler is sampled with (default: the preset's); "
                             "with the x0 objective, 2 steps (t = T, then 0) return about x̂0 at t = T, the model's conditional mean")
    parser.add_argument("--sampler", default=None, choices=["ancestral", "ddim"], help="reverse process")
    parser.add_argument("--committed", action="store_true",
                        help="measure only the upsampler checkpoint committed under --out (trained by the flows with the "
                             "config it saved); no setting is trained")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base_cfg = apply_overrides(preset_config(args.preset), args.extra)
    corpus = load_corpus(args.out, base_cfg)
    stats = read_plane_stats(args.out)
    raw = torch.stack([sample.planes for sample in corpus.samples])  # (N, 3, C, H, W)
    normalised_low = downsample_planes(stats.normalize(raw), base_cfg.triplane.rescale_min)  # (N, 3, C, h, h)
    low = stats.denormalize(normalised_low)  # (N, 3, C, h, h) raw
    residual = stats.normalize(raw) - upsample_planes(normalised_low, base_cfg.triplane.resolution)
    print(f"{len(corpus.samples)} training subjects; residual over the bilinear up-sample: std {residual.std():.3f} "
          f"(normalised units)", flush=True)
    fitted = [render_views(planes, corpus.decoder, base_cfg, args.views) for planes in raw]
    bilinear_planes = stats.denormalize(upsample_planes(stats.normalize(low), base_cfg.triplane.resolution))

    def score(planes: torch.Tensor) -> float:
        return statistics.median(subject_psnrs(planes, corpus.decoder, base_cfg, args.views, fitted))

    bilinear = score(bilinear_planes)
    print(f"bilinear up-sample of the fitted {base_cfg.triplane.rescale_min}^2 planes: {bilinear:.2f} dB", flush=True)
    rows = []
    for name in ["committed"] if args.committed else args.settings:
        if args.committed:
            checkpoint, _ = read_stage_checkpoint(args.out, "upsampler")
            cfg = RodinConfig.from_dict(checkpoint.config["rodin"])
            stage = UpsamplerStage(cfg, stats, corpus.decoder)
            checkpoint.restore(stage.modules, stage.optimizers, strict=True)
            name, steps, seconds = f"committed checkpoint (step {checkpoint.step})", checkpoint.step, 0.0
        else:
            cfg = apply_overrides(preset_config(args.preset), [*args.extra, *SETTINGS[name]])
            stage, steps = UpsamplerStage(cfg, stats, corpus.decoder), args.steps
            stream = batches(corpus, cfg.upsampler.train.batch_size, cfg.upsampler.train.seed)
            start, losses = time.perf_counter(), []
            for step in range(args.steps):
                losses.append(stage.train_step(next(stream), step)["loss"])
                if (step + 1) % 50 == 0:
                    print(f"  {name} step {step + 1}, loss {statistics.mean(losses[-50:]):.4f}", flush=True)
            seconds = time.perf_counter() - start
        for respacing in args.respacing:
            upsampled = sample_upsampler(stage.modules["ema"], cfg, stats, low, generator=torch.Generator().manual_seed(0),
                                         sampler=args.sampler, respacing=respacing)
            row = {"setting": name, "steps": steps, "train_s": round(seconds, 1),
                   "reverse_steps": respacing or cfg.upsampler.diffusion.sampling_steps, "psnr": score(upsampled),
                   "bilinear": bilinear}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| setting | steps | train s | reverse steps | render PSNR vs fitted (median) | bilinear |\n"
          "|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['setting']} | {row['steps']} | {row['train_s']:.0f} | {row['reverse_steps']} | {row['psnr']:.2f} "
              f"| {row['bilinear']:.2f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
