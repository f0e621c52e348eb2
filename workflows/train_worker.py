"""What each Ray Train worker of a training run does (paper §3.2, §3.3, appendix B.1, B.4).

:func:`train_worker` is the ``train_loop_per_worker`` of :func:`workflows.train_ray.run_training`:
it picks the checkpoint to resume from (:func:`find_resume_point`), builds the stage and restores
it, checking the restored state against the checkpoint bit for bit (:func:`state_digest`), then runs
:func:`rodin_core.training.loop.run_stage` on its own part of the data. :class:`Progress` averages
the logged metrics over the workers, reports them to Ray Train and, on rank 0, sends the progress
lines to the driver and writes, commits and reports every checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import ray
import ray.train
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader

from rodin_core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from rodin_core.config import RodinConfig, TrainConfig, saved_held_out_from
from rodin_core.datasets.checkpoints import (
    commit_stage_checkpoint,
    committed_step,
    read_stage_checkpoint,
)
from rodin_core.datasets.decoder import load_decoder
from rodin_core.datasets.layout import CHECKPOINTS_STAGE, STATS_PREFIX
from rodin_core.datasets.plane_stats import read_plane_stats
from rodin_core.datasets.triplanes import TriplaneDataset, collate_samples
from rodin_core.stage_specs import TEXT_PRIOR, stage_config, train_config_for
from rodin_core.storage import is_disk_full
from rodin_core.training.latents import read_latents
from rodin_core.training.loop import run_stage
from rodin_core.training.prior import latent_batches
from rodin_core.training.registry import build_stage
from rodin_core.training.stage import Stage
from rodin_core.training.text_pairs import read_text_pairs
from rodin_core.training.text_prior import text_latent_batches
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.stats import PlaneStats

log = logging.getLogger(__name__)

SHUFFLE_BUFFER = 256
"""Subjects mixed across consecutive shards by each worker's data stream."""


class ResumeMismatchError(ValueError):
    """The checkpoint to resume from was trained with another network or diffusion process."""


class InjectedFailure(RuntimeError):
    """The failure a drill asked for (``fail_at_step``): every worker raises it at that step."""


class DiskFullStop(Exception):
    """Every worker stops: rank 0 could not commit a checkpoint because the disk is full (the message says where)."""


