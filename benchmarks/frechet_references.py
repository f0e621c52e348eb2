"""How low the Fréchet distance of a store's samples can go: references at the samples' own count (appendix C.4).

``rodin evaluate`` sets the samples' Fréchet distance beside a floor, two halves of the training
renders. That floor is measured with half the training set on each side, while ``n`` samples are
measured with ``n`` subjects' renders on one side; the Fréchet distance of a small set is biased
upwards, and a fitted tri-plane is not its ground truth. On the evaluation's views and features this
script measures:

- ``floor``: two halves of the training subjects, their ground-truth renders (the evaluation's floor, a mean
  over random splits);
- ``fitted_all``: the renders of every training subject's fitted tri-plane against the ground truth;
- ``fitted_n``: those of ``n`` fitted training subjects spread over the set, i.e. what a generator that
  returned ``n`` training subjects exactly would score;
- ``truth_n``: the ground-truth renders of the same ``n`` subjects against all of them, the floor at the
  samples' count (a generator whose renders were the corpus's own; the ``n`` are among the reference, so
  it is slightly lower than ``n`` new subjects would score);
- per ``--steps`` S: ``n`` unconditional samples (seeds 0..n-1, as ``rodin sample``) with S reverse
  steps of the base model and the upsampler, their Fréchet distance and the median PSNR to their
  nearest training subject, beside the training subjects' own leave-one-out median. S is ``N`` (each
  stage's configured rule, as ``rodin sample --steps N``), ``ddimN`` or ``ancestralN`` (both stages with
  that sampler, as ``rodin sample --sampler``).

``--guidance G`` samples the prior and training-z rows with the base model's classifier-free guidance scale G
(Eq. 3, as ``rodin sample --cfg G``) instead of the checkpoint's ``base.guidance_scale``; every row records the
scale it used.

``--prefixes P ...`` adds, per row, the Fréchet distance of the first P of the ``n`` samples, which shows
how the distance falls with the sample count. ``--from-training-z S ...`` adds, per S, a row of ``n``
avatars generated with S reverse steps from the latents the prior trained on (``n`` training subjects
spread over the set, avatar i with seed i): what a perfect latent prior would give with this base model
and upsampler, which tells the prior's share of the gap from the base model's. ``--from-fitted-low-res S ...``
splits the rest between the base model and the upsampler (§3.3): the fitted tri-planes of the same ``n`` subjects,
brought down to the base resolution as the base model's training data are, then up again, bilinearly (one row) and
by the trained upsampler with S reverse steps (one row per S, ``N``, ``ddimN`` or ``ancestralN`` as for
``--steps``; avatar i with seed i): what a perfect base model
would give. Run on a trained store: ``.venv/bin/python benchmarks/frechet_references.py --out data/small --n 64
--steps 5 25 [ancestral50] [--prefixes 16 32] [--from-training-z 25] [--from-fitted-low-res 25] [--guidance G] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from rodin_core.datasets.layout import RENDERS_STAGE
from rodin_core.datasets.renders import renders_index
from rodin_core.evaluation.features import ImageFeatures
from rodin_core.evaluation.frechet import frechet_distance
from rodin_core.evaluation.neighbours import (
    leave_one_out_neighbours,
    nearest_neighbours,
)
from rodin_core.evaluation.quality_job import (
    feature_extractor,
    trained_held_out,
    training_reference,
    training_subjects,
)
from rodin_core.evaluation.sample_quality import (
    ReferenceSet,
    as_images,
    as_strips,
    render_planes,
    subject_floor,
)
from rodin_core.generation import GenerationError, GenerationPipeline, SampleOptions
from rodin_core.generation.job import load_pipeline
from rodin_core.generation.pipeline import stage_respacing
from rodin_core.generation.sampling import sample_upsampler
from rodin_core.storage import open_store
from rodin_core.training.latents import read_latents
from rodin_core.triplane.rescale import downsample_planes, upsample_planes

BILINEAR = 0
"""``steps`` of a ``fitted low-res`` row that goes back up bilinearly instead of through the upsampler."""

SAMPLER_PREFIXES = ("ddim", "ancestral")
"""Prefixes of a ``--steps`` entry that name the sampler of both stages (:class:`SampleOptions` ``sampler``)."""

CONFIGURED = "config"
"""A ``--steps`` entry that samples each stage as its config says (``diffusion.sampling_steps``)."""


def sample_setting(text: str | int) -> tuple[str | None, int | None]:
    """``(sampler, steps)`` of a row's steps: ``25`` -> ``(None, 25)``, ``"ddim25"`` -> ``("ddim", 25)``,
    ``"ancestral50"`` -> ``("ancestral", 50)``, ``"config"`` -> ``(None, None)`` (each stage's configured
    ``diffusion.sampling_steps``, as ``rodin sample`` without ``--steps``); ValueError with one line for anything
    else or fewer than 2 steps."""
    text = str(text).strip()
    if text == CONFIGURED:
        return None, None
    sampler = next((prefix for prefix in SAMPLER_PREFIXES if text.startswith(prefix)), None)
    count = text[len(sampler or ""):]
    if not count.isdigit() or int(count) < 2:
        raise ValueError(f"steps must be N, ddimN, ancestralN with N >= 2 or {CONFIGURED!r}, got {text!r}")
    return sampler, int(count)


def spread_positions(count: int, n: int) -> list[int]:
    """``n`` of the positions 0..count-1, evenly spaced from the first to the last (all of them when n >= count)."""
    if n >= count:
        return list(range(count))
    return [int(p) for p in np.linspace(0, count - 1, n).round()]


def subject_rows(subjects: list[int], views: int) -> list[int]:
    """Rows of the (K * V, F) feature matrix of a reference that belong to the subjects at these positions."""
    return [position * views + view for position in subjects for view in range(views)]


def references(reference: ReferenceSet, extractor: ImageFeatures, n: int, seed: int = 0) -> dict:
    """``floor``, ``fitted_all``, ``fitted_n`` and ``truth_n`` (see the module docstring) of ``reference``."""
    truth = extractor(as_images(reference.truth))  # (K * V, F)
    fitted = extractor(as_images(reference.fitted))  # (K * V, F)
    picked = spread_positions(len(reference.subject_ids), n)
    rows = subject_rows(picked, len(reference.views))
    return {"floor": subject_floor(truth, reference, extractor.name, seed).value,
            "fitted_all": frechet_distance(fitted, truth, features=extractor.name).value,
            "fitted_n": frechet_distance(fitted[rows], truth, features=extractor.name).value,
            "truth_n": frechet_distance(truth[rows], truth, features=extractor.name).value,
            "fitted_n_subjects": [reference.subject_ids[p] for p in picked], "truth_features": truth}


def training_z_samples(pipeline, out: str, n: int,
                       options: SampleOptions) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Tri-planes (3, C, H, W) generated from the latents of ``n`` training subjects spread over the prior's
    training set, the i-th with seed i and sampled as ``options`` say (steps, sampler, guidance scale), i.e. a
    perfect latent prior's samples, and those latents (n, D)."""
    _, latents = read_latents(out)  # (N, D)
    picked = latents[spread_positions(len(latents), n)]  # (n, D)
    return [pipeline.generate(z, seed=i, options=options) for i, z in enumerate(picked)], picked


