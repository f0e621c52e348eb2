"""Base-model convergence ablation at tiny scale: which objective makes the base model reproduce its subjects.

The base model (paper §3.2) is trained in-process on the fitted tri-planes of a store (the tri-planes,
frontals and plane statistics that ``rodin fit`` and ``rodin train base`` write), once per setting, each for
the same wall-clock budget on the same data, then measured the way a user sees it. For every training
subject, z is its own frontal view through the (EMA) encoder and a conditional base sample is drawn with
the stage's CFG scale and sampler; then:

- ``psnr``: the sample bilinearly up-sampled to the full resolution and rendered from ``--views`` rig
  cameras, against the render of the subject's fitted tri-plane (median over subjects, dB);
- ``nn``: in how many cases the nearest training subject of the sample (normalised plane MSE) is its own;
- ``mse``: per-element MSE to the subject's own low-resolution planes, normalised units; ``std``: the
  samples' per-element std (the data: about 1);
- ``cos``: mean cosine similarity of the z of different subjects after training (1: z carries no identity),
  ``cos0`` the same for the freshly initialised encoder;
- ``z gain``: x̂0 MSE with a wrong subject's z over x̂0 MSE with the subject's own z, averaged over
  t = 100 ... 700 (1: the model ignores z);
- ``trajectory``: along the reverse process of those samples, the MSE of the step's x̂0 to the subject's own
  planes at the first, middle and last step (it should shrink as t falls).

A setting is a list of config overrides on the preset (``--set``-style ``key=value``); ``--settings`` picks
named ones from :data:`SETTINGS`. Run: ``.venv/bin/python benchmarks/base_ablation.py --out data/tiny``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rodin_core.cameras import make_rig
from rodin_core.config import RodinConfig, load_config
from rodin_core.datasets.checkpoints import read_stage_checkpoint
from rodin_core.datasets.decoder import load_decoder
from rodin_core.datasets.plane_stats import read_plane_stats
from rodin_core.datasets.triplanes import (
    TriplaneDataset,
    TriplaneSample,
    collate_samples,
)
from rodin_core.generation.sampling import sample_base
from rodin_core.metrics import psnr
from rodin_core.rendering import RenderSettings, render_image
from rodin_core.training.base import BaseStage
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.rescale import upsample_planes
from rodin_core.triplane.rollout import roll_out

_SIMPLE = ["base.diffusion.var_type=fixed_small", "base.diffusion.loss=simple"]
_MEAN, _FLAT = ["encoder.learned_pooling=mean"], ["encoder.learned_pooling=flatten"]
SETTINGS: dict[str, list[str]] = {
    "eps hybrid, mean-pooled encoder": ["base.diffusion.mean_type=eps", "base.diffusion.var_type=learned_range",
                                        "base.diffusion.loss=hybrid", *_MEAN],
    "eps hybrid": ["base.diffusion.mean_type=eps", "base.diffusion.var_type=learned_range",
                   "base.diffusion.loss=hybrid", *_FLAT],
    "eps min-SNR": ["base.diffusion.mean_type=eps", *_SIMPLE, "base.diffusion.loss_weighting=min_snr", *_FLAT],
    "x0": ["base.diffusion.mean_type=x0", *_SIMPLE, *_FLAT],
    "x0, mean-pooled encoder": ["base.diffusion.mean_type=x0", *_SIMPLE, *_MEAN],
    "x0 min-SNR": ["base.diffusion.mean_type=x0", *_SIMPLE, "base.diffusion.loss_weighting=min_snr", *_FLAT],
    "v": ["base.diffusion.mean_type=v", *_SIMPLE, *_FLAT],
    "v min-SNR": ["base.diffusion.mean_type=v", *_SIMPLE, "base.diffusion.loss_weighting=min_snr", *_FLAT],
}
"""Named settings: overrides of the preset's base stage and encoder (each names every key it compares)."""
Z_GAIN_STEPS = (100, 300, 500, 700)
"""Timesteps at which the x̂0 error with the own and a wrong z are compared."""


@dataclass
class Corpus:
    """The training subjects of a store, in memory."""

    samples: list[TriplaneSample]
    decoder: TriplaneDecoder

    @property
    def ids(self) -> list[int]:
        return [sample.subject_id for sample in self.samples]


def load_corpus(out: str, cfg: RodinConfig) -> Corpus:
    """Every fitted training subject of ``out`` (held-out ids excluded) and the frozen decoder."""
    dataset = TriplaneDataset(out, held_out_from=cfg.corpus.first_held_out, shuffle_buffer=1)
    samples = sorted(dataset.iter_epoch(0), key=lambda sample: sample.subject_id)
    decoder, _ = load_decoder(out)
    return Corpus(samples, decoder.eval().requires_grad_(False))


def batches(corpus: Corpus, batch_size: int, seed: int):
    """Endless batches: the subjects in a fresh random order each epoch, ``batch_size`` at a time."""
    generator = torch.Generator().manual_seed(seed)
    queue: list[int] = []
    while True:
        while len(queue) < batch_size:
            queue += torch.randperm(len(corpus.samples), generator=generator).tolist()
        picked, queue = queue[:batch_size], queue[batch_size:]
        yield collate_samples([corpus.samples[index] for index in picked])


