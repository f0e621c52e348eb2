"""The main job: the whole chain on one dataset root, from an empty folder to avatars to look at.

``demo`` runs the stages of the paper's pipeline one after the other on the embedded default (a
local folder as the store, a local Ray instance or the cluster at ``ray_address``, Prefect's
temporary local server unless ``PREFECT_API_URL`` names one):

1. render the synthetic corpus (§4.1; the ``render-avatars`` flow);
2. fit a tri-plane per subject with the shared decoder (§3.1, appendix B.2; ``fit-triplanes``);
3. train the base model and the upsampler (side by side on 8 CPUs or more, else one after the
   other), then the latent prior (§3.2, §3.3, appendix B.4; ``train-all``);
4. sample ``n`` avatars with turntables and a contact sheet (§4.2; ``generate``);
5. invert the frontal view (view 0) of the last subject id of the corpus, one held out from
   diffusion training by ``corpus.holdout_subjects`` (§4.5);
6. interpolate between generated avatars 0 and 1 (Fig. 6);
7. mesh generated avatar 0 by marching cubes (Fig. 5); when its density never reaches the default
   iso-level (an undertrained model), a lower level is used and logged.

The first four are the stage flows, run as subflows; the last three are the functions behind
``rodin invert``, ``rodin interpolate`` and ``rodin mesh`` (:mod:`workflows.avatar_commands`) as
tasks. What else the demo needs comes from the public helpers of those modules: whether training is
complete (:func:`~workflows.train_flows.trained_steps`), the held-out subject's frontal render
(:func:`~workflows.render_avatars.frontal_views`), what an inversion reads. Everything to look at
is copied to one local folder (default ``{out}/demo``)::

    contact-sheet.png, generation.json      the generated shard's sheet and description
    avatar-000.safetensors ...              the generated avatars (tri-plane + z)
    avatar-000-turntable.gif (+ PNG frames) their turntables
    subject-NNNNNN-frontal.png              the held-out subject's frontal render (the portrait)
    subject-NNNNNN-frontal-inversion.png    portrait beside the inverted avatar's frontal view
    subject-NNNNNN-frontal-turntable.gif    the inverted avatar's turntable (+ .safetensors, PNG frames)
    interpolation.png, interp-00.safetensors ...   the interpolation strip and its avatars
    avatar-000.glb                          the mesh of avatar 0
    timings.json                            wall seconds of each stage and the total
    demo.json                               per stage: reused or not, outputs, what made them

Run again, every stage reuses what is there: the render and fit flows skip committed shards,
training is skipped when every stage's committed checkpoint has its configured steps (``train-all``
would only confirm it, at the cost of three Ray Train launches and three sample sheets), the
generate flow reuses the shard committed for the same parameters and checkpoints, and the last
three stages are skipped when ``demo.json`` records the same inputs and their files exist.
A stage that fails stops the chain with :class:`DemoStageError`, which names the stage and the
command that runs just that stage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from rodin_core.config import RodinConfig, load_config
from rodin_core.datasets.layout import CONTACT_SHEET_FILE, RENDERS_STAGE
from rodin_core.generation.job import (
    GenerateInputError,
    avatar_file,
    export_generated,
)
from rodin_core.mesh import DEFAULT_THRESHOLD
from rodin_core.stage_specs import STAGE_NAMES
from rodin_core.storage import config_hash, open_store
from workflows import avatar_commands
from workflows.fit_triplanes import fit_triplanes
from workflows.generate import generate
from workflows.logs import relay_logs
from workflows.ray_runner import ray_session
from workflows.render_avatars import frontal_views, render_avatars
from workflows.train_flows import checkpoint_uri, train_all, trained_steps

STAGES = ("render", "fit", "train", "generate", "invert", "interpolate", "mesh")
"""The demo's stages, in order; also the keys of ``timings.json`` (with ``total``)."""
DEMO_FOLDER = "demo"
TIMINGS_FILE = "timings.json"
RECORD_FILE = "demo.json"
MESH_FILE = "avatar-000.glb"
ARTIFACT_KEY = "demo-summary"
RAY_LOGGER = "workflows.ray_runner"
"""The logger that says where the Ray instance started for the demo and its dashboard are."""
TAGS = ["rodin", "demo"]