def fitted_low_res_samples(pipeline: GenerationPipeline, fitted: torch.Tensor, steps: int | None,
                           sampler: str | None = None) -> list[torch.Tensor]:
    """Raw tri-planes (3, C, H, H), one per fitted raw tri-plane of ``fitted`` (n, 3, C, H, H), brought down to
    the base resolution h as the base model trains on them (normalised, then area-downsampled), then up again:
    bilinearly for ``steps`` :data:`BILINEAR`, else by the upsampler with ``steps`` reverse steps of ``sampler``
    (None: its configured rule) and seed i for the i-th (a perfect base model's samples)."""
    stats, cfg = pipeline.stats, pipeline.cfg
    low = downsample_planes(stats.normalize(fitted.float()), pipeline.base_resolution)  # (n, 3, C, h, h) normalised
    if steps == BILINEAR:
        return list(stats.denormalize(upsample_planes(low, pipeline.resolution)))  # n x (3, C, H, H)
    respacing = stage_respacing(cfg, "upsampler", SampleOptions(steps=steps, sampler=sampler))
    raw_low = stats.denormalize(low)  # (n, 3, C, h, h)
    with torch.no_grad():
        return [sample_upsampler(pipeline.upsampler, cfg, stats, raw_low[i:i + 1],
                                 generator=torch.Generator().manual_seed(i), respacing=respacing)[0].float().cpu()
                for i in range(len(raw_low))]  # n x (3, C, H, H)