@dataclass(frozen=True)
class TrainJob:
    """What every worker of one run needs (JSON, Ray's ``train_loop_config``)."""

    stage: str
    config: dict[str, Any]
    """``RodinConfig.to_dict()``."""
    out: str
    storage_options: dict | None
    run_name: str
    resume: bool
    threads: int
    """Torch threads per worker (its CPUs)."""
    fail_at_step: int | None = None
    """Drills only: a run that did not resume raises :class:`InjectedFailure` after this many steps."""

    @functools.cached_property
    def rodin(self) -> RodinConfig:
        return RodinConfig.from_dict(self.config)

    @property
    def train(self) -> TrainConfig:
        return train_config_for(self.stage, self.rodin)


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to continue from and where it came from."""

    checkpoint: Checkpoint
    origin: str


def train_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """The per-worker function of the TorchTrainer: resume or build the stage, train, checkpoint.

    Returns the run's summary on rank 0 (None elsewhere).
    """
    config = dict(config)
    relay = config.pop("progress", None)
    job = TrainJob(**config)
    torch.set_num_threads(job.threads)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    cfg, train = job.rodin, job.train
    device = ray.train.torch.get_device()
    point = find_resume_point(job)
    stats = _stats_for(job, point)
    text = None  # the text prior's pairs: text (M, E) matched with latents (M, D)
    if job.stage == TEXT_PRIOR:
        _, text, latents = read_text_pairs(job.out, job.storage_options)
    else:
        latents = read_latents(job.out, job.storage_options)[1] if job.stage == "prior" else None  # (N, D)
    stage = build_stage(job.stage, cfg, stats, _decoder_for(job, cfg), device, latents, rank=rank)
    start, history, resumed = 0, [], None
    if point is not None:
        resumed = restore(stage, point)
        start = point.checkpoint.step
        history = [h for h in point.checkpoint.metrics.get("history", []) if h["step"] <= start]
    progress = Progress(job, stage, stats, rank, world, start, history, relay)
    if resumed is not None:
        progress.say(f"{job.stage}: resumed at step {start} from the {resumed['origin']} "
                     f"(state sha256 {resumed['state_sha256'][:16]}, checked)")
    try:
        if resumed is not None:
            progress.commit_restored(start)
        if start >= train.steps:
            progress.say(f"{job.stage}: already trained for {start} steps (train.steps={train.steps}); nothing to do")
        else:
            batches = _fail_at(stage_batches(job, rank, world, start, latents, text), job, start)
            run_stage(stage, batches, start, train.steps, on_log=progress.on_log,
                      on_checkpoint=progress.on_checkpoint, log_every=train.log_every,
                      checkpoint_every=train.checkpoint_every)
    except DiskFullStop as stop:  # returned, not raised: a retry would meet the same full disk
        return {**progress.summary(resumed), "disk_full": str(stop)} if rank == 0 else None
    return progress.summary(resumed) if rank == 0 else None


def find_resume_point(job: TrainJob) -> ResumePoint | None:
    """The checkpoint with the most steps among Ray Train's (same run) and, with ``resume``, the store's."""
    candidates = []
    reported = ray.train.get_checkpoint()
    if reported is not None:
        with reported.as_directory() as folder:
            candidates.append(ResumePoint(load_checkpoint(folder), f"Ray run checkpoint {reported.path}"))
    if job.resume and committed_step(job.out, job.stage, job.storage_options) is not None:
        checkpoint, manifest = read_stage_checkpoint(job.out, job.stage, job.storage_options)
        candidates.append(ResumePoint(checkpoint, f"committed checkpoint {job.out}/{CHECKPOINTS_STAGE}/"
                                                  f"{job.stage} (attempt {manifest.attempt_id})"))
    if not candidates:
        return None
    point = max(candidates, key=lambda p: p.checkpoint.step)
    check_compatible(job.stage, job.rodin, point.checkpoint.config, point.origin)
    return point


def check_compatible(stage_name: str, cfg: RodinConfig, saved: dict[str, Any], origin: str) -> None:
    """Refuse to resume from a checkpoint (its ``config``) of another network or diffusion process,
    naming the differences."""
    wanted = stage_config(stage_name, cfg)
    differences = [f"{section}.{key}: checkpoint {saved.get(section, {}).get(key)!r}, config {value!r}"
                   for section in ("network", "diffusion") for key, value in wanted[section].items()
                   if _plain(saved.get(section, {}).get(key)) != _plain(value)]
    if saved.get("stage") != stage_name:
        differences.insert(0, f"stage: checkpoint {saved.get('stage')!r}, config {stage_name!r}")
    saved_from, wanted_from = saved_held_out_from(saved.get("rodin") or {}), cfg.corpus.first_held_out
    if saved_from != wanted_from:
        differences.append(f"held-out subjects (corpus.holdout_subjects): checkpoint {_from_words(saved_from)}, "
                           f"config {_from_words(wanted_from)}")
    if differences:
        raise ResumeMismatchError(f"cannot resume {stage_name} from the {origin}: it was trained with another setup "
                         f"({'; '.join(differences[:8])}). Train from scratch under a new run name "
                         f"(`rodin train {stage_name.replace('_', '-')} --fresh ...`) or go back to the checkpoint's "
                         "config")


def _from_words(held_out_from: int | None) -> str:
    return "none" if held_out_from is None else f"ids from {held_out_from}"


def _plain(value: Any) -> Any:
    """JSON round trip, so that tuples and lists compare equal."""
    return json.loads(json.dumps(value))


def _stats_for(job: TrainJob, point: ResumePoint | None) -> PlaneStats | None:
    """The checkpoint's statistics when resuming (what the weights were trained with), else the store's."""
    if job.stage in ("prior", TEXT_PRIOR):
        return None
    if point is not None and f"{STATS_PREFIX}mean" in point.checkpoint.extra_tensors:
        return PlaneStats.from_tensors(point.checkpoint.extra_tensors, STATS_PREFIX)
    return read_plane_stats(job.out, job.storage_options)


def _decoder_for(job: TrainJob, cfg: RodinConfig) -> TriplaneDecoder | None:
    """The frozen decoder, for the upsampler's perceptual loss."""
    if job.stage != "upsampler" or cfg.upsampler.perceptual_weight <= 0:
        return None
    return load_decoder(job.out, job.storage_options)[0]


