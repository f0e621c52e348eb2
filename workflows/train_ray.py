"""Each training stage as a Ray Train job (paper §3.2, §3.3, appendix B.1, B.4).

:func:`run_training` launches a ``TorchTrainer`` (Ray Train V2, the default in Ray 2.60) with
``{stage}.train.workers`` data-parallel workers (one GPU each with ``use_gpu``, else CPUs). Every
worker builds the stage (:func:`rodin_core.training.registry.build_stage`), streams its own part of the
corpus and runs :func:`rodin_core.training.loop.run_stage`; gradients are averaged by the stage
itself, so modules are never wrapped and checkpoint keys never get a ``module.`` prefix.

Checkpoints, every ``checkpoint_every`` steps and after the last: rank 0 writes a safetensors + JSON
checkpoint (model, EMA, optimizer, step, config, normalisation statistics, the metrics history),
commits it to ``{out}/checkpoints/`` as the stage's shard (what generation reads) and reports it
to Ray Train, whose runs live under ``{out}/checkpoints/runs/<run name>/`` (the store itself, local
or an object store through fsspec).

Resume, from the checkpoint with the most steps among:

- Ray Train's own: after a worker failure (``FailureConfig(max_failures)``), and when a run is
  launched again with the same name and storage (Train V2 has no ``Trainer.restore``: a new
  trainer with the same ``RunConfig(name, storage_path)`` finds the run's checkpoints);
- the stage's committed checkpoint in the store (``resume=True``), e.g. after the run folder was
  lost or with another run name.

The restored model and optimizer state is checked against the checkpoint (a sha256 over every
tensor) and the run continues at the next step; ``resume=False`` starts a fresh run under a new name.
What each worker does is in :mod:`workflows.train_worker`; this module is the driver's side.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any

import pyarrow.fs
import ray
import ray.train
import torch
from ray.train import (
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer

from rodin_core.config import RodinConfig, TrainConfig
from rodin_core.datasets.checkpoints import committed_config, committed_step
from rodin_core.datasets.errors import StageInputError
from rodin_core.datasets.layout import CHECKPOINTS_STAGE, RUNS_FOLDER
from rodin_core.encoders import names_a_file
from rodin_core.stage_specs import TRAINED_STAGES, train_config_for
from rodin_core.storage import Store, absolute_uri, open_store
from rodin_core.training.latents import ensure_latents
from workflows.ray_runner import ray_session
from workflows.shards import DATA_ERRORS
from workflows.train_worker import TrainJob, check_compatible, train_worker

log = logging.getLogger(__name__)

PROGRESS_POLL_S = 2.0
"""Seconds between two reads of the workers' progress lines by the driver."""
RAY_TRAIN_LOG_LEVEL = "WARNING"
"""Ray Train's own console logs (one line per report at INFO); progress comes through the relay."""
CHECKPOINTS_KEPT = 2
"""Checkpoints Ray Train keeps per run (``CheckpointConfig(num_to_keep)``)."""


class TrainingError(RuntimeError):
    """A training run failed after its retries; the message says how to resume it."""


class TrainingDiskFullError(TrainingError):
    """A training run stopped because its checkpoint could not be committed to a full disk (not retried: a retry would
    meet the same disk); the message names the file and the command that resumes once there is space."""


class TrainingDataError(TrainingError, StageInputError):
    """A training run stopped on a missing or damaged input; the message names it and the command that repairs it."""