class DemoStageError(RuntimeError):
    """A stage of the demo failed; the message names it, its error and the command that re-runs just it.

    ``stage``: its name; ``command``: that command; ``summary``: the demo's summary of the stages
    that finished before it (same layout as the flow's return value).
    """

    def __init__(self, stage: str, command: str, error: str, summary: dict[str, Any]) -> None:
        number = STAGES.index(stage) + 1
        super().__init__(
            f"demo stage {number}/{len(STAGES)} '{stage}' failed: {error} -- the stages before it are kept. "
            f"Re-run just this stage with `{command}`, then run the demo again with the same options to finish the "
            "chain (it reuses what is done)")
        self.stage, self.command, self.error, self.summary = stage, command, error, summary

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.stage, self.command, self.error, self.summary)


@dataclass
class StageRecord:
    """What one stage did: wall seconds, whether it reused earlier results, the files it left."""

    command: str
    """The command that runs just this stage."""
    seconds: float = 0.0
    reused: bool = False
    outputs: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    """Stage-specific facts: the flow's counts, the held-out subject, the fingerprint of the inputs."""


@dataclass
class DemoRun:
    """The state of one demo run: where it writes and what each finished stage did."""

    out: str
    folder: Path
    command: str
    """The ``rodin demo`` command of this run (recorded in ``demo.json``)."""
    config_args: list[str]
    """``--preset/--config/--set`` of this run, for the per-stage commands."""
    ray_args: list[str]
    storage_options: dict | None
    previous: dict[str, Any]
    """``demo.json`` of the last run in ``folder`` (empty when none)."""
    stages: dict[str, StageRecord] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @contextlib.contextmanager
    def stage(self, name: str, command: str) -> Iterator[StageRecord]:
        """Time stage ``name`` and log its start and end; a failure becomes :class:`DemoStageError`."""
        logger = get_run_logger()
        number = f"{STAGES.index(name) + 1}/{len(STAGES)}"
        logger.info("demo stage %s %s: started", number, name)
        record, start = StageRecord(command), time.perf_counter()
        try:
            yield record
        except Exception as exc:
            error = " ".join(f"{type(exc).__name__}: {exc}".split())
            logger.error("demo stage %s %s failed after %.1f s: %s", number, name, time.perf_counter() - start, error)
            raise DemoStageError(name, record.command, error, self.summary()) from exc
        record.seconds = time.perf_counter() - start
        self.stages[name] = record
        self.save_record()
        logger.info("demo stage %s %s: %s in %.1f s", number, name, "reused" if record.reused else "done",
                    record.seconds)

    def reuse(self, name: str, record: StageRecord, fingerprint: str) -> bool:
        """Whether the last run made stage ``name`` from the inputs ``fingerprint`` and its files still exist;
        if so, ``record`` takes over that run's outputs and details."""
        saved = self.previous.get("stages", {}).get(name)
        if not saved or saved.get("detail", {}).get("fingerprint") != fingerprint:
            return False
        if not saved.get("outputs") or not all(Path(p).is_file() for p in saved["outputs"]):
            return False
        record.reused, record.outputs, record.detail = True, list(saved["outputs"]), dict(saved["detail"])
        get_run_logger().info("%s: the outputs of the last run are there for the same inputs (%s)", name,
                              fingerprint)
        return True

    def summary(self) -> dict[str, Any]:
        """What the flow returns (and ``demo.json`` holds): per stage seconds, reused, outputs, details."""
        return {"store": self.out, "folder": str(self.folder), "command": self.command,
                "stages": {name: vars(record) for name, record in self.stages.items()},
                "total_seconds": time.perf_counter() - self.started}

    def save_record(self) -> None:
        write_json(self.folder / RECORD_FILE, self.summary())