def restore(stage: Stage, point: ResumePoint) -> dict[str, Any]:
    """Load ``point`` into the stage's modules and optimizers (strict) and check the result bit for bit."""
    checkpoint = point.checkpoint
    checkpoint.restore(stage.modules, stage.optimizers, strict=True)
    expected = checkpoint_digest(checkpoint)
    actual = state_digest({n: m.state_dict() for n, m in stage.modules.items()},
                          {n: o.state_dict() for n, o in stage.optimizers.items()})
    if actual != expected:
        raise RuntimeError(f"restoring the {point.origin} did not reproduce its tensors (state sha256 {actual}, "
                           f"checkpoint {expected}); the checkpoint or the stage code changed: train with --fresh")
    return {"step": checkpoint.step, "origin": point.origin, "state_sha256": actual}


def checkpoint_digest(checkpoint: Checkpoint) -> str:
    """:func:`state_digest` of what a checkpoint holds (its extra tensors left out)."""
    return state_digest({n: checkpoint.module_state(n) for n in checkpoint.module_names},
                        {n: checkpoint.optimizer_state(n) for n in checkpoint.optimizer_names})


def state_digest(modules: Mapping[str, Mapping[str, Tensor]], optimizers: Mapping[str, Mapping[str, Any]]) -> str:
    """sha256 over module state dicts and optimizer state dicts, in a canonical order.

    Tensors count by name, dtype, shape and bytes; optimizer hyper-parameters by their JSON.
    """
    digest = hashlib.sha256()

    def tensor(name: str, value: Tensor) -> None:
        value = value.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())

    for module in sorted(modules):
        for key in sorted(modules[module]):
            tensor(f"{module}.{key}", modules[module][key])
    for name in sorted(optimizers):
        state = optimizers[name]
        for index in sorted(state["state"]):
            for key in sorted(state["state"][index]):
                value = state["state"][index][key]
                if isinstance(value, Tensor):
                    tensor(f"{name}.{index}.{key}", value)
                else:
                    digest.update(f"{name}.{index}.{key}={json.dumps(value)}".encode())
        digest.update(json.dumps(state["param_groups"], sort_keys=True, default=list).encode())
    return digest.hexdigest()


def stage_batches(job: TrainJob, rank: int, world: int, start: int, latents: Tensor | None = None,
                  text: Tensor | None = None) -> Iterator[Any]:
    """This rank's endless batches: ``batch_size / workers`` subjects (or rows of ``latents``, the prior's, or pairs
    of ``text`` and ``latents``, the text prior's) per step.

    Held-out subjects (``corpus.holdout_subjects``, §4.5) are never read. The data order is drawn from
    ``train.seed + start``, so a resumed run gets a fresh shuffle.
    """
    train = job.train
    per_rank = train.batch_size // world
    if per_rank < 1:
        raise ValueError(f"{job.stage}.train.batch_size={train.batch_size} is smaller than the {world} workers; "
                         f"raise it or lower {job.stage}.train.workers")
    if train.batch_size % world:
        log.warning("%s.train.batch_size=%d is not a multiple of %d workers: the global batch is %d", job.stage,
                    train.batch_size, world, per_rank * world)
    if job.stage == TEXT_PRIOR:
        return text_latent_batches(text, latents, per_rank, seed=train.seed + start, rank=rank, world_size=world)
    if job.stage == "prior":
        return latent_batches(latents, per_rank, seed=train.seed + start, rank=rank, world_size=world)
    dataset = TriplaneDataset(job.out, job.storage_options, rank=rank, world_size=world, seed=train.seed + start,
                              shuffle_buffer=SHUFFLE_BUFFER, held_out_from=job.rodin.corpus.first_held_out)
    return iter(DataLoader(dataset, batch_size=per_rank, collate_fn=collate_samples, num_workers=0))