def train(cfg: RodinConfig, corpus: Corpus, stats, budget_s: float, max_steps: int | None
          ) -> tuple[BaseStage, int, float, float]:
    """A base stage trained for ``max_steps`` steps, or ``budget_s`` seconds when None; returns it, the steps, the mean loss
    of the last 20 steps and the z cosine of the freshly initialised encoder (NaN without latent conditioning)."""
    stage = BaseStage(cfg, stats)
    initial_cosine = mean_cosine(latents(stage, corpus)) if stage.encoder is not None else float("nan")
    start, step, losses = time.perf_counter(), 0, []
    stream = batches(corpus, cfg.base.train.batch_size, cfg.base.train.seed)
    while step < max_steps if max_steps is not None else time.perf_counter() - start < budget_s:
        losses.append(stage.train_step(next(stream), step)["loss"])
        step += 1
        if step % 50 == 0:
            print(f"  step {step}, loss {statistics.mean(losses[-50:]):.4f}, {time.perf_counter() - start:.0f} s",
                  flush=True)
    return stage, step, statistics.mean(losses[-20:]), initial_cosine


@torch.no_grad()
def latents(stage: BaseStage, corpus: Corpus) -> Tensor:
    """z (N, D) of every subject's frontal view through the encoder's EMA shadow (the trained one when frozen)."""
    encoder = stage.modules.get("encoder_ema", stage.encoder)
    encoder.eval()
    frontal = torch.stack([sample.frontal for sample in corpus.samples])  # (N, 4, Hi, Wi)
    return encoder(frontal).float()  # (N, D)


def mean_cosine(z: Tensor) -> float:
    """Mean cosine similarity between the z (N, D) of different subjects."""
    unit = F.normalize(z, dim=1)
    cosine = unit @ unit.T  # (N, N)
    n = z.shape[0]
    return float((cosine.sum() - cosine.diagonal().sum()) / (n * (n - 1)))


@torch.no_grad()
def z_gain(stage: BaseStage, x0: Tensor, z: Tensor, seed: int = 0) -> float:
    """Mean over :data:`Z_GAIN_STEPS` of MSE(x̂0 | wrong z) / MSE(x̂0 | own z) on the subjects' planes x0 (N, C, h, 3h)."""
    model = stage.modules["ema"]
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    wrong = z.roll(1, dims=0)  # (N, D): the next subject's z
    ratios = []
    for step in Z_GAIN_STEPS:
        t = torch.full((x0.shape[0],), step, dtype=torch.long)
        noise = torch.randn(x0.shape, generator=generator)
        x_t = stage.diffusion.q_sample(x0, t, noise)
        errors = []
        for latent in (z, wrong):
            output = model(x_t, stage.diffusion.model_timesteps(t), z=latent)
            prediction = output[:, :x0.shape[1]]
            x0_hat = stage.diffusion._xstart_from_prediction(prediction, x_t, t)
            errors.append(float(((x0_hat - x0) ** 2).mean()))
        ratios.append(errors[1] / errors[0])
    return statistics.mean(ratios)


@torch.no_grad()
def render_views(planes: Tensor, decoder: TriplaneDecoder, cfg: RodinConfig, views: list[int]) -> list[Tensor]:
    """RGB (res, res, 3) renders of raw planes (3, C, H, W) from rig cameras ``views``, rendered as fitting does."""
    render = cfg.render
    rig = make_rig(render.views, render.resolution, render.fov_deg, render.camera_radius,
                   render.elevation_min_deg, render.elevation_max_deg)
    settings = RenderSettings(coarse_samples=cfg.fit.coarse_samples, fine_samples=cfg.fit.fine_samples,
                              perturb=False)
    images = []
    for view in views:
        rgb, _ = render_image(planes[None].float(), decoder, torch.tensor(rig.c2w[view], dtype=torch.float32),
                              torch.tensor(rig.intrinsics, dtype=torch.float32), render.resolution,
                              render.resolution, settings, cfg.fit.background)
        images.append(rgb.clamp(0.0, 1.0))
    return images


def subject_psnrs(planes: Tensor, decoder: TriplaneDecoder, cfg: RodinConfig, views: list[int],
                  fitted_renders: list[list[Tensor]]) -> list[float]:
    """Per subject, the mean PSNR of raw planes (N, 3, C, H, W) rendered from ``views`` against its fitted renders."""
    scores = []
    for index in range(planes.shape[0]):
        rendered = render_views(planes[index], decoder, cfg, views)
        scores.append(statistics.mean(psnr(a.numpy(), b.numpy()) for a, b in zip(rendered, fitted_renders[index],
                                                                                  strict=True)))
    return scores


