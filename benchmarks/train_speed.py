"""Base-stage training speed (paper §3.2): the Ray Train path against a plain PyTorch loop, and FLOPs per step.

In one run, on one network (the preset's base U-Net, with its learned encoder) and one store of
fitted tri-planes:

- the store: by default a synthetic one, ``--subjects`` subjects (default ``corpus.subjects``)
  of smooth random tri-planes and frontal views, committed in a temporary folder through the
  project's writers (renders shards, :func:`~rodin_core.fitting.shard_job.write_planes`), then
  prepared as ``rodin train base`` prepares a store (frontal views extracted, plane statistics
  computed); the held-out subjects of ``corpus.holdout_subjects`` stay out of training. With
  ``--out DIR`` the committed tri-planes, frontals and statistics of a fitted dataset root are
  copied into the temporary folder instead (frontals and statistics are made there when missing,
  from ``--renders``), so that its checkpoints are never touched;
- FLOPs of one forward + backward pass of the base U-Net on a batch of ``base.train.batch_size``,
  and of one whole ``BaseStage.train_step`` (U-Net and learned encoder), for the current network
  (the 3D-aware convolution in factorised form) and the old one (the same config with the 3D-aware
  convolution computed in its unfactorised context form, ``aware_conv_overhead.context_form``),
  counted by ``FlopCounterMode`` (:mod:`rodin_core.networks.summary`), with the parameter counts;
- the plain loop: ``BaseStage(cfg, stats).train_step(batch, step)`` in this process for ``--steps``
  steps on full batches from the workers' data stream (:func:`workflows.train_worker.stage_batches`),
  with the torch threads one Ray worker gets;
- the Ray Train path: a local Ray (:func:`workflows.ray_runner.ray_session`, shut down at the end)
  and :func:`workflows.train_ray.run_training` of the base stage with ``--workers`` workers for
  ``--steps`` steps, as ``rodin train base`` runs it (checkpoint committed at the end). Ray starts
  its workers at nice 15 (``RAY_worker_niceness``); the script starts them at its own niceness, so
  that on a busy machine both paths get the same share of the CPUs (a ``RAY_worker_niceness`` in the
  environment is kept; the niceness of each path is printed).

Rates: the wall time of each path including its start-up (Ray start, trainer and workers, stage
build, the final checkpoint) and the steady-state rate, taken from the steps/s each worker logs
every ``log_every`` steps (checkpoint time left out) without the first window (start-up of the
data stream, first passes); the plain loop's steps are timed and windowed the same way. Then the
overhead ratio, Ray Train seconds per step over plain seconds per step (steady state, and end to
end). With several workers each takes ``batch_size / workers`` subjects per step, so the ratio also
holds the speed-up of data parallelism. It measures and prints; it asserts no timing. Run alone:

``.venv/bin/python benchmarks/train_speed.py [--steps 60] [--workers 1] [--subjects 16] [--set KEY=VALUE ...]
[--out DIR] [--json PATH]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch
from aware_conv_overhead import context_form

from rodin_core.config import RodinConfig, load_config
from rodin_core.datasets.frontals import extract_frontals_shard, plan_frontals
from rodin_core.datasets.layout import (
    FRONTALS_STAGE,
    RENDERS_STAGE,
    STATS_STAGE,
    TRIPLANES_STAGE,
    VIEWS_TABLE,
)
from rodin_core.datasets.plane_stats import ensure_stats
from rodin_core.datasets.renders import VIEWS_SCHEMA
from rodin_core.datasets.triplane_records import FitResult
from rodin_core.datasets.triplanes import TriplaneBatch
from rodin_core.fitting.shard_job import torch_threads, write_planes
from rodin_core.imaging import encode_png
from rodin_core.networks import TriplaneUNet, count_parameters
from rodin_core.networks.summary import flop_counter, training_flops
from rodin_core.storage import MANIFESTS, config_hash, open_store, shard_id_for
from rodin_core.training.base import BaseStage
from rodin_core.triplane.stats import PlaneStats
from workflows.ray_runner import ray_session
from workflows.train_ray import run_training
from workflows.train_worker import TrainJob, stage_batches

RUN_NAME = "train-speed"
"""Ray Train run name (in the temporary store)."""
WORKER_NICENESS = "RAY_worker_niceness"
"""The Ray setting of its workers' nice value (default 15), read from the environment when Ray starts."""