def _fail_at(batches: Iterator[Any], job: TrainJob, start: int) -> Iterator[Any]:
    """``batches``, raising :class:`InjectedFailure` after ``job.fail_at_step`` steps of a run that did not resume."""
    for step, batch in enumerate(batches, start=start):
        if job.fail_at_step is not None and start == 0 and step == job.fail_at_step:
            raise InjectedFailure(f"drill: {job.stage} worker fails after {step} steps (fail_at_step)")
        yield batch


class Progress:
    """The callbacks of :func:`run_stage` on one worker: metrics, progress lines, checkpoints.

    Logged metrics are averaged over the workers; every worker reports them to Ray Train (a
    barrier), rank 0 keeps the history, prints progress lines and writes and commits checkpoints.
    """

    def __init__(self, job: TrainJob, stage: Stage, stats: PlaneStats | None, rank: int, world: int, start: int,
                 history: list[dict[str, float]], relay: Any = None) -> None:
        self.job, self.stage, self.stats, self.relay = job, stage, stats, relay
        self.rank, self.world, self.start = rank, world, start
        self.history = list(history)
        self.train = job.train
        self.began = time.perf_counter()
        self.last: dict[str, float] = {}
        self.committed: str | None = None

    def say(self, line: str) -> None:
        """A progress line of rank 0: to the driver through the relay, else to this worker's log."""
        if self.rank != 0:
            return
        if self.relay is not None:
            try:
                ray.get(self.relay.push.remote(line))  # waited for: the last lines must not be lost at exit
                return
            except ray.exceptions.RayActorError:  # the driver is gone (stopped): nobody reads the relay any more
                self.relay = None
        log.info("%s", line)

    def is_checkpoint_step(self, done: int) -> bool:
        return done % self.train.checkpoint_every == 0 or done == self.train.steps

    def on_log(self, done: int, metrics: dict[str, float]) -> None:
        self.last = self._averaged(metrics)
        if self.rank == 0:
            self.history.append(self.last)
            self._print(done)
        if not self.is_checkpoint_step(done):
            ray.train.report(self.last)

    def on_checkpoint(self, done: int) -> None:
        """Commit the checkpoint of ``done`` steps (rank 0) and report it to Ray Train (every rank). A full disk
        stops every worker with :class:`DiskFullStop` after the report, so that none waits for the others."""
        full = None
        with tempfile.TemporaryDirectory(prefix=f"rodin-{self.job.stage}-") as folder:
            checkpoint = None
            if self.rank == 0:
                full = self._save_unless_full(folder, done)
                checkpoint = None if full else ray.train.Checkpoint.from_directory(folder)
            ray.train.report(self.last or {"step": float(done)}, checkpoint=checkpoint,
                             checkpoint_dir_name=f"step-{done:08d}")
        self._stop_if_full(full)

    def _save_unless_full(self, folder: str, done: int) -> str | None:
        """:meth:`_save`; when the disk is full, the reason instead (any other error is raised)."""
        try:
            self._save(folder, done)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            return f"the disk is full: the checkpoint of step {done} could not be committed ({exc})"
        return None

    def _stop_if_full(self, full: str | None) -> None:
        """:class:`DiskFullStop` on every worker when rank 0 met a full disk (one all-reduce when there are several)."""
        flag = full is not None
        if self.world > 1 and dist.is_initialized():
            value = torch.tensor([1.0 if flag else 0.0])
            dist.all_reduce(value)
            flag = bool(value.item() > 0)
        if flag:
            raise DiskFullStop(full or "the disk is full on rank 0")

    def commit_restored(self, done: int) -> None:
        """Commit the state restored at ``done`` steps when the store's checkpoint of the stage is missing or older.

        Ray's run folder keeps its own copies of the checkpoints. When the store's manifest was deleted (the repair
        of a damaged checkpoint file) or its commit was lost, the run resumes from Ray's copy; generation reads the
        store, so the store gets it back here, before any further step (a run already at ``train.steps`` would
        otherwise end without committing anything)."""
        full = None
        if self.rank == 0:
            committed = committed_step(self.job.out, self.job.stage, self.job.storage_options)
            if committed is None or committed < done:
                with tempfile.TemporaryDirectory(prefix=f"rodin-{self.job.stage}-") as folder:
                    full = self._save_unless_full(folder, done)
        self._stop_if_full(full)

    def _averaged(self, metrics: dict[str, float]) -> dict[str, float]:
        """``metrics`` averaged over the workers (one all-reduce), ``step`` and ``steps_per_s`` as given."""
        if self.world == 1 or not dist.is_initialized():
            return dict(metrics)
        keys = sorted(k for k in metrics if k not in ("step", "steps_per_s"))
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(values)
        return {**metrics, **dict(zip(keys, (values / self.world).tolist(), strict=True))}

    def _print(self, done: int) -> None:
        total = self.train.steps
        rate = self.last.get("steps_per_s", 0.0)
        eta = (total - done) / rate if rate > 0 else float("nan")
        terms = ", ".join(f"{k} {v:.4g}" for k, v in self.last.items() if k not in ("step", "steps_per_s", "lr"))
        self.say(f"{self.job.stage}: step {done}/{total} ({100.0 * done / total:.0f}%), {terms}, "
                 f"lr {self.last.get('lr', 0.0):.2e}, {rate:.2f} steps/s, ETA {_duration(eta)}")

    def _save(self, folder: str, done: int) -> None:
        """Write the checkpoint of ``done`` steps into ``folder`` and commit it to the store."""
        extra = self.stats.as_tensors(STATS_PREFIX) if self.stats is not None else {}
        config = self.stage.config()
        save_checkpoint(folder, modules=self.stage.modules, optimizers=self.stage.optimizers, step=done,
                        config=config, extra_tensors=extra, metrics={"last": self.last, "history": self.history})
        manifest = commit_stage_checkpoint(
            self.job.out, self.job.stage, folder, config,
            {"step": done, "run": self.job.run_name, "final": done >= self.train.steps, "workers": self.world},
            self.job.storage_options)
        self.committed = f"{self.job.out}/{CHECKPOINTS_STAGE}/{self.job.stage}"
        self.say(f"{self.job.stage}: checkpoint at step {done} committed to {self.committed} "
                 f"(attempt {manifest.attempt_id})")

    def summary(self, resumed: dict[str, Any] | None) -> dict[str, Any]:
        """The run's summary: steps, resume point, first/last logged metrics, mean steps/s, history."""
        run = [h for h in self.history if h["step"] > self.start]
        rates = [h["steps_per_s"] for h in run if h.get("steps_per_s")]
        return {
            "stage": self.job.stage, "run_name": self.job.run_name, "workers": self.world,
            "start_step": self.start, "steps": self.train.steps, "steps_run": max(0, self.train.steps - self.start),
            "resumed": resumed, "first": self.history[0] if self.history else None,
            "last": self.history[-1] if self.history else None,
            "steps_per_s": sum(rates) / len(rates) if rates else None,
            "seconds": round(time.perf_counter() - self.began, 3), "history": self.history,
            "checkpoint": self.committed,
        }


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