def ablation_parser(description: str, settings: dict[str, list[str]]) -> argparse.ArgumentParser:
    """The options the ablation scripts share: the store, the preset, the settings, overrides, views, threads, JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default="data/tiny", help="dataset root with committed triplanes, frontals, stats")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--config", default=None, metavar="YAML", help="a YAML config over the preset")
    parser.add_argument("--settings", nargs="*", default=list(settings), help=f"named settings ({list(settings)})")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="an override applied to every setting (repeatable)")
    parser.add_argument("--views", type=int, nargs="*", default=[0, 16, 40], help="rig views rendered")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    return parser


def evaluate(stage: BaseStage, corpus: Corpus, cfg: RodinConfig, views: list[int],
             fitted_renders: list[list[Tensor]], initial_cosine: float) -> dict[str, float]:
    """The measurements of the module docstring for a trained base stage."""
    z = latents(stage, corpus)  # (N, D)
    raw = torch.stack([sample.planes for sample in corpus.samples])  # (N, 3, C, H, W)
    x0 = stage.targets(raw)  # (N, C, h, 3h) normalised
    generator = torch.Generator().manual_seed(0)
    trajectory: list[float] = []  # per reverse step, the MSE of x̂0 to the subjects' own x_0 (normalised units)

    def record(step: int, x0_hat: Tensor) -> None:
        trajectory.append(float(((roll_out(stage.stats.normalize(x0_hat)) - x0) ** 2).mean()))

    samples = sample_base(stage.modules["ema"], cfg, stage.stats, z, generator=generator,
                          on_x0=record)  # (N, 3, C, h, h) raw
    rolled = roll_out(stage.stats.normalize(samples))  # (N, C, h, 3h)
    distances = ((rolled[:, None] - x0[None]) ** 2).mean(dim=(2, 3, 4))  # (N, N)
    own = distances.argmin(dim=1) == torch.arange(len(corpus.samples))
    full = upsample_planes(samples, cfg.triplane.resolution)  # (N, 3, C, H, H)
    scores = subject_psnrs(full, corpus.decoder, cfg, views, fitted_renders)
    return {"psnr": statistics.median(scores), "psnr_min": min(scores), "nn": int(own.sum()),
            "mse": float(distances.diagonal().mean()), "std": float(rolled.std()), "cos": mean_cosine(z),
            "cos0": initial_cosine,
            "z_gain": z_gain(stage, x0, z), "trajectory": [trajectory[0], trajectory[len(trajectory) // 2],
                                                           trajectory[-1]]}


def main() -> None:
    parser = ablation_parser(__doc__.splitlines()[0], SETTINGS)
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="training wall-clock seconds per setting (ignored when --steps is given)")
    parser.add_argument("--steps", type=int, default=None, help="stop a setting after this many steps instead")
    parser.add_argument("--committed", action="store_true",
                        help="first measure the base checkpoint committed under --out (trained by the flows with the "
                             "config it saved) as a row of its own")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base_cfg = load_config(args.preset, args.config, args.extra)
    corpus = load_corpus(args.out, base_cfg)
    stats = read_plane_stats(args.out)
    print(f"{len(corpus.samples)} training subjects {corpus.ids}; rendering their fitted tri-planes", flush=True)
    fitted_renders = [render_views(sample.planes, corpus.decoder, base_cfg, args.views) for sample in corpus.samples]
    rows = []
    if args.committed:
        checkpoint, _ = read_stage_checkpoint(args.out, "base")
        cfg = RodinConfig.from_dict(checkpoint.config["rodin"])
        stage = BaseStage(cfg, stats)
        checkpoint.restore(stage.modules, stage.optimizers, strict=True)
        row = {"setting": f"committed checkpoint (step {checkpoint.step})", "steps": checkpoint.step, "train_s": 0.0,
               "loss": float("nan"), **evaluate(stage, corpus, cfg, args.views, fitted_renders, float("nan"))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    for name in args.settings:
        cfg = load_config(args.preset, args.config, [*args.extra, *SETTINGS[name]])
        print(f"{name}: {' '.join(SETTINGS[name]) or '(preset)'}", flush=True)
        start = time.perf_counter()
        stage, steps, loss, initial_cosine = train(cfg, corpus, stats, args.budget_s, args.steps)
        seconds = time.perf_counter() - start
        row = {"setting": name, "steps": steps, "train_s": round(seconds, 1), "loss": loss,
               **evaluate(stage, corpus, cfg, args.views, fitted_renders, initial_cosine)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| setting | steps | train s | final loss | render PSNR median (min) | own subject nearest | "
          "MSE | sample std | z cosine (at init) | z gain | x̂0 MSE first/middle/last step |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['setting']} | {row['steps']} | {row['train_s']:.0f} | {row['loss']:.4f} | {row['psnr']:.2f} "
              f"({row['psnr_min']:.2f}) | {row['nn']}/{len(corpus.samples)} | {row['mse']:.3f} | {row['std']:.2f} | "
              f"{row['cos']:.3f} ({row['cos0']:.3f}) | {row['z_gain']:.2f} | "
              f"{' / '.join(f'{value:.3f}' for value in row['trajectory'])} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
