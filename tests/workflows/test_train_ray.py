"""Training stages as Ray Train jobs (workflows.train_ray): kill-and-resume, data-parallel workers.

One local Ray instance (2 CPUs) serves the module. Runs use the synthetic corpus of
``test_train_data`` and U-Nets of a few thousand parameters, one CPU (and torch thread) per worker.
"""

from __future__ import annotations

import _thread
import signal
import statistics
import threading
import time
from pathlib import Path

import pytest
import torch
from prefect.states import Failed
from ray.train.v2.api.exceptions import WorkerGroupError

from rodin_core.checkpoint import load_checkpoint
from rodin_core.datasets.checkpoints import committed_step, read_stage_checkpoint
from rodin_core.datasets.errors import CorruptInputError, StageInputError
from rodin_core.datasets.frontals import extract_frontals_shard, plan_frontals
from rodin_core.datasets.plane_stats import ensure_stats
from rodin_core.stage_specs import stage_config
from rodin_core.storage import open_store
from workflows.train_flows import retry_unless_a_setup_error
from workflows.train_ray import (
    TrainingDataError,
    TrainingError,
    fit_with_progress,
    input_data_error,
    run_training,
    with_absolute_paths,
)
from workflows.train_worker import (
    ResumeMismatchError,
    check_compatible,
    checkpoint_digest,
    state_digest,
)

from ..training_corpus import make_corpus, tiny_config


def prepared_corpus(root: Path) -> str:
    """The synthetic corpus with its frontal views and statistics committed, as the flows prepare it."""
    out = make_corpus(root, tiny_config())
    for job in plan_frontals(out, out)[0]:
        extract_frontals_shard(out, out, job)
    ensure_stats(out)
    return out


def test_state_digest_sees_every_tensor_and_hyper_parameter() -> None:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    digest = state_digest({"model": model.state_dict()}, {"model": optimizer.state_dict()})
    assert digest == state_digest({"model": model.state_dict()}, {"model": optimizer.state_dict()})
    optimizer.state[model.weight]["exp_avg"][0, 0] += 1e-6
    moved = state_digest({"model": model.state_dict()}, {"model": optimizer.state_dict()})
    optimizer.param_groups[0]["lr"] = 2e-3
    assert len({digest, moved, state_digest({"model": model.state_dict()}, {"model": optimizer.state_dict()})}) == 3


def test_resuming_a_checkpoint_of_other_held_out_subjects_is_refused() -> None:
    """A checkpoint that trained on subjects the config holds out (paper §4.5) cannot be continued."""
    cfg = tiny_config("corpus.subjects=9", "corpus.holdout_subjects=2")  # ids 7, 8 held out
    check_compatible("base", cfg, stage_config("base", cfg), "test checkpoint")
    other = stage_config("base", tiny_config("corpus.subjects=9", "corpus.holdout_subjects=1"))
    with pytest.raises(ResumeMismatchError, match=r"held-out subjects \(corpus.holdout_subjects\): checkpoint ids "
                                                  r"from 8, config ids from 7.*--fresh"):
        check_compatible("base", cfg, other, "test checkpoint")
    before = stage_config("base", cfg)
    del before["rodin"]["corpus"]["holdout_subjects"]  # saved before held-out subjects existed: trained on all
    with pytest.raises(ResumeMismatchError, match=r"checkpoint none, config ids from 7"):
        check_compatible("base", cfg, before, "test checkpoint")


def test_a_worker_failing_on_its_data_names_the_repair_not_a_resume() -> None:
    damaged = CorruptInputError("stage 'triplanes' shard 'shard-000001': data file x/planes.safetensors has 9 "
                                "bytes, the manifest says 12; re-fit it: `rodin fit --renders x --out x --shards 1`")
    error = input_data_error("base", WorkerGroupError("worker 1 failed", {0: RuntimeError("collective"), 1: damaged}))
    assert isinstance(error, TrainingDataError) and isinstance(error, StageInputError)
    assert str(error) == f"training base stopped on its input data: {damaged}"
    assert input_data_error("base", WorkerGroupError("worker 0 died", {0: RuntimeError("segfault")})) is None
    assert not retry_unless_a_setup_error(None, None, Failed(data=error))


def test_relative_encoder_weights_files_reach_the_workers_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config()
    cfg.encoder.kind, cfg.encoder.latent_dim = "avatar_clip", 128
    cfg.encoder.avatar_clip_weights = "data/text_embedding/avatar_clip.safetensors"
    resolved = with_absolute_paths(cfg)
    assert resolved.encoder.avatar_clip_weights == str(tmp_path / "data/text_embedding/avatar_clip.safetensors")
    assert cfg.encoder.avatar_clip_weights == "data/text_embedding/avatar_clip.safetensors"  # the caller's is kept
    assert resolved.to_dict() | {"encoder": None} == cfg.to_dict() | {"encoder": None}  # nothing else changes
    for uri in ("s3://bucket/avatar_clip.safetensors", "/abs/avatar_clip.safetensors"):
        cfg.encoder.avatar_clip_weights = uri
        assert with_absolute_paths(cfg).encoder.avatar_clip_weights == uri
    cfg.encoder.kind, cfg.encoder.avatar_clip_weights = "learned", ""
    assert with_absolute_paths(cfg) is cfg
    cfg.encoder.kind, cfg.encoder.clip_pretrained = "clip", "weights/clip.safetensors"
    assert with_absolute_paths(cfg).encoder.clip_pretrained == str(tmp_path / "weights/clip.safetensors")
    cfg.encoder.clip_pretrained = "openai"  # an open_clip tag, not a file
    assert with_absolute_paths(cfg) is cfg