def benchmark_config(args: argparse.Namespace) -> RodinConfig:
    """The preset, ``--config``, ``--set`` overrides, then the base stage's steps, workers and log interval."""
    extra = [f"base.train.steps={args.steps}", f"base.train.workers={args.workers}"]
    if args.out is None and args.subjects is not None:
        extra.append(f"corpus.subjects={args.subjects}")
    cfg = load_config(args.preset, args.config_file, [*args.overrides, *extra])
    log_every = args.log_every or min(cfg.base.train.log_every, max(1, args.steps // 4))
    return load_config(args.preset, args.config_file, [*args.overrides, *extra, f"base.train.log_every={log_every}"])


# --- the store -------------------------------------------------------------------------------------------


def subject_planes(subject_id: int, cfg: RodinConfig) -> torch.Tensor:
    """Smooth random raw planes (3, C, H, W) of one subject, with per-channel offsets and scales."""
    generator = torch.Generator().manual_seed(subject_id)
    channels, size = cfg.triplane.channels, cfg.triplane.resolution
    coarse = torch.randn(3, channels, 4, 4, generator=generator)  # (3, C, 4, 4)
    planes = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    offsets = torch.linspace(-0.5, 0.5, channels)[None, :, None, None]  # (1, C, 1, 1)
    return offsets + 0.5 * planes  # (3, C, H, W)


def frontal_png(subject_id: int, size: int) -> bytes:
    """An RGBA frontal view (size, size, 4) of one subject: a coloured square on a transparent background."""
    rng = np.random.default_rng(subject_id)
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[size // 4: 3 * size // 4, size // 4: 3 * size // 4, :3] = rng.integers(0, 256, 3, dtype=np.uint8)
    rgba[size // 4: 3 * size // 4, size // 4: 3 * size // 4, 3] = 255
    return encode_png(rgba)


def write_synthetic_store(root: str, cfg: RodinConfig, subjects: int) -> None:
    """Commit ``subjects`` rendered frontal views and fitted tri-planes under ``root``, shards of ``corpus.shard_size``."""
    store = open_store(root)
    size, shard_size = cfg.render.resolution, cfg.corpus.shard_size
    camera = {"c2w": np.eye(4).ravel().tolist(), "intrinsics": np.eye(3).ravel().tolist(), "width": size,
              "height": size}
    for index, first in enumerate(range(0, subjects, shard_size)):
        ids = list(range(first, min(first + shard_size, subjects)))
        rows = [{"subject_id": s, "view_index": 0, "png": frontal_png(s, size), **camera} for s in ids]
        writer = store.stage(RENDERS_STAGE).begin(shard_id_for(index))
        writer.write_table(VIEWS_TABLE, pa.Table.from_pylist(rows, schema=VIEWS_SCHEMA))
        writer.commit(ids, config_hash({"benchmark": "train_speed", "resolution": size}), extra={"views": 1})
        results = [FitResult(s, subject_planes(s, cfg), 30.0, 30.0, 0, 0.0) for s in ids]
        write_planes(store.stage(TRIPLANES_STAGE).begin(shard_id_for(index)), results,
                     config_hash({"benchmark": "train_speed", "triplane": cfg.triplane.resolution}), {})


def copy_training_inputs(source: str, target: str) -> None:
    """Copy the committed shards (manifests and the files they name, verified) of the tri-planes, frontals and
    statistics of the dataset root ``source`` into ``target``, unchanged."""
    for name in (TRIPLANES_STAGE, FRONTALS_STAGE, STATS_STAGE):
        src, dst = open_store(source).stage(name), open_store(target).stage(name)
        for shard_id in src.committed_shards():
            manifest = src.read_manifest(shard_id)
            for entry in manifest.files:
                path = f"{dst.root}/{entry.path}"
                dst.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                dst.fs.pipe_file(path, src.read_bytes(shard_id, entry.name))
            dst.fs.makedirs(f"{dst.root}/{MANIFESTS}", exist_ok=True)
            dst.fs.pipe_file(f"{dst.root}/{MANIFESTS}/{shard_id}.json", manifest.to_json().encode("utf-8"))


def prepare_store(renders: str, out: str, cfg: RodinConfig) -> PlaneStats:
    """Frontal views and plane statistics of ``out``, made where missing as the training flows make them."""
    for job in plan_frontals(renders, out)[0]:
        extract_frontals_shard(renders, out, job)
    return ensure_stats(out, corpus=cfg.corpus)[0]


# --- FLOPs --------------------------------------------------------------------------------------------------


def unet_inputs(cfg: RodinConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Random base U-Net inputs of one training batch: x_t (B, C, h, 3h), t (B,), z (B, D)."""
    unet, batch = cfg.base.unet, cfg.base.train.batch_size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, unet.in_channels, unet.image_size, 3 * unet.image_size, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    z = torch.randn(batch, unet.latent_dim, generator=generator) if unet.latent_dim else None
    return x, t, z


def step_flops(cfg: RodinConfig, stats: PlaneStats, batch: TriplaneBatch) -> dict[str, int]:
    """FLOPs of one U-Net forward and backward pass and of one whole base ``train_step`` on ``batch``."""
    torch.manual_seed(0)
    forward, backward = training_flops(TriplaneUNet(cfg.base.unet), unet_inputs(cfg))
    stage = BaseStage(cfg, stats)
    with flop_counter() as counter:
        stage.train_step(batch, 0)
    return {"unet_forward": forward, "unet_backward": backward, "unet_training": forward + backward,
            "train_step": counter.get_total_flops()}


def flops_report(cfg: RodinConfig, stats: PlaneStats, batch: TriplaneBatch) -> dict[str, Any]:
    """Parameters and FLOPs per training step of the current network and of the old (context-form) one."""
    stage = BaseStage(cfg, stats)
    current = step_flops(cfg, stats, batch)
    with context_form():
        old = step_flops(cfg, stats, batch)
    return {"batch_size": cfg.base.train.batch_size, "unet_parameters": count_parameters(stage.model),
            "encoder_trainable_parameters": count_parameters(stage.encoder, trainable_only=True),
            "current": current, "old_context_form": old}


# --- the two training paths ---------------------------------------------------------------------------------


def windows(history: list[dict[str, float]], start: int = 0) -> list[tuple[int, float]]:
    """``(steps, seconds)`` of each logged window of a run, from its ``step`` and ``steps_per_s`` entries."""
    out, previous = [], start
    for entry in history:
        steps = int(entry["step"]) - previous
        out.append((steps, steps / entry["steps_per_s"]))
        previous = int(entry["step"])
    return out


def rate(spans: list[tuple[int, float]]) -> float:
    """Steps per second over ``(steps, seconds)`` spans (NaN when there are none)."""
    seconds = sum(s for _, s in spans)
    return sum(n for n, _ in spans) / seconds if seconds > 0 else math.nan


def plain_loop(cfg: RodinConfig, stats: PlaneStats, out: str, threads: int, steps: int) -> dict[str, Any]:
    """``BaseStage.train_step`` in this process on full batches, ``threads`` torch threads; timings."""
    log_every = cfg.base.train.log_every
    job = TrainJob("base", cfg.to_dict(), out, None, "plain", False, threads)
    with torch_threads(threads):
        began = time.perf_counter()
        stage = BaseStage(cfg, stats)
        batches = stage_batches(job, 0, 1, 0)
        built = time.perf_counter() - began
        seconds: list[float] = []
        for step in range(steps):
            before = time.perf_counter()
            stage.train_step(next(batches), step)
            seconds.append(time.perf_counter() - before)
        wall = time.perf_counter() - began
    spans = [(len(seconds[i:i + log_every]), sum(seconds[i:i + log_every])) for i in range(0, steps, log_every)]
    return {"threads": threads, "niceness": os.nice(0), "samples_per_step": cfg.base.train.batch_size,
            "build_s": built, "wall_s": wall,
            "step_s_median": statistics.median(seconds), "steps_per_s_all": rate(spans),
            "steps_per_s_steady": rate(spans[1:]), "windows": spans}


@contextlib.contextmanager
def workers_at_this_niceness(address: str | None) -> Iterator[None]:
    """While inside, a local Ray started here runs its workers at this process's niceness (not Ray's 15),
    unless ``RAY_worker_niceness`` is set already or Ray runs elsewhere (``address``)."""
    if address is not None or WORKER_NICENESS in os.environ:
        yield
        return
    os.environ[WORKER_NICENESS] = str(os.nice(0))
    try:
        yield
    finally:
        os.environ.pop(WORKER_NICENESS, None)


@ray.remote(num_cpus=0)
def _niceness() -> int:
    return os.nice(0)


def ray_worker_niceness() -> int:
    """The nice value of a worker of the connected Ray (one task)."""
    return ray.get(_niceness.remote())


def ray_train(cfg: RodinConfig, out: str, threads: int, address: str | None,
              on_progress: Callable[[str], None]) -> dict[str, Any]:
    """The base stage trained by :func:`run_training` on a Ray started (and shut down) here; timings."""
    train = cfg.base.train
    began = time.perf_counter()
    with workers_at_this_niceness(address), ray_session(address):
        ray_up = time.perf_counter() - began
        before = time.perf_counter()
        summary = run_training("base", cfg, out, run_name=RUN_NAME, resume=False, cpus_per_worker=threads,
                               on_progress=on_progress)
        trained = time.perf_counter() - before
        niceness = ray_worker_niceness()  # after training: its worker start-up is not timed
        shutdown_from = time.perf_counter()
    shutdown = time.perf_counter() - shutdown_from
    spans = windows(summary["history"], summary["start_step"])
    return {"workers": summary["workers"], "threads_per_worker": threads, "worker_niceness": niceness,
            "samples_per_step": train.batch_size // summary["workers"] * summary["workers"],
            "ray_start_s": ray_up, "run_training_s": trained, "ray_shutdown_s": shutdown,
            "wall_s": ray_up + trained + shutdown, "worker_s": summary["seconds"], "logged_steps_s": sum(s for _, s in spans),
            "steps_per_s_all": rate(spans), "steps_per_s_steady": rate(spans[1:]), "windows": spans,
            "loss_first": (summary["first"] or {}).get("loss"), "loss_last": (summary["last"] or {}).get("loss")}


# --- main -----------------------------------------------------------------------------------------------------


def print_flops(report: dict[str, Any]) -> None:
    current, old = report["current"], report["old_context_form"]
    print(f"\nFLOPs per training step, batch {report['batch_size']} (FlopCounterMode: matmuls and convolutions, "
          f"forward + backward); base U-Net {report['unet_parameters']:,} parameters, learned encoder "
          f"{report['encoder_trainable_parameters']:,}")
    print(f"{'network':40} {'U-Net fwd':>11} {'U-Net bwd':>11} {'U-Net fwd+bwd':>14} {'train_step':>11}")
    for name, flops in (("current (factorised 3D-aware conv)", current), ("old (3D-aware conv in context form)", old)):
        print(f"{name:40} {flops['unet_forward'] / 1e9:>9.3f} G {flops['unet_backward'] / 1e9:>9.3f} G "
              f"{flops['unet_training'] / 1e9:>12.3f} G {flops['train_step'] / 1e9:>9.3f} G")
    print(f"{'old / current':40} {old['unet_forward'] / current['unet_forward']:>10.2f}x "
          f"{old['unet_backward'] / current['unet_backward']:>10.2f}x "
          f"{old['unet_training'] / current['unet_training']:>13.2f}x {old['train_step'] / current['train_step']:>10.2f}x")


def print_speed(steps: int, plain: dict[str, Any], ray: dict[str, Any] | None) -> dict[str, float]:
    """The two paths side by side and the overhead ratios (returned)."""
    print(f"\n{steps} steps; steady state = the logged windows after the first")
    print(f"{'path':34} {'samples/step':>12} {'wall s':>8} {'steps/s all':>12} {'steady steps/s':>15} "
          f"{'steady samples/s':>17}")
    rows = [(f"plain loop, {plain['threads']} thread(s)", plain)]
    if ray is not None:
        rows.append((f"Ray Train, {ray['workers']} worker(s) x {ray['threads_per_worker']} thr.", ray))
    for name, row in rows:
        print(f"{name:34} {row['samples_per_step']:>12} {row['wall_s']:>8.1f} {row['steps_per_s_all']:>12.3f} "
              f"{row['steps_per_s_steady']:>15.3f} {row['steps_per_s_steady'] * row['samples_per_step']:>17.2f}")
    for name, row in rows:
        print(f"{name.split(',')[0]} steps/s per logged window: "
              f"{', '.join(f'{n / seconds:.3f}' for n, seconds in row['windows'])}")
    print(f"plain loop: stage built and data stream opened in {plain['build_s']:.2f} s; median step "
          f"{plain['step_s_median']:.3f} s; nice {plain['niceness']}")
    if ray is None:
        return {}
    print(f"Ray Train: Ray started in {ray['ray_start_s']:.1f} s, run_training {ray['run_training_s']:.1f} s (worker "
          f"{ray['worker_s']:.1f} s from stage build to return, of which {ray['logged_steps_s']:.1f} s logged steps), "
          f"Ray shut down in {ray['ray_shutdown_s']:.1f} s; loss {_fmt(ray['loss_first'])} -> {_fmt(ray['loss_last'])}; "
          f"workers at nice {ray['worker_niceness']}")
    ratios = {"steady": plain["steps_per_s_steady"] / ray["steps_per_s_steady"],
              "end_to_end": ray["wall_s"] / plain["wall_s"]}
    print(f"overhead, Ray Train s/step over plain s/step: steady state {ratios['steady']:.2f}x, end to end "
          f"(start-up included) {ratios['end_to_end']:.2f}x")
    return ratios


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny", help="named preset (default: tiny)")
    parser.add_argument("--config", dest="config_file", default=None, help="YAML file of config sections")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config field (repeatable), as the CLI's --set")
    parser.add_argument("--steps", type=int, default=60, help="training steps of each path (default 60)")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (base.train.workers; default 1)")
    parser.add_argument("--cpus-per-worker", type=int, default=None,
                        help="CPUs and torch threads of a Ray worker and of the plain loop (default: the "
                             "machine's cores divided by the workers, as run_training on a local Ray)")
    parser.add_argument("--log-every", type=int, default=None,
                        help="steps per logged window (default: base.train.log_every, lowered to steps / 4)")
    parser.add_argument("--subjects", type=int, default=None,
                        help="subjects of the synthetic store (default corpus.subjects; sets corpus.subjects)")
    parser.add_argument("--out", default=None, help="read a fitted dataset root instead of a synthetic store "
                                                    "(copied; its checkpoints are not touched)")
    parser.add_argument("--renders", default=None, help="renders root for missing frontal views (default --out)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--no-ray", action="store_true", help="only the FLOPs and the plain loop")
    parser.add_argument("--json", default=None, help="also write the numbers as JSON to this path")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    cfg = benchmark_config(args)
    threads = args.cpus_per_worker or max(1, (os.cpu_count() or 1) // args.workers)
    train = cfg.base.train
    print(f"preset {args.preset}{' ' + ' '.join(args.overrides) if args.overrides else ''}: base stage, batch "
          f"{train.batch_size}, {args.steps} steps, log every {train.log_every}, {args.workers} Ray worker(s) x "
          f"{threads} CPU(s); plain loop with {threads} torch thread(s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="rodin-train-speed-") as folder:
        out = str(Path(folder) / "store")
        began = time.perf_counter()
        if args.out is None:
            subjects = cfg.corpus.subjects
            write_synthetic_store(out, cfg, subjects)
            stats = prepare_store(out, out, cfg)
            source = f"synthetic, {subjects} subjects"
        else:
            copy_training_inputs(args.out, out)
            stats = prepare_store(args.renders or args.out, out, cfg)
            source = f"copy of {args.out}"
        print(f"store: {source}, {stats.count} training subjects ({cfg.corpus.held_out_count} held out), "
              f"ready in {time.perf_counter() - began:.1f} s", flush=True)
        with torch_threads(threads):
            first = next(stage_batches(TrainJob("base", cfg.to_dict(), out, None, "flops", False, threads), 0, 1, 0))
            flops = flops_report(cfg, stats, first)
        print_flops(flops)
        print(f"\nplain loop: {args.steps} steps ...", flush=True)
        plain = plain_loop(cfg, stats, out, threads, args.steps)
        ray = None
        if not args.no_ray:
            print(f"Ray Train: {args.steps} steps ...", flush=True)
            ray = ray_train(cfg, out, threads, args.ray_address, lambda line: print(f"  | {line}", flush=True))
        ratios = print_speed(args.steps, plain, ray)
    result = {"preset": args.preset, "overrides": args.overrides, "steps": args.steps,
              "log_every": train.log_every, "batch_size": train.batch_size, "store": source,
              "training_subjects": stats.count, "flops": flops, "plain": plain, "ray": ray, "overhead": ratios}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