@flow(name="demo")
def demo(out: str = "data/tiny", preset: str = "tiny", config_file: str | None = None,
         overrides: list[str] | None = None, ray_address: str | None = None, n: int = 4, seed: int = 0,
         turntable_views: int = 24, interpolation_frames: int = 5, mesh_resolution: int = 128,
         mesh_threshold: float | None = None, dest: str | None = None,
         storage_options: dict | None = None) -> dict[str, Any]:
    """Render, fit, train, generate, invert a held-out portrait, interpolate and mesh, into ``out``.

    ``preset``, ``config_file`` and ``overrides`` make the config of the first three stages (the
    last four read the checkpoints' own). ``n`` avatars with seeds ``seed ..`` and turntables of
    ``turntable_views`` frames; ``interpolation_frames`` avatars from avatar 0 to avatar 1; a
    ``mesh_resolution``^3 density grid at iso-level ``mesh_threshold`` for the mesh of avatar 0 (None:
    the default level, lowered below the peak density when the field never reaches it).
    ``dest``: the local folder of the outputs (default ``{out}/demo``; required when ``out`` is
    not a local path). Returns ``{store, folder, command, stages: {name: {seconds, reused, outputs,
    detail}}, total_seconds}``, also written to ``{dest}/demo.json``; raises
    :class:`DemoStageError` when a stage fails.
    """
    overrides = list(overrides or [])
    cfg = load_config(preset, config_file, overrides)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise GenerateInputError(f"the demo interpolates avatars 0 and 1, so n must be an integer >= 2, got {n!r}")
    run = start_run(out, dest, preset, config_file, overrides, ray_address, storage_options)
    get_run_logger().info("demo of the %s preset into %s; outputs to look at go to %s", preset, out, run.folder)
    with relay_logs(RAY_LOGGER), ray_session(ray_address):  # one Ray for the stage flows; its dashboard URL logged
        render_corpus(run, preset, config_file, overrides, ray_address)
        fit_corpus(run, preset, config_file, overrides, ray_address)
        train_stages(run, cfg, preset, config_file, overrides, ray_address)
        shard = generate_avatars(run, preset, n, seed, turntable_views)
    invert_heldout(run, cfg, preset, seed, turntable_views)
    interpolate_generated(run, shard, preset, interpolation_frames)
    mesh_generated(run, shard, mesh_resolution, mesh_threshold)
    summary = run.summary()
    timings = {name: round(record.seconds, 6) for name, record in run.stages.items()}
    write_json(run.folder / TIMINGS_FILE, {**timings, "total": round(summary["total_seconds"], 6)})
    write_json(run.folder / RECORD_FILE, summary)
    table = format_summary(summary)
    get_run_logger().info("demo finished:\n%s", table)
    create_markdown_artifact(key=ARTIFACT_KEY, markdown=f"```\n{table}\n```", description="demo: stage timings")
    return summary


def start_run(out: str, dest: str | None, preset: str, config_file: str | None, overrides: list[str],
              ray_address: str | None, storage_options: dict | None) -> DemoRun:
    """The run's state: its output folder (created), the commands of its stages, the last run's record."""
    folder = demo_folder(out, dest, storage_options)
    folder.mkdir(parents=True, exist_ok=True)
    config_args = ["--preset", preset, *(["--config", config_file] if config_file else []),
                   *(arg for item in overrides for arg in ("--set", item))]
    ray_args = ["--ray-address", ray_address] if ray_address else []
    command = shlex.join(["rodin", "demo", "--out", out, *config_args, *ray_args,
                          *(["--dest", str(folder)] if dest else [])])
    record = folder / RECORD_FILE
    previous = json.loads(record.read_text()) if record.is_file() else {}
    return DemoRun(out, folder, command, config_args, ray_args, storage_options, previous)


def demo_folder(out: str, dest: str | None, storage_options: dict | None = None) -> Path:
    """``dest``, else ``{out}/demo`` when ``out`` is a local path; a clear error for a remote ``out``."""
    if dest is not None:
        return Path(dest)
    fs, root = fsspec.core.url_to_fs(out, **(storage_options or {}))
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if "file" not in protocols and "local" not in protocols:
        raise ValueError(f"the dataset root {out!r} is not a local folder, so the outputs to look at cannot go to "
                         f"{out}/{DEMO_FOLDER}; pass a local folder for them (`--dest DIR`)")
    return Path(root) / DEMO_FOLDER