def run_training(
    stage_name: str,
    cfg: RodinConfig,
    out: str,
    storage_options: dict | None = None,
    ray_address: str | None = None,
    run_name: str | None = None,
    resume: bool = True,
    cpus_per_worker: int | None = None,
    fail_at_step: int | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train stage ``stage_name`` of ``cfg`` on the corpus at ``out`` with Ray Train; returns rank 0's summary.

    Rank 0's progress lines (step, loss terms, steps/s, ETA, checkpoints) are passed to
    ``on_progress`` in the calling thread (default: this module's logger).
    ``run_name`` defaults to the stage name, so that launching the same command again resumes the
    run; ``resume=False`` trains from scratch under ``{stage}-{UTC time}`` instead (or under
    ``run_name``, which must then be new). ``cpus_per_worker`` defaults to the largest node's CPUs
    divided by the workers. The summary: ``{stage, run_name, workers, start_step, steps, steps_run,
    resumed, first, last, steps_per_s, seconds, history, checkpoint}``
    (see :func:`workflows.train_worker.train_worker`).
    Raises :class:`TrainingError` when the run fails after ``train.max_failures`` retries
    (:class:`TrainingDataError`, which is not resumed, when a worker failed on its input data), and
    :class:`TrainingDiskFullError` at once when a checkpoint could not be committed to a full disk.
    """
    if stage_name not in TRAINED_STAGES:
        raise ValueError(f"unknown training stage {stage_name!r}; choose one of {TRAINED_STAGES}")
    out = absolute_uri(out)  # the workers run in Ray Train's own working directories
    cfg = with_absolute_paths(cfg)
    store = open_store(out, storage_options)
    storage_path, filesystem = ray_storage(store)
    train = train_config_for(stage_name, cfg)
    name = run_name or (stage_name if resume else f"{stage_name}-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    if not resume and _run_exists(store, name):
        raise ValueError(f"run {name!r} already exists under {storage_path}; with resume=False pick a new run name")
    saved = committed_config(out, stage_name, storage_options) if resume else None
    if saved is not None:  # the common mismatch, caught before Ray starts (workers check every candidate)
        where = f"committed checkpoint {out}/{CHECKPOINTS_STAGE}/{stage_name}"
        check_compatible(stage_name, cfg, saved, where)
    with ray_session(ray_address):
        threads = cpus_per_worker or default_cpus_per_worker(train.workers)
        job = TrainJob(stage_name, cfg.to_dict(), out, storage_options, name, resume, threads, fail_at_step)
        if stage_name == "prior":
            ensure_latents_on_ray(job)
        relay = ProgressRelay.remote()
        resources = {"CPU": threads, **({"GPU": 1} if train.use_gpu else {})}
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={**dataclasses.asdict(job), "progress": relay},
            scaling_config=ScalingConfig(num_workers=train.workers, use_gpu=train.use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=filesystem,
                                 failure_config=FailureConfig(max_failures=train.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
                                 logging_config=LoggingConfig(log_level=RAY_TRAIN_LOG_LEVEL)),
        )
        log.info("training %s: run %r, %d worker(s) x %d CPU%s, %d steps; Ray run folder %s/%s", stage_name, name,
                 train.workers, threads, " + 1 GPU" if train.use_gpu else "", train.steps, storage_path, name)
        stopped = False
        try:
            result = fit_with_progress(trainer, relay, on_progress or log.info)
        except KeyboardInterrupt:  # SIGTERM or Ctrl-C: the relay ends with the Ray session; killed now, the worker
            stopped = True         # still training would fail on its next line with a traceback of its own
            raise
        except ray.train.TrainingFailedError as exc:
            raise (input_data_error(stage_name, exc)
                   or TrainingError(failure_message(stage_name, out, storage_options, train, exc))) from exc
        finally:
            if not stopped:
                ray.kill(relay)
    summary = result.return_value
    if isinstance(summary, dict) and summary.get("disk_full"):
        raise TrainingDiskFullError(f"training {stage_name} stopped: {summary['disk_full']}; free space on that disk. "
                                    f"{resume_advice(stage_name, out, storage_options)}")
    return summary


@ray.remote(num_cpus=0)
class ProgressRelay:
    """Progress lines of rank 0, held until the driver reads them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def push(self, line: str) -> None:
        self.lines.append(line)

    def drain(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


def fit_with_progress(trainer: TorchTrainer, relay: Any, on_progress: Callable[[str], None]) -> Any:
    """``trainer.fit()`` in a helper thread while this thread passes the relayed lines to ``on_progress``.

    The helper is a daemon thread: when this thread is stopped (SIGTERM or Ctrl-C raise here), the stop
    unwinds at once instead of waiting for a fit that only ends with the Ray session, whose shutdown then
    ends the run's actors; the run resumes from its last committed checkpoint."""
    future: Future = Future()

    def fit() -> None:
        try:
            future.set_result(trainer.fit())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, which raises it
            future.set_exception(exc)

    threading.Thread(target=fit, name="ray-train-fit", daemon=True).start()
    done = False
    while not done:
        try:
            future.result(timeout=PROGRESS_POLL_S)
            done = True
        except FutureTimeout:
            pass
        except Exception:  # noqa: BLE001 - the lines before a failure matter most; result() raises it below
            done = True
        for line in ray.get(relay.drain.remote()):
            on_progress(line)
    return future.result()


def with_absolute_paths(cfg: RodinConfig) -> RodinConfig:
    """``cfg`` with the encoder's relative local weights files made absolute against this process's working
    directory (:func:`~rodin_core.storage.absolute_uri`): the workers, which read them, run in Ray Train's own
    working directories. Those are ``encoder.avatar_clip_weights`` of ``avatar_clip`` and ``encoder.clip_pretrained``
    of ``clip`` when it names a file (:func:`~rodin_core.encoders.names_a_file`), not an open_clip tag. Other URIs and
    every other field are unchanged; ``cfg`` itself is not modified."""
    encoder = cfg.encoder
    if encoder.kind == "avatar_clip" and encoder.avatar_clip_weights:
        encoder = dataclasses.replace(encoder, avatar_clip_weights=absolute_uri(encoder.avatar_clip_weights))
    elif encoder.kind == "clip" and names_a_file(encoder.clip_pretrained):
        encoder = dataclasses.replace(encoder, clip_pretrained=absolute_uri(os.path.expanduser(encoder.clip_pretrained)))
    return cfg if encoder is cfg.encoder else dataclasses.replace(cfg, encoder=encoder)


def ray_storage(store: Store) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` of Ray Train's runs: ``{out}/checkpoints/runs`` in the store.

    A local store is a local path; any other fsspec store goes through pyarrow's fsspec handler
    (with the store's storage options). ``memory://`` is refused: workers are other processes.
    """
    protocols = store.fs.protocol if isinstance(store.fs.protocol, (tuple, list)) else (store.fs.protocol,)
    path = f"{store.root}/{CHECKPOINTS_STAGE}/{RUNS_FOLDER}"
    if "memory" in protocols:
        raise ValueError(f"Ray Train workers run in their own processes and cannot see the in-memory store "
                         f"{store.uri}; train on a local folder or an object store (s3://...)")
    if "file" in protocols or "local" in protocols:
        return os.path.abspath(path), None
    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(store.fs))


def _run_exists(store: Store, name: str) -> bool:
    return bool(store.fs.exists(f"{store.root}/{CHECKPOINTS_STAGE}/{RUNS_FOLDER}/{name}"))


def default_cpus_per_worker(workers: int) -> int:
    """The largest live node's CPUs divided among ``workers`` (at least 1)."""
    cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")]
    return max(1, int(max(cpus, default=1)) // max(1, workers))


def ensure_latents_on_ray(job: TrainJob) -> None:
    """Commit the prior's training latents (:func:`rodin_core.training.latents.ensure_latents`) in a Ray task
    with one worker's resources, before the trainer starts."""
    train = job.train

    @ray.remote(num_cpus=job.threads, num_gpus=1 if train.use_gpu else 0)
    def encode(config: dict, out: str, storage_options: dict | None, threads: int) -> tuple[int, bool]:
        torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return ensure_latents(RodinConfig.from_dict(config), out, storage_options, device)

    count, computed = ray.get(encode.remote(job.config, job.out, job.storage_options, job.threads))
    log.info("prior latents of %d subjects %s", count, "encoded and committed" if computed else "already current")


def input_data_error(stage_name: str, error: Exception) -> TrainingDataError | None:
    """The :class:`TrainingDataError` of a run whose workers failed on their input data (a relaunch would
    fail the same way, so it names the repair, not a resume), or None."""
    failures = (getattr(error, "worker_failures", None) or {}).values()
    data = [failure for failure in failures if isinstance(failure, DATA_ERRORS)]
    if not data:
        return None
    return TrainingDataError(f"training {stage_name} stopped on its input data: {' '.join(str(data[0]).split())}")


def failure_message(stage_name: str, out: str, storage_options: dict | None, train: TrainConfig,
                    error: Exception) -> str:
    """What failed (each failed worker's own error), and the command that resumes from the last checkpoint."""
    failures = getattr(error, "worker_failures", None) or {}
    causes = sorted({f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
                     for exc in failures.values()}) or [f"{type(error).__name__}: {str(error).strip()[-400:]}"]
    advice = resume_advice(stage_name, out, storage_options)
    return f"training {stage_name} failed after {train.max_failures} retries ({'; '.join(causes)[:800]}). {advice}"


def resume_advice(stage_name: str, out: str, storage_options: dict | None) -> str:
    """The command that resumes ``stage_name`` from what the store holds, as one sentence."""
    step = committed_step(out, stage_name, storage_options)
    where = f"from its committed checkpoint at step {step}" if step else "from scratch (no checkpoint was committed)"
    return (f"Launch the same command again to resume {where}: "
            f"`rodin train {stage_name.replace('_', '-')} --out {out}`")