def test_a_stopped_driver_leaves_at_once_without_waiting_for_the_fit(monkeypatch) -> None:
    """SIGTERM or Ctrl-C in the driver raise in the thread that waits for ``trainer.fit()``; the stop must unwind
    at once (the Ray session's shutdown then ends the run), not wait for a fit that does not end by itself."""
    release = threading.Event()

    class BlockedTrainer:
        def fit(self) -> str:
            release.wait(120)
            return "finished"

    class QuietRelay:  # a progress relay with no lines: the wait polls it until the stop lands, however late
        class drain:  # named as the actor method it stands for
            @staticmethod
            def remote() -> list[str]:
                return []

    monkeypatch.setattr("workflows.train_ray.ray.get", lambda refs: refs)

    # Ctrl-C raises KeyboardInterrupt as in a driver started from a terminal (a shell starts background jobs with
    # SIGINT ignored, and interrupt_main then does nothing)
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    stop = threading.Timer(0.5, _thread.interrupt_main)
    stop.start()
    begin = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            fit_with_progress(BlockedTrainer(), relay=QuietRelay(), on_progress=lambda line: None)
        seconds = time.monotonic() - begin
        fitting = [thread for thread in threading.enumerate() if thread.name == "ray-train-fit"]
    finally:
        release.set()
        stop.cancel()
        signal.signal(signal.SIGINT, handler)
    assert seconds < 5 and len(fitting) == 1 and fitting[0].daemon  # left running, not joined at exit


def test_memory_store_is_refused_before_ray_starts() -> None:
    with pytest.raises(ValueError, match="in-memory store memory://train-test"):
        run_training("base", tiny_config(), "memory://train-test")


def test_a_killed_run_resumes_from_its_checkpoint_with_the_same_state(local_ray: None, tmp_path: Path) -> None:
    out = prepared_corpus(tmp_path / "store")
    cfg = tiny_config("base.train.steps=6", "base.train.checkpoint_every=2", "base.train.log_every=1",
                      "base.train.max_failures=0")
    resume_hint = r"InjectedFailure.*committed checkpoint at step 2.*`rodin train base --out"
    with pytest.raises(TrainingError, match=resume_hint):
        run_training("base", cfg, out, cpus_per_worker=1, fail_at_step=3)
    assert committed_step(out, "base") == 2
    saved = load_checkpoint(Path(out) / "checkpoints" / "runs" / "base" / "step-00000002")
    assert saved.step == 2 and [h["step"] for h in saved.metrics["history"]] == [1, 2]

    lines: list[str] = []
    summary = run_training("base", cfg, out, cpus_per_worker=1, on_progress=lines.append)

    resumed = summary["resumed"]
    assert resumed["step"] == 2 and resumed["origin"].startswith("Ray run checkpoint")
    assert resumed["state_sha256"] == checkpoint_digest(saved)  # model, EMA, encoder and AdamW state as saved
    assert (summary["start_step"], summary["steps_run"]) == (2, 4)
    assert [h["step"] for h in summary["history"]] == [1, 2, 3, 4, 5, 6]
    assert any("resumed at step 2" in line for line in lines) and any("step 6/6" in line for line in lines)
    final, manifest = read_stage_checkpoint(out, "base")
    assert final.step == 6 and manifest.extra["final"] and manifest.extra["run"] == "base"


def test_a_deleted_checkpoint_manifest_is_committed_again_from_the_ray_run(local_ray: None, tmp_path: Path) -> None:
    """The repair of a damaged checkpoint file deletes its manifest; launched again, the run resumes from Ray's copy
    (already at train.steps) and commits it to the store again instead of ending with nothing committed."""
    out = prepared_corpus(tmp_path / "store")
    cfg = tiny_config("base.train.steps=2", "base.train.checkpoint_every=2", "base.train.log_every=1")
    run_training("base", cfg, out, cpus_per_worker=1)
    first, _ = read_stage_checkpoint(out, "base")
    (Path(out) / "checkpoints" / "manifests" / "base.json").unlink()
    assert committed_step(out, "base") is None

    summary = run_training("base", cfg, out, cpus_per_worker=1)

    assert (summary["start_step"], summary["steps_run"]) == (2, 0)
    assert summary["resumed"]["origin"].startswith("Ray run checkpoint")
    again, manifest = read_stage_checkpoint(out, "base")
    assert again.step == 2 and manifest.extra["run"] == "base"
    assert checkpoint_digest(again) == checkpoint_digest(first)


def test_two_workers_follow_the_loss_trend_of_one(local_ray: None, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    prepared_corpus(tmp_path / "store")
    monkeypatch.chdir(tmp_path)
    out = "store"  # a relative local path, as `--out data/tiny`: Ray Train workers run in other working directories
    cfg = tiny_config("base.train.steps=40", "base.train.checkpoint_every=40", "base.train.log_every=5",
                      "base.train.lr=3e-3", "base.train.batch_size=8")
    curves = {}
    for workers in (1, 2):
        cfg.base.train.workers = workers
        summary = run_training("base", cfg, out, run_name=f"workers-{workers}", resume=False, cpus_per_worker=1)
        assert summary["workers"] == workers and summary["steps_run"] == 40
        curves[workers] = [h["loss"] for h in summary["history"]]
        print(f"{workers} worker(s): loss {[round(v, 3) for v in curves[workers]]}, "
              f"{summary['steps_per_s']:.2f} steps/s")
    for workers, losses in curves.items():
        assert statistics.mean(losses[-3:]) < 0.8 * statistics.mean(losses[:2]), (workers, losses)
    one, two = statistics.mean(curves[1][-3:]), statistics.mean(curves[2][-3:])
    assert abs(one - two) < 0.25 * one, curves
    assert open_store(out).stage("checkpoints").read_manifest("base").extra["workers"] == 2