def measure(out: str, n: int, steps: list[int | str], views: int = 4, features: str | ImageFeatures = "vgg",
            prefixes: list[int] | None = None, training_z_steps: list[int | str] | None = None,
            low_res_steps: list[int | str] | None = None, guidance: float | None = None) -> dict:
    """The references and one row per entry of ``steps`` (:func:`sample_setting`: the row's ``sampler`` and
    ``steps``) for the checkpoints and fitted subjects of ``out``;
    each row also gives the Fréchet distance of the first ``p`` samples for every ``p`` of ``prefixes``.
    ``training_z_steps``: one more row per entry, the samples of :func:`training_z_samples`
    (``source`` ``"training z"``; the prior's rows are ``"prior"``). ``low_res_steps``: one row per entry, the
    :func:`fitted_low_res_samples` of the same ``n`` subjects (``source`` ``"fitted low-res"``, ``steps`` 0 for
    the bilinear one; the others are :func:`sample_setting` entries). ``guidance``: the base model's guidance
    scale of the prior and training-z rows (None: the checkpoint's); each row records the scale its base model
    used (``guidance``, None for the fitted low-res rows, which skip the base model)."""
    pipeline = load_pipeline(out, None, None, "cpu")
    sources = renders_index(open_store(out).stage(RENDERS_STAGE))
    training = training_subjects(out, trained_held_out(out), list(sources))
    reference = training_reference(pipeline, out, out, training, sources, views)
    extractor = feature_extractor(features)
    start = time.perf_counter()
    result = references(reference, extractor, n)
    truth = result.pop("truth_features")
    strips = as_strips(reference.fitted)  # (K, 3, H, V * W)
    result.update(subjects=len(training), n=n, views=list(reference.views), features=extractor.name,
                  loo_median=float(np.median(leave_one_out_neighbours(strips, "psnr").best_score)),
                  references_s=round(time.perf_counter() - start, 1), samples=[])
    rows = [("prior", count) for count in steps] + [("training z", count) for count in training_z_steps or []]
    rows += [("fitted low-res", count) for count in low_res_steps or []]
    picked = spread_positions(len(reference.subject_ids), n)
    for source, setting in rows:
        start = time.perf_counter()
        latents = None
        bilinear = source == "fitted low-res" and setting == BILINEAR
        sampler, count = (None, BILINEAR) if bilinear else sample_setting(setting)
        options = None if source == "fitted low-res" else SampleOptions(guidance_scale=guidance, steps=count,
                                                                        sampler=sampler)
        if source == "prior":
            avatars = pipeline.sample(n, seed=0, options=options)
            planes, latents = [a.planes for a in avatars], torch.stack([a.z for a in avatars])  # n x (3, C, H, W), (n, D)
        elif source == "training z":
            planes, latents = training_z_samples(pipeline, out, n, options)
        else:
            planes = fitted_low_res_samples(pipeline, reference.planes[picked], count, sampler)
        renders = np.stack([render_planes(pipeline, p, reference.c2w, reference.intrinsics, *reference.size)
                            for p in planes])  # (n, V, H, W, 3)
        sample_features = extractor(as_images(renders))  # (n * V, F), sample-major
        distance = frechet_distance(sample_features, truth, features=extractor.name).value
        by_count = {p: frechet_distance(sample_features[:p * len(reference.views)], truth, features=extractor.name).value
                    for p in sorted(set(prefixes or [])) if 2 <= p < n}
        nearest = nearest_neighbours(as_strips(renders), strips, "psnr")
        scale = None if options is None else pipeline.guidance_scale(options)
        result["samples"].append({"source": source, "steps": count, "sampler": sampler, "guidance": scale,
                                  "frechet": distance,
                                  "frechet_first": by_count,
                                  "nn_median": float(np.median(nearest.best_score)),
                                  "z_norm_mean": None if latents is None else float(latents.norm(dim=1).mean()),
                                  "seconds": round(time.perf_counter() - start, 1)})
        print(f"{source}, {setting} steps: {result['samples'][-1]}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/small", help="dataset root with checkpoints, renders and tri-planes")
    parser.add_argument("--n", type=int, default=64, help="samples, and fitted subjects of fitted_n (default 64)")
    parser.add_argument("--steps", nargs="*", default=[],
                        help="reverse steps of each sample row: N (each stage's configured sampler), ddimN, ancestralN, or "
                             "config (each stage's configured diffusion.sampling_steps)")
    parser.add_argument("--views", type=int, default=4, help="rig views besides the frontal one (default 4)")
    parser.add_argument("--prefixes", type=int, nargs="*", default=[],
                        help="also give the Fréchet distance of the first P samples for each P below --n")
    parser.add_argument("--from-training-z", nargs="*", default=[], metavar="STEPS",
                        help="rows generated with these reverse steps from the latents of n training subjects "
                             "(a perfect latent prior)")
    parser.add_argument("--from-fitted-low-res", nargs="*", default=None, metavar="STEPS",
                        help="rows from the fitted tri-planes of n training subjects at the base resolution, brought "
                             "up bilinearly and by the upsampler with these reverse steps, N, ddimN or ancestralN "
                             "(a perfect base model)")
    parser.add_argument("--no-bilinear", action="store_true",
                        help="leave out the bilinear row of --from-fitted-low-res (it depends on the data only)")
    parser.add_argument("--guidance", type=float, default=None, metavar="G",
                        help="classifier-free guidance scale of the base model in the prior and training-z rows "
                             "(default: the checkpoint's base.guidance_scale)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the result as JSON to this path")
    args = parser.parse_args()
    low_res = args.from_fitted_low_res
    if args.n < 2:
        raise SystemExit(f"error: --n must be at least 2, got {args.n}")
    try:
        SampleOptions(guidance_scale=args.guidance)  # the pipeline's own check of the scale
    except GenerationError as exc:
        raise SystemExit(f"error: --guidance: {exc}") from None
    for setting in args.steps + args.from_training_z + (low_res or []):
        try:
            sample_setting(setting)
        except ValueError as exc:
            raise SystemExit(f"error: --steps / --from-training-z / --from-fitted-low-res: {exc}") from None
    torch.set_num_threads(args.threads)
    result = measure(args.out, args.n, args.steps, args.views, prefixes=args.prefixes,
                     training_z_steps=args.from_training_z,
                     low_res_steps=None if low_res is None else ([] if args.no_bilinear else [BILINEAR]) + low_res,
                     guidance=args.guidance)
    print(f"floor (two halves of the subjects' truth) {result['floor']:.2f}; all {result['subjects']} fitted subjects "
          f"{result['fitted_all']:.2f}; {args.n} fitted subjects {result['fitted_n']:.2f}; their ground truth "
          f"{result['truth_n']:.2f}; leave-one-out nearest "
          f"PSNR median {result['loo_median']:.2f} dB")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