def render_corpus(run: DemoRun, preset: str, config_file: str | None, overrides: list[str],
                  ray_address: str | None) -> None:
    """Stage 1: the ``render-avatars`` flow; reused when every shard of the plan was committed."""
    command = shlex.join(["rodin", "render", "--out", run.out, *run.config_args, *run.ray_args])
    with run.stage("render", command) as record:
        summary = render_avatars(preset=preset, out=run.out, config_file=config_file, overrides=overrides,
                                 ray_address=ray_address, storage_options=run.storage_options)
        record.reused = summary["shards_rendered"] == 0
        record.detail = {k: summary[k] for k in ("shards_total", "shards_rendered", "shards_skipped", "views")}
        record.outputs = [summary["contact_sheet"]] if summary["contact_sheet"] else []


def fit_corpus(run: DemoRun, preset: str, config_file: str | None, overrides: list[str],
               ray_address: str | None) -> None:
    """Stage 2: the ``fit-triplanes`` flow; reused when the decoder and every shard were committed."""
    command = shlex.join(["rodin", "fit", "--renders", run.out, *run.config_args, *run.ray_args])
    with run.stage("fit", command) as record:
        summary = fit_triplanes(renders=run.out, out=run.out, preset=preset, config_file=config_file,
                                overrides=overrides, ray_address=ray_address, storage_options=run.storage_options)
        record.reused = summary["decoder"] == "reused" and summary["shards_fitted"] == 0
        record.detail = {k: summary[k] for k in ("decoder", "shards_total", "shards_fitted", "shards_skipped",
                                                 "psnr_median", "psnr_min")}
        record.outputs = [summary["report"]]


def train_stages(run: DemoRun, cfg: RodinConfig, preset: str, config_file: str | None, overrides: list[str],
                 ray_address: str | None) -> None:
    """Stage 3: the ``train-all`` flow, unless every stage's committed checkpoint is complete for ``cfg``."""
    command = shlex.join(["rodin", "train", "all", "--out", run.out, *run.config_args, *run.ray_args])
    with run.stage("train", command) as record:
        steps = trained_steps(cfg, run.out, run.storage_options)
        if steps is not None:
            get_run_logger().info("every stage's committed checkpoint has its configured steps (%s): training "
                                  "reused", ", ".join(f"{name} {step}" for name, step in steps.items()))
            record.reused = True
        else:
            summary = train_all(out=run.out, preset=preset, config_file=config_file, overrides=overrides,
                                ray_address=ray_address, storage_options=run.storage_options)
            steps = {name: summary[name]["steps"] for name in STAGE_NAMES}
            record.reused = all(summary[name]["steps_run"] == 0 for name in STAGE_NAMES)
        record.detail = {"steps": steps}
        record.outputs = [checkpoint_uri(run.out, name) for name in STAGE_NAMES]


def generate_avatars(run: DemoRun, preset: str, n: int, seed: int, views: int) -> dict[str, str]:
    """Stage 4: the ``generate`` flow, then a copy of its shard into the folder; returns ``{shard_id, attempt_id}``."""
    command = shlex.join(["rodin", "sample", "--out", run.out, "--preset", preset, "--n", str(n), "--seed", str(seed),
                          "--views", str(views), "--dest", str(run.folder)])
    with run.stage("generate", command) as record:
        summary = generate(checkpoints=run.out, n=n, seed=seed, turntable_views=views, preset=preset,
                           storage_options=run.storage_options)
        files = export_generated(run.out, summary["shard_id"], run.folder, run.storage_options)
        record.reused = summary["reused"]
        record.detail = {"shard_id": summary["shard_id"], "attempt_id": summary["attempt_id"], "n": n, "seed": seed}
        record.outputs = [str(p) for p in files if p.parent == run.folder]
    return {"shard_id": summary["shard_id"], "attempt_id": summary["attempt_id"]}


