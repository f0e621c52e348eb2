"""The ``small`` run end to end (paper §4): render, fit, avatar-CLIP, train every stage, evaluate, pictures.

Every stage is one ``rodin`` command run as a child process on one dataset root ``--out``, in this order:

1. ``render``: the corpus (§4.1), ``rodin render``;
2. ``fit``: a tri-plane per subject with the shared decoder (§3.1, B.2), ``rodin fit``;
3. ``text-embedding``: avatar-CLIP, the joint caption / frontal-render embedding the base model is
   conditioned on (§3.2 conditions on a frozen CLIP image embedding; §4.5), ``rodin train text-embedding``;
4. ``train``: the base model, the upsampler and the latent prior (§3.2, §3.3, B.4), ``rodin train all``,
   with ``encoder.kind=avatar_clip`` and the weights stage 3 committed;
5. ``text-prior``: text embedding -> image embedding (B.5), ``rodin train text-prior``;
6. ``evaluate``: conditional reconstruction and ``--samples`` unconditional samples against the training
   set (nearest neighbours, Fréchet distance with its half-vs-half floor), ``rodin evaluate``;
7. ``sample``: eight avatars with turntables and a contact sheet, ``rodin sample``;
8. ``interpolate`` and 9. ``mesh``: Fig. 6 between avatars 0 and 1, marching cubes of avatar 0.

``--no-text`` keeps the config's own encoder and leaves out stages 3 and 5.

Resumable: ``{out}/small-run/timings.json`` records every stage's command, wall seconds, attempts and
status; the running stage's seconds are rewritten every :data:`HEARTBEAT_S` seconds, so a run that is
killed loses at most that much of its record. Run again with the same options, finished stages are
skipped and the first unfinished one starts again, its seconds added to those of its earlier attempts:
each command itself resumes from its committed shards and checkpoints, so an interruption loses at
most the shard or checkpoint interval in flight. A stage that fails stops the run with its command
and exit status, everything before it kept.

Run: ``.venv/bin/python benchmarks/small_run.py --out data/small [--config configs/small-cpu.yaml]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import fsspec

from rodin_core.datasets.layout import (
    TEXT_EMBEDDING_SHARD,
    TEXT_EMBEDDING_STAGE,
    TEXT_EMBEDDING_WEIGHTS,
)
from rodin_core.storage import open_store, pipe_atomic

RECORD = "small-run/timings.json"
"""Where, under ``--out``, the finished stages are recorded."""
RUNNING = "running"
"""Status of a stage in flight (or of one whose run was killed: its seconds count towards the next attempt)."""
DEFAULT_CONFIG = "configs/small-cpu.yaml"
DEFAULT_SAMPLES = 64
"""Unconditional samples of the evaluation: enough for the Fréchet distance to settle at this size."""
PICTURES = 8
"""Avatars of the ``sample`` stage."""
HEARTBEAT_S = 30.0
"""How often the running stage's seconds are written."""


class SmallRunError(RuntimeError):
    """A stage failed; the message names it, its exit status and the command that re-runs it."""


@dataclass(frozen=True)
class Stage:
    """One stage: its name and the ``rodin`` arguments it runs (built when it starts: some read the store)."""

    name: str
    argv: Callable[[], list[str]]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="dataset root URI of the run")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config of the run (default %(default)s)")
    parser.add_argument("--preset", default="small", help="preset under the config (default %(default)s)")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help="unconditional samples of the evaluation (default %(default)s)")
    parser.add_argument("--dest", default=None, help="local folder of the pictures (default {out}/small-run)")
    parser.add_argument("--no-text", action="store_true",
                        help="keep the config's encoder; no avatar-CLIP, no text prior")
    parser.add_argument("--only", nargs="+", default=None, metavar="STAGE", help="run only these stages")
    args = parser.parse_args(argv)
    if args.samples < 2:
        parser.error(f"--samples must be at least 2 (the Fréchet distance needs two), got {args.samples}")
    return args


def avatar_clip_weights(out: str) -> str:
    """URI of the avatar-CLIP weights committed under ``out`` (stage 3), or a one-line error."""
    stage = open_store(out).stage(TEXT_EMBEDDING_STAGE)
    if TEXT_EMBEDDING_SHARD not in stage.committed_shards():
        raise SmallRunError(f"no avatar-CLIP committed under {out}: run the text-embedding stage first")
    files = {f.name: f.path for f in stage.read_manifest(TEXT_EMBEDDING_SHARD).files}
    return f"{stage.uri}/{files[TEXT_EMBEDDING_WEIGHTS]}"


