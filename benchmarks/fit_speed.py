"""Tri-plane fitting speed: the project's fitter against a plain reference fitter (paper §3.1, B.2).

Appendix B.2 fits a tri-plane for each of 100K subjects with a frozen shared decoder (phase B), so
seconds per subject decide the cost of the corpus. For one tiny-preset subject that phase A did not
see, with the decoder that phase A fitted on the first ``fit.shared_subjects`` subjects, this
script prints side by side, both on one CPU thread (the fitting flow runs one Ray worker per core):

1. field points evaluated per optimisation step (with gradient and without) and field points per
   second forward + backward, measured by counting the decoder's inputs in the steps that hold no
   evaluation;
2. steps and seconds to reach the held-out target PSNR (``fit.target_psnr``, 28 dB for tiny, or ``--target``), on
   one clock for both (from the call of the fitter to the first evaluation at or above the
   target, evaluations included), or a "did not reach" line at the step or time cap;

for :func:`rodin_core.fitting.loop.fit_subject` (twice: from the mean of phase A's planes, as the
flow starts phase B, and from random planes) and for ``benchmarks/reference_fitter.py``
(dense stratified sampling, plain Adam, random planes), the ratio of their seconds to target, and both fitters'
best planes scored by the project's ``evaluate_psnr``. The load average is printed around each fit:
timings are only comparable on an otherwise idle machine.

The renders come from ``rodin render --preset tiny --subjects 8 --out DIR``. Phase A runs once per
(preset, rescale probability, subjects) and is cached with its planes under ``--cache``. Run:
``.venv/bin/python benchmarks/fit_speed.py --renders DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from reference_fitter import reference_fit
from safetensors.torch import load_file, save_file
from torch import Tensor

from rodin_core.config import (
    FitConfig,
    RodinConfig,
    TriplaneConfig,
    apply_overrides,
    preset_config,
)
from rodin_core.datasets.decoder import committed_decoder, load_shared_planes, read_decoder
from rodin_core.datasets.layout import DECODER_STAGE, DECODER_WEIGHTS
from rodin_core.datasets.renders import iter_subjects, renders_index
from rodin_core.fitting.loop import evaluate_psnr, fit_shared_decoder, fit_subject
from rodin_core.fitting.shard_job import PHASE_B_ONLY_FIELDS, decoder_hash
from rodin_core.storage import config_hash, open_store
from rodin_core.triplane.decoder_io import load_decoder, save_decoder
from rodin_core.triplane.field import TriplaneDecoder, freeze_decoder
from rodin_core.triplane.subject import SubjectViews, split_views

DEFAULT_CACHE = "outputs/benchmarks"


def load_subjects(uri: str, count: int) -> list[SubjectViews]:
    """The first ``count`` subjects (by id) of the renders stage of the dataset at ``uri``.

    Reads through the fitting flow's loader, one committed shard at a time. Raises ValueError when
    the dataset holds fewer subjects.
    """
    stage = open_store(uri).stage("renders")
    sources = renders_index(stage)
    if len(sources) < count:
        raise ValueError(f"{uri} holds {len(sources)} rendered subjects, the benchmark needs {count}; render more "
                         f"with `rodin render --preset tiny --subjects {count} --out {uri}`")
    return list(iter_subjects(stage, list(sources)[:count], sources))


def print_progress(label: str) -> Callable[[int, float, float | None], None]:
    """A fitting progress callback that prints each held-out evaluation."""
    def progress(step: int, loss: float, held_out: float | None) -> None:
        if held_out is not None:
            print(f"  [{label}] step {step:5d}  loss {loss:.5f}  held-out PSNR {held_out:6.2f} dB", flush=True)
    return progress


def committed_phase_a(uri: str, subjects: list[SubjectViews], cfg: RodinConfig, renders: str | None = None
                      ) -> tuple[TriplaneDecoder, dict[int, Tensor]]:
    """The decoder and phase-A planes the ``fit-triplanes`` flow committed under dataset root ``uri``.

    Only a decoder fitted on exactly ``subjects`` with this config's phase-A settings and these
    renders is accepted (the flow's own :func:`decoder_hash`); anything else exits with the reason.
    """
    store = open_store(uri)
    sources = renders_index(open_store(renders or uri).stage("renders"))  # the renders the decoder was fitted to
    stage = store.stage(DECODER_STAGE)
    manifest = committed_decoder(stage, decoder_hash(cfg, [s.subject_id for s in subjects], sources))
    if manifest is None:
        raise SystemExit(f"{uri} holds no decoder fitted on subjects {[s.subject_id for s in subjects]} with the "
                         f"{cfg.preset} preset's phase-A settings; run `rodin fit --preset {cfg.preset} --renders {uri}` "
                         "or leave out --decoder-from")
    print(f"phase A: the decoder committed under {uri} (weights sha256 {manifest.file(DECODER_WEIGHTS).sha256[:12]})",
          flush=True)
    return read_decoder(stage, manifest.file(DECODER_WEIGHTS).sha256)[0], load_shared_planes(stage)


def phase_a(subjects: list[SubjectViews], cfg: RodinConfig, cache: Path, decoder_from: str | None = None,
            renders: str | None = None) -> tuple[TriplaneDecoder, dict[int, Tensor]]:
    """The frozen phase-A decoder of ``subjects`` and their planes (appendix B.2), fitted once and cached.

    Returns the decoder and ``{subject id: planes (3, C, H, W)}`` as phase A left them. With
    ``decoder_from`` (a dataset root fitted by the flow) they are the committed ones
    (:func:`committed_phase_a`). The cache under ``cache`` holds the decoder (``save_decoder``) and
    the planes (safetensors); its key names the preset, ``fit.rescale_prob`` and the subject ids, and
    hashes the tri-plane config and phase A's fitting settings, so the rescaling ablation's two arms
    and an edited preset never reuse a stale decoder.
    """
    if decoder_from is not None:
        return committed_phase_a(decoder_from, subjects, cfg, renders)
    ids = "-".join(str(s.subject_id) for s in subjects)
    fit = {k: v for k, v in dataclasses.asdict(cfg.fit).items() if k not in PHASE_B_ONLY_FIELDS}
    digest = config_hash({"triplane": dataclasses.asdict(cfg.triplane), "fit": fit})
    prefix = cache / f"phase-a-{cfg.preset}-rescale{cfg.fit.rescale_prob:g}-subjects{ids}-{digest[:12]}"
    planes_path = prefix.with_name(prefix.name + ".planes.safetensors")
    if planes_path.is_file():
        print(f"phase A: cached decoder and planes {prefix}", flush=True)
        planes = {int(key.removeprefix("subject_")): value for key, value in load_file(planes_path).items()}
        return freeze_decoder(load_decoder(prefix)), planes
    print(f"phase A: fitting the shared decoder on subjects {ids} for {cfg.fit.shared_steps} steps "
          f"(rescale_prob={cfg.fit.rescale_prob:g})", flush=True)
    start = time.perf_counter()
    decoder, results = fit_shared_decoder(subjects, cfg.triplane, cfg.fit,
                                          progress=print_progress(f"phase A p={cfg.fit.rescale_prob:g}"))
    print(f"phase A: {time.perf_counter() - start:.0f} s; held-out PSNR "
          + ", ".join(f"subject {r.subject_id}: {r.psnr_holdout:.2f} dB" for r in results), flush=True)
    save_decoder(decoder, prefix)
    save_file({f"subject_{r.subject_id}": r.planes.contiguous() for r in results}, planes_path)
    return decoder, {r.subject_id: r.planes for r in results}


@dataclass
class PointCounter:
    """Counts the field points the decoder evaluates, split by whether autograd records them."""

    with_grad: int = 0
    without_grad: int = 0

    def __call__(self, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: object) -> None:
        points = inputs[0].shape[:-1].numel()  # features (..., C)
        if torch.is_grad_enabled():
            self.with_grad += points
        else:
            self.without_grad += points


@dataclass
class StepTimer:
    """Progress callback of one fit: prints evaluations, times steps and notes when the target is reached.

    Steps holding an evaluation are left out of the step time and point counts; the seconds to
    target run from the timer's creation (just before the fit starts) to the first evaluation at
    or above ``target``, the same clock for both fitters.
    """

    label: str
    counter: PointCounter
    target: float
    time_limit: float
    start: float = field(default_factory=time.perf_counter)
    steps: int = 0
    seconds: float = 0.0
    grad_points: int = 0
    other_points: int = 0
    last_step: int = 0
    elapsed: float = 0.0
    """Seconds from the start to the latest step."""
    best: float = math.nan
    reached: tuple[int, float] | None = None
    """(step, seconds since start) of the first evaluation at or above the target."""
    _last: tuple[float, int, int] | None = None

    def __call__(self, step: int, loss: float, held_out: float | None) -> None:
        now = time.perf_counter()
        self.last_step, self.elapsed = step, now - self.start
        if held_out is not None:
            print(f"  [{self.label}] step {step:5d}  loss {loss:.5f}  held-out PSNR {held_out:6.2f} dB", flush=True)
            self.best = held_out if math.isnan(self.best) else max(self.best, held_out)
            if held_out >= self.target and self.reached is None:
                self.reached = (step, now - self.start)
        elif self._last is not None:
            self.steps += 1
            self.seconds += now - self._last[0]
            self.grad_points += self.counter.with_grad - self._last[1]
            self.other_points += self.counter.without_grad - self._last[2]
        self._last = (now, self.counter.with_grad, self.counter.without_grad)
        if now - self.start > self.time_limit:
            raise TimeLimitReached(step)


class TimeLimitReached(Exception):
    """Raised by :class:`StepTimer` to stop a fit that ran past the benchmark's time limit."""

    def __init__(self, step: int) -> None:
        super().__init__(f"time limit reached at step {step}")
        self.step = step


def run_project(subject: SubjectViews, decoder: TriplaneDecoder, cfg: RodinConfig,
                time_limit: float, init: Tensor | None = None, label: str = "project") -> tuple[StepTimer, Tensor | None]:
    """Fit ``subject`` with the project's phase-B loop, timed and point-counted; returns the timer and planes.

    ``init``: the starting planes (the flow starts phase B from the mean of phase A's planes); None: random.
    """
    counter = PointCounter()
    hook = decoder.density_and_features.register_forward_hook(counter)  # once per decoded batch of points
    timer = StepTimer(label, counter, cfg.fit.target_psnr, time_limit)
    try:
        result = fit_subject(subject, decoder, cfg.triplane, cfg.fit, progress=timer, init=init)
    except TimeLimitReached:
        return timer, None
    finally:
        hook.remove()
    if result.error is not None:
        raise RuntimeError(f"the project's fitter failed: {result.error}")
    return timer, result.planes


def run_reference(subject: SubjectViews, decoder: TriplaneDecoder, cfg: RodinConfig, samples: int,
                  max_steps: int, time_limit: float) -> tuple[StepTimer, Tensor]:
    """Fit ``subject`` with the reference fitter, timed and point-counted the same way."""
    counter = PointCounter()
    hook = decoder.density_and_features.register_forward_hook(counter)
    timer = StepTimer("reference", counter, cfg.fit.target_psnr, math.inf)
    try:
        result = reference_fit(subject, decoder, cfg.triplane, cfg.fit, samples, max_steps, time_limit,
                               progress=timer)
    finally:
        hook.remove()
    return timer, result.planes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", default="data/tiny", help="dataset root URI holding the renders stage")
    parser.add_argument("--preset", default="tiny", help="config preset (default tiny)")
    parser.add_argument("--cache", default=DEFAULT_CACHE, help=f"phase-A decoder cache folder ({DEFAULT_CACHE})")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds each fitter may run (default 600)")
    parser.add_argument("--reference-steps", type=int, default=None,
                        help="step cap of the reference (default: 4 x fit.steps)")
    parser.add_argument("--target", type=float, default=None,
                        help="held-out PSNR target in dB for both fitters (default: fit.target_psnr of the preset)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, one per Ray worker)")
    parser.add_argument("--decoder-from", default=None, metavar="URI",
                        help="use the decoder the fit-triplanes flow committed under this dataset root (phase A skipped)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset_config(args.preset)
    if args.target is not None:
        cfg = apply_overrides(cfg, [f"fit.target_psnr={args.target}"])
    cfg = apply_overrides(cfg, ["fit.patience=0"])  # no plateau stop: both fitters run to the target or their cap
    fit: FitConfig = cfg.fit
    tri: TriplaneConfig = cfg.triplane
    subjects = load_subjects(args.renders, fit.shared_subjects + 1)
    decoder, shared_planes = phase_a(subjects[:fit.shared_subjects], cfg, Path(args.cache), args.decoder_from,
                                     args.renders)
    subject = subjects[fit.shared_subjects]
    samples = fit.coarse_samples + fit.fine_samples
    max_steps = args.reference_steps or 4 * fit.steps
    train, held = split_views(subject.n_views, fit.holdout_views)
    print(f"subject {subject.subject_id} (unseen by phase A), preset {cfg.preset}: {subject.width}x{subject.height} "
          f"images, {len(train)} training / {len(held)} held-out views; planes 3x{tri.channels}x{tri.resolution}"
          f"x{tri.resolution}; decoder {tri.decoder.layers} layers x {tri.decoder.hidden}; {fit.rays_per_step} rays "
          f"per step; {torch.get_num_threads()} thread(s); target {fit.target_psnr:g} dB held out, checked every "
          f"{fit.eval_every} steps", flush=True)
    print(f"project: fit_subject ({fit.coarse_samples} coarse + {fit.fine_samples} importance samples, "
          f"rescale_prob {fit.rescale_prob:g}, regularisers, lr decay, at most {fit.steps} steps)", flush=True)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    warm = torch.stack(list(shared_planes.values())).mean(dim=0)  # (3, C, H, W): the flow's phase-B start
    project, project_planes = run_project(subject, decoder, cfg, args.time_limit, init=warm, label="project")
    print(f"load average after the project's fit: {os.getloadavg()[0]:.2f}", flush=True)
    cold, cold_planes = run_project(subject, decoder, cfg, args.time_limit, label="proj-cold")
    print(f"load average after the project's fit from random planes: {os.getloadavg()[0]:.2f}", flush=True)
    print(f"reference: {samples} dense stratified samples per ray, plain Adam, MSE only, random planes, at most "
          f"{max_steps} steps", flush=True)
    reference, reference_planes = run_reference(subject, decoder, cfg, samples, max_steps, args.time_limit)
    print(f"load average after the reference fit: {os.getloadavg()[0]:.2f}", flush=True)
    print()
    print("project: phase B as the flow runs it, from the mean of phase A's planes; proj-cold: the same from "
          "random planes, like the reference")
    print(f"{'fitter':<10} {'grad pts/step':>13} {'no-grad pts/step':>16} {'grad pts/s':>11} {'s/step':>7} "
          f"{'steps':>6} {'best held-out':>13}")
    timers = (project, cold, reference)
    for t in timers:
        print(f"{t.label:<10} {t.grad_points / max(t.steps, 1):13,.0f} {t.other_points / max(t.steps, 1):16,.0f} "
              f"{t.grad_points / max(t.seconds, 1e-9):11,.0f} {t.seconds / max(t.steps, 1):7.3f} {t.last_step:6d} "
              f"{t.best:10.2f} dB")
    for t in timers:
        if t.reached is not None:
            print(f"{t.label}: reached {fit.target_psnr:g} dB held out at step {t.reached[0]}, "
                  f"{t.reached[1]:.1f} s")
        else:
            print(f"{t.label}: did not reach {fit.target_psnr:g} dB within {t.elapsed:.0f} s "
                  f"({t.last_step} steps; best {t.best:.2f} dB)")
    for t in (project, cold):
        if t.reached is not None and reference.reached is not None:
            print(f"speed-up to target of {t.label} (reference seconds / its seconds): "
                  f"{reference.reached[1] / t.reached[1]:.2f}x")
        elif t.reached is not None:
            print(f"speed-up to target of {t.label}: more than {reference.elapsed / t.reached[1]:.2f}x "
                  f"(the reference did not reach it in {reference.last_step} steps)")
        else:
            print(f"speed-up to target of {t.label}: undefined (it did not reach the target)")
    print("same yardstick (rodin_core evaluate_psnr, coarse + importance rendering) of each fitter's best planes:")
    for t, planes in ((project, project_planes), (cold, cold_planes), (reference, reference_planes)):
        if planes is not None:
            print(f"  {t.label:<10} {evaluate_psnr(planes, decoder, subject, held, tri, fit):.2f} dB")


if __name__ == "__main__":
    main()