@task(cache_policy=NO_CACHE, tags=TAGS)
def read_heldout_portrait(cfg: RodinConfig, out: str, storage_options: dict | None) -> tuple[int, bool, bytes]:
    """The frontal view (view 0) of the corpus' last subject, as its RGBA PNG: ``(subject id, held out, png)``.

    The last ``corpus.holdout_subjects`` subject ids are never seen by diffusion training (§4.5);
    with none held out, the last subject is inverted all the same, with a warning.
    """
    subject = cfg.corpus.subjects - 1
    held_out = not cfg.corpus.is_training_subject(subject)
    shard_id, pngs = frontal_views(out, subject, storage_options)
    if shard_id is None:
        renders = open_store(out, storage_options).stage(RENDERS_STAGE).uri
        raise GenerateInputError(f"subject {subject} (the last of corpus.subjects={cfg.corpus.subjects}) is in no "
                                 f"committed renders shard of {renders}; render it: `rodin render --out {out}`")
    if len(pngs) != 1:
        raise GenerateInputError(f"renders shard {shard_id} holds {len(pngs)} frontal views (view 0) of subject "
                                 f"{subject}, expected 1; re-render it")
    if not held_out:
        get_run_logger().warning("corpus.holdout_subjects=0: subject %d was seen in diffusion training, so its "
                                 "inversion is not of a held-out subject", subject)
    return subject, held_out, pngs[0]


@task(cache_policy=NO_CACHE, tags=TAGS)
def invert_image(out: str, portrait: Path, folder: Path, seed: int, views: int, preset: str,
                 storage_options: dict | None) -> dict[str, Any]:
    """``rodin invert``: the portrait -> encoder z -> avatar, its turntable and the side-by-side (§4.5)."""
    with relay_logs(avatar_commands.__name__):
        return avatar_commands.invert_portrait(out, portrait, folder, seed=seed, views=views, preset=preset,
                                               storage_options=storage_options)


def invert_heldout(run: DemoRun, cfg: RodinConfig, preset: str, seed: int, views: int) -> None:
    """Stage 5: portrait inversion of the held-out subject's frontal view; reused for the same inputs."""
    with run.stage("invert", _invert_command(run, "SUBJECT-frontal.png", preset, seed, views)) as record:
        subject, held_out, png = read_heldout_portrait(cfg, run.out, run.storage_options)
        path = run.folder / f"subject-{subject:06d}-frontal.png"
        record.command = _invert_command(run, path.name, preset, seed, views)
        fingerprint = config_hash({"inputs": avatar_commands.inversion_inputs(run.out, run.storage_options, preset),
                                   "portrait_sha256": hashlib.sha256(png).hexdigest(), "seed": seed, "views": views})
        if run.reuse("invert", record, fingerprint):
            return
        path.write_bytes(png)
        result = invert_image(run.out, path, run.folder, seed, views, preset, run.storage_options)
        record.outputs = [str(path), result["comparison"], result["turntable"], result["avatar"]]
        record.detail = {"subject": subject, "held_out": held_out, "fingerprint": fingerprint}


def _invert_command(run: DemoRun, portrait: str, preset: str, seed: int, views: int) -> str:
    return shlex.join(["rodin", "invert", str(run.folder / portrait), "--out", run.out, "--preset", preset,
                       "--seed", str(seed), "--views", str(views), "--dest", str(run.folder)])


@task(cache_policy=NO_CACHE, tags=TAGS)
def interpolate_pair(out: str, a: Path, b: Path, folder: Path, frames: int, preset: str,
                     storage_options: dict | None) -> dict[str, Any]:
    """``rodin interpolate``: avatars along the slerp between the latents of ``a`` and ``b`` (Fig. 6)."""
    with relay_logs(avatar_commands.__name__):
        return avatar_commands.interpolate_avatars(out, a, b, folder, frames=frames, preset=preset,
                                                   storage_options=storage_options)


def interpolate_generated(run: DemoRun, shard: dict[str, str], preset: str, frames: int) -> None:
    """Stage 6: the interpolation strip between generated avatars 0 and 1; reused for the same shard."""
    a, b = (run.folder / avatar_file(index) for index in (0, 1))
    command = shlex.join(["rodin", "interpolate", str(a), str(b), "--out", run.out, "--preset", preset,
                          "--frames", str(frames), "--dest", str(run.folder)])
    with run.stage("interpolate", command) as record:
        fingerprint = config_hash({**shard, "avatars": [0, 1], "frames": frames})
        if run.reuse("interpolate", record, fingerprint):
            return
        result = interpolate_pair(run.out, a, b, run.folder, frames, preset, run.storage_options)
        record.outputs = [result["strip"], *result["avatars"]]
        record.detail = {"t": result["t"], "seed": result["seed"], "fingerprint": fingerprint}