def stages(args: argparse.Namespace) -> list[Stage]:
    """The run's stages in order, each building its ``rodin`` arguments from ``args``."""
    out, dest = args.out, picture_folder(args)
    config = ["--preset", args.preset, "--config", args.config]

    def encoder() -> list[str]:
        if args.no_text:
            return []
        return ["--set", "encoder.kind=avatar_clip", "--set", f"encoder.avatar_clip_weights={avatar_clip_weights(out)}"]

    run = [
        Stage("render", lambda: ["render", *config, "--out", out]),
        Stage("fit", lambda: ["fit", *config, "--renders", out, "--out", out]),
        Stage("text-embedding", lambda: ["train", "text-embedding", *config, "--out", out]),
        Stage("train", lambda: ["train", "all", *config, *encoder(), "--out", out]),
        Stage("text-prior", lambda: ["train", "text-prior", *config, *encoder(), "--out", out]),
        Stage("evaluate", lambda: ["evaluate", "--out", out, "--n", str(args.samples)]),
        Stage("sample", lambda: ["sample", "--out", out, "--n", str(PICTURES), "--dest", str(dest / "samples")]),
        Stage("interpolate", lambda: ["interpolate", "--out", out, "--dest", str(dest / "interpolation"),
                                      str(dest / "samples" / "avatar-000.safetensors"),
                                      str(dest / "samples" / "avatar-001.safetensors")]),
        Stage("mesh", lambda: ["mesh", "--out", out, "--dest", str(dest / "avatar-000.glb"),
                               str(dest / "samples" / "avatar-000.safetensors")]),
    ]
    skipped = {"text-embedding", "text-prior"} if args.no_text else set()
    chosen = [s for s in run if s.name not in skipped]
    if args.only is not None:
        unknown = sorted(set(args.only) - {s.name for s in chosen})
        if unknown:
            raise SmallRunError(f"unknown stage(s) {unknown}; choose from {[s.name for s in chosen]}")
        chosen = [s for s in chosen if s.name in args.only]
    return chosen


def picture_folder(args: argparse.Namespace) -> Path:
    """Local folder of the pictures: ``--dest``, else ``{out}/small-run`` when ``out`` is a local path."""
    if args.dest is not None:
        return Path(args.dest)
    if "://" in args.out and not args.out.startswith("file://"):
        raise SmallRunError(f"--out {args.out} is not a local folder: pass --dest for the pictures")
    return Path(args.out.removeprefix("file://")) / "small-run"


def read_record(out: str) -> dict:
    """The stages recorded under ``out``, finished, failed or running (none when nothing ran)."""
    fs, path = fsspec.core.url_to_fs(f"{out}/{RECORD}")
    if not fs.exists(path):
        return {"stages": {}}
    with fs.open(path, "r") as handle:
        return json.load(handle)


def write_record(out: str, record: dict) -> None:
    """Write ``record`` under ``out`` atomically (:func:`rodin_core.storage.pipe_atomic`)."""
    fs, path = fsspec.core.url_to_fs(f"{out}/{RECORD}")
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    pipe_atomic(fs, path, json.dumps(record, indent=2).encode("utf-8"))


def run_stages(args: argparse.Namespace, runner: Callable[[list[str]], int] | None = None,
               heartbeat_s: float = HEARTBEAT_S) -> dict:
    """Run the unfinished stages in order, recording each; returns the record. ``runner`` runs one command."""
    runner = runner or run_rodin
    record = read_record(args.out)
    lock = threading.Lock()

    def save(name: str, entry: dict) -> None:
        with lock:
            record["stages"][name] = entry
            record["total_s"] = round(sum(s["seconds"] for s in record["stages"].values()), 1)
            write_record(args.out, record)

    for stage in stages(args):
        earlier = record["stages"].get(stage.name)
        if earlier is not None and earlier["status"] == 0:
            print(f"[small-run] {stage.name}: finished before in {earlier['seconds']:.1f} s, skipped", flush=True)
            continue
        previous = earlier["seconds"] if earlier is not None else 0.0
        attempts = (earlier or {}).get("attempts", 0) + 1
        argv = stage.argv()
        command = " ".join(["rodin", *argv])
        resumed = f" (attempt {attempts}, {previous:.0f} s before)" if earlier is not None else ""
        print(f"[small-run] {stage.name}{resumed}: {command}", flush=True)
        attempt = Attempt(command, (earlier or {}).get("started_at", _now()), previous, attempts)
        save(stage.name, attempt.entry(RUNNING))
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(stop, heartbeat_s, save, stage.name, attempt), daemon=True)
        beat.start()
        try:
            status = runner(argv)
        finally:
            stop.set()
            beat.join()
        save(stage.name, attempt.entry(status))
        seconds = record["stages"][stage.name]["seconds"]
        if status != 0:
            raise SmallRunError(f"stage {stage.name} exited {status} after {seconds:.0f} s; the stages before it "
                                f"are kept: re-run it alone with `{command}` or run this script again")
        print(f"[small-run] {stage.name}: {seconds:.1f} s", flush=True)
    return record


@dataclass
class Attempt:
    """One attempt at a stage: what its record entry says while it runs and when it ends."""

    command: str
    started_at: str
    """When the stage's first attempt started (ISO 8601, UTC)."""
    previous_s: float
    """Seconds of the earlier attempts."""
    number: int
    start: float = field(default_factory=time.perf_counter)

    def entry(self, status: int | str) -> dict:
        """The stage's record entry: seconds of all attempts so far, ``status`` (``RUNNING`` or an exit code)."""
        seconds = self.previous_s + time.perf_counter() - self.start
        return {"command": self.command, "seconds": round(seconds, 1), "status": status, "attempts": self.number,
                "started_at": self.started_at, "finished_at": None if status == RUNNING else _now()}


def _heartbeat(stop: threading.Event, every_s: float, save: Callable[[str, dict], None], name: str,
               attempt: Attempt) -> None:
    """Every ``every_s`` until ``stop``: save stage ``name`` as still running, with its seconds so far."""
    while not stop.wait(every_s):
        save(name, attempt.entry(RUNNING))


def run_rodin(argv: list[str]) -> int:
    """Run ``rodin ARGV`` with this interpreter; its exit status."""
    return subprocess.run([sys.executable, "-m", "workflows.cli", *argv], check=False).returncode


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        record = run_stages(args)
    except SmallRunError as exc:
        print(f"small-run: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