@task(cache_policy=NO_CACHE, tags=TAGS)
def mesh_avatar_file(out: str, avatar: Path, mesh: Path, resolution: int, threshold: float | None,
                     storage_options: dict | None) -> dict[str, Any]:
    """``rodin mesh``: marching cubes on the avatar's density field, with decoder colours (Fig. 5).

    ``threshold`` None: the default iso-level (:data:`~rodin_core.mesh.DEFAULT_THRESHOLD`), or, when
    the field never reaches it (an undertrained model), halfway between its median and its peak.
    Returns ``rodin mesh``'s result with the ``threshold`` used.
    """
    with relay_logs(avatar_commands.__name__):
        try:
            result = avatar_commands.mesh_avatar(out, avatar, mesh, resolution=resolution,
                                                 threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
                                                 storage_options=storage_options)
            return {**result, "threshold": DEFAULT_THRESHOLD if threshold is None else threshold}
        except GenerateInputError:
            if threshold is not None:
                raise
            median, peak = avatar_commands.density_range(out, avatar, resolution, storage_options)
            if peak > DEFAULT_THRESHOLD:
                raise
        level = (median + peak) / 2.0
        get_run_logger().warning("the density of %s peaks at %.4g, below the default iso-level %g (an undertrained "
                                 "model): meshing at %.4g, halfway between its median and its peak", avatar.name,
                                 peak, DEFAULT_THRESHOLD, level)
        result = avatar_commands.mesh_avatar(out, avatar, mesh, resolution=resolution, threshold=level,
                                             storage_options=storage_options)
        return {**result, "threshold": level, "peak_density": peak}


def mesh_generated(run: DemoRun, shard: dict[str, str], resolution: int, threshold: float | None) -> None:
    """Stage 7: the .glb mesh of generated avatar 0; reused for the same shard and grid."""
    avatar, mesh = run.folder / avatar_file(0), run.folder / MESH_FILE
    level = ["--threshold", f"{threshold:g}"] if threshold is not None else []
    command = shlex.join(["rodin", "mesh", str(avatar), "--out", run.out, "--resolution", str(resolution), *level,
                          "--dest", str(mesh)])
    with run.stage("mesh", command) as record:
        fingerprint = config_hash({**shard, "avatar": 0, "resolution": resolution, "threshold": threshold})
        if run.reuse("mesh", record, fingerprint):
            return
        result = mesh_avatar_file(run.out, avatar, mesh, resolution, threshold, run.storage_options)
        record.outputs = [result["mesh"], result["preview"]]
        record.detail = {k: result[k] for k in ("vertices", "faces", "watertight", "threshold")}
        record.detail["fingerprint"] = fingerprint


def format_summary(summary: dict[str, Any]) -> str:
    """The wall time of each stage (and whether it was reused), the total, then where the outputs are."""
    stages = summary["stages"]
    lines = [f"{'stage':<12} {'seconds':>9}  state", f"{'-' * 12} {'-' * 9}  {'-' * 6}"]
    for name in STAGES:
        if name in stages:
            state = "reused" if stages[name]["reused"] else "ran"
            lines.append(f"{name:<12} {stages[name]['seconds']:>9.1f}  {state}")
    lines.append(f"{'total':<12} {summary['total_seconds']:>9.1f}")
    folder = Path(summary["folder"])
    lines += ["", f"outputs in {folder}:"]
    if "generate" in stages:
        gifs = sorted(str(p) for p in stages["generate"]["outputs"] if p.endswith(".gif"))
        lines.append(f"  contact sheet   {folder / CONTACT_SHEET_FILE}")
        lines.append(f"  turntables      {', '.join(gifs)}")
    if "invert" in stages:
        record = stages["invert"]
        held = "held-out " if record["detail"].get("held_out") else ""
        lines.append(f"  inversion       {record['outputs'][1]} ({held}subject {record['detail'].get('subject')}), "
                     f"{record['outputs'][2]}")
    if "interpolate" in stages:
        lines.append(f"  interpolation   {stages['interpolate']['outputs'][0]}")
    if "mesh" in stages:
        lines.append(f"  mesh            {', '.join(stages['mesh']['outputs'])}")
    lines.append(f"  timings         {folder / TIMINGS_FILE}")
    return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON to the local file ``path``; returns it."""
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path

