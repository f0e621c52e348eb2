"""The ``rodin`` command: run pipeline stages on the embedded default (local store, local Ray).

    rodin render --preset tiny --subjects 8 --out data/tiny      # render-avatars flow (§4.1)
    rodin fit --preset tiny --renders data/tiny                   # fit-triplanes flow (appendix B.2)
    rodin fit --preset tiny --renders data/tiny --shards 3        # re-fit fitting shard 3 only
    rodin train base --preset tiny --out data/tiny                # train-base flow on Ray Train (§3.2)
    rodin train all --preset tiny --out data/tiny                 # base + upsampler, then the latent prior
    rodin train refiner --out data/tiny --hr-renders data/tiny-hr # convolutional refiner (§3.3, Fig. 8)
    rodin config --preset small --set render.views=50            # print the resolved config
    rodin status --out data/tiny                                  # committed shards and failures
    rodin verify --out data/tiny                                  # every committed file against its sha256
    rodin gc --out data/tiny --dry-run                            # attempt folders no manifest references
    rodin contact-sheet --out data/tiny --dest sheet.png          # frontal views of the corpus
    rodin sample --out data/tiny --n 4 --dest samples/            # generate flow: avatars + turntables (§4.2)
    rodin invert portrait.png --out data/tiny --dest inverted/    # portrait inversion (§4.5)
    rodin train text-prior --out data/tiny                        # text prior: z from a text embedding (B.5)
    rodin text "a woman with afro hair in red" --out data/tiny --dest text/   # text to avatar (B.5)
    rodin interpolate a.safetensors b.safetensors --out data/tiny --frames 5 --dest interp/   # Fig. 6
    rodin mesh avatar.safetensors --out data/tiny --dest avatar.glb             # marching cubes (Fig. 5)
    rodin render-avatar avatar.safetensors --out data/tiny --x0 --dest views/   # turntable, x̂0 strip (Fig. 15)
    rodin render-avatar avatar.safetensors --out data/tiny --refine --dest views/   # through the refiner (Fig. 8)
    rodin edit avatar.safetensors --to "a person with blonde hair" --out data/tiny --dest edited/   # text edit (B.3)
    rodin evaluate --out data/tiny --n 16                         # evaluate flow: sample quality (§4.3, Table 4, C.4)
    rodin demo --out data/tiny                                    # the main job: every stage, outputs in data/tiny/demo

The command sits on top of every layer; its argument parser is :mod:`workflows.cli_parser`. Each command
imports the flow or library code it runs when it runs, and checks its flags, its config and its inputs
before it starts Prefect or Ray: a bad flag is one line within a second, a bad config value or input one
line before anything starts. SIGTERM and Ctrl-C stop a command with one line (exit code 143 or 130) at
any moment after :func:`main` is entered, while it imports torch or Prefect and starts its Prefect server
included; a flow run stopped so is marked Crashed, and what it committed is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from rodin_core.config import ConfigError
from workflows.cli_parser import (
    REFINER_STAGE,
    TEXT_EMBEDDING,
    TEXT_PRIOR_STAGE,
    TRAIN_FLOWS,
    build_parser,
)

OFFLINE_DEFAULTS = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
"""Environment defaults of every command (a user's own setting wins): the embedded Prefect server sends no
usage telemetry, which also keeps offline machines free of failed-telemetry errors in the logs; and it may take
3 minutes to start, not Prefect's 20 s: its first start on a fresh clone creates and migrates its database,
which on a busy 2-core machine took longer than 20 s."""


RAY_DEFAULTS = {"RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1"}
"""Environment defaults of every command for Ray (a user's own setting wins). Ray's crash handler also takes
SIGTERM in the driver and aborts the process 3 s later whatever is still unwinding, so a stopped training run
would end with a signal trace and exit status 134 instead of the one line and 143; without it a stopped command
ends as any other. The cost: no C++ stack trace when a local Ray process crashes (its Python traceback stays)."""


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that a running flow run is marked Crashed on the way out."""


def _stop(signum: int, frame: object) -> NoReturn:
    raise Stopped(signum)


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM raises :class:`Stopped` for the block (Prefect's own handler takes over while a flow runs, marks
    the run Crashed and then hands the signal back); the previous handler is restored after."""
    try:
        previous = signal.signal(signal.SIGTERM, _stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rodin ARGV``; its exit code. SIGTERM stops it from here on, however far it got: loading torch or
    Prefect, starting the Prefect server, running the flow."""
    with _sigterm_stops():
        args: argparse.Namespace | None = None
        try:
            for name, value in {**OFFLINE_DEFAULTS, **RAY_DEFAULTS}.items():
                os.environ.setdefault(name, value)
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as done:  # --help, or a bad flag already printed as one line
                return int(done.code or 0)
            args.argv = list(sys.argv[1:] if argv is None else argv)
            return _checked(args)
        except KeyboardInterrupt as stop:
            return _stopped(stop, args)


def _checked(args: argparse.Namespace) -> int:
    """Run the command; a config or Prefect backend error as one line."""
    try:
        return _command(args)
    except ConfigError as err:
        print(f"rodin: config error: {err}", file=sys.stderr)
        return 2
    except _backend_error() as err:
        print(f"rodin: {err}", file=sys.stderr)
        return 1


def _stopped(stop: KeyboardInterrupt, args: argparse.Namespace | None) -> int:
    """The one line of a command stopped by SIGTERM or Ctrl-C; exit code 143 or 130. A second SIGTERM while
    it is printed changes nothing."""
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    name = "SIGTERM" if isinstance(stop, Stopped) else "Ctrl-C"
    command = "rodin" if args is None else f"rodin {args.command}"
    print(f"{command}: stopped by {name}; what was committed is kept, run the same command again to go on",
          file=sys.stderr)
    return 143 if isinstance(stop, Stopped) else 130


def _command(args: argparse.Namespace) -> int:
    """Run the command ``args`` names; its exit code."""
    if args.command == "config":
        from rodin_core.config import load_config

        cfg = load_config(args.preset, args.config_file, args.overrides)
        print(json.dumps(cfg.to_dict(), indent=2, allow_nan=False))
        return 0
    if args.command in ("status", "verify", "gc"):
        from workflows import store_commands

        stages = [args.stage] if isinstance(args.stage, str) else args.stage
        return store_commands.run(args.command, args.out, stages, verify=getattr(args, "verify", False),
                                  dry_run=getattr(args, "dry_run", False),
                                  min_age_minutes=getattr(args, "min_age", store_commands.GC_MIN_AGE_MINUTES))
    if args.command == "render":
        return _render(args)
    if args.command == "fit":
        return _fit(args)
    if args.command == "train":
        return _train(args)
    if args.command == "contact-sheet":
        return _contact_sheet(args)
    if args.command in GENERATION_COMMANDS:
        return _generation(args)
    if args.command == "edit":
        return _edit(args)
    if args.command == "text":
        return _text(args)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "demo":
        return _demo(args)
    raise AssertionError(f"unhandled command {args.command!r}")


def prefect_backend() -> contextlib.AbstractContextManager[str]:
    """The run's one Prefect backend (:mod:`workflows.prefect_backend`), imported only by commands that run flows."""
    from workflows.logs import console_without_tracebacks
    from workflows.prefect_backend import prefect_backend as backend

    console_without_tracebacks()  # a failed run prints its one line, not Prefect's tracebacks
    return backend()


def _backend_error() -> type[Exception] | tuple[()]:
    """:class:`PrefectBackendError` once the command imported the backend, else nothing (which then cannot have
    raised it). Never an import: a SIGTERM may have stopped Prefect's import half-way, and importing it again
    while the stop goes up fails in Prefect's own models."""
    backend = sys.modules.get("workflows.prefect_backend")
    return getattr(backend, "PrefectBackendError", ())


def _run_flow(args: argparse.Namespace, flow: Callable[..., dict[str, Any]], **parameters: object) -> int:
    """Run a stage's flow on the embedded default with the shared config/Ray options; print its summary.

    Failed shards and missing or damaged inputs are printed as one line, with exit code 1.
    """
    from rodin_core.datasets.errors import StageInputError
    from rodin_core.storage import StorageError
    from workflows.ray_runner import RayStartError
    from workflows.shards import ShardsFailedError

    try:
        with prefect_backend():
            summary = flow(preset=args.preset, config_file=args.config_file, overrides=args.overrides,
                           ray_address=args.ray_address, task_runner=args.runner, **parameters)
    except (ShardsFailedError, RayStartError) as err:
        print(f"rodin: {' '.join(str(err).split())}. Then run `{rerun_command(args)}` again: it redoes only what "
              "is not committed", file=sys.stderr)
        return 1
    except (StageInputError, StorageError) as err:
        print(f"rodin: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


def rerun_command(args: argparse.Namespace) -> str:
    """The command line that ran ``args``, to run again."""
    return shlex.join(["rodin", *args.argv])


def _render(args: argparse.Namespace) -> int:
    from workflows.flow_config import RENDER_FIELDS, build_config

    build_config(args.preset, args.config_file, args.overrides, RENDER_FIELDS,  # before starting Prefect
                 **{name: getattr(args, name) for name in RENDER_FIELDS})
    from workflows.render_avatars import render_avatars

    return _run_flow(args, render_avatars, out=args.out, subjects=args.subjects,
                     views=args.views, resolution=args.resolution, seed=args.seed, shard_size=args.shard_size,
                     asset_dir=args.asset_dir)


def _fitted_root(out: str) -> bool:
    """Whether ``--out`` of ``rodin train`` can be a fitted dataset root; if not, says so in one line."""
    folder = _local_folder(out)
    if folder is not None and not os.path.isdir(folder):
        print(f"rodin train: --out {out} is no folder; pass the dataset root `rodin fit --out` wrote", file=sys.stderr)
        return False
    return True


def _local_folder(uri: str) -> str | None:
    """The local folder a dataset root URI names, or None for an object store (``s3://``, ``memory://``...)."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return None if "://" in uri else uri


def _fit(args: argparse.Namespace) -> int:
    folder = _local_folder(args.renders)
    if folder is not None and not os.path.isdir(folder):
        print(f"rodin fit: --renders {args.renders} is no folder; pass the dataset root `rodin render --out` "
              "wrote", file=sys.stderr)
        return 2
    from rodin_core.datasets.errors import StageInputError
    from rodin_core.storage import StorageError
    from workflows.flow_config import FIT_FIELDS, build_config

    cfg = build_config(args.preset, args.config_file, args.overrides, FIT_FIELDS,  # before starting Prefect
                       **{name: getattr(args, name) for name in FIT_FIELDS})
    try:
        from rodin_core.datasets.layout import RENDERS_STAGE
        from rodin_core.fitting.shard_job import plan_over_renders
        from rodin_core.storage import open_store

        plan_over_renders(cfg, open_store(args.renders).stage(RENDERS_STAGE), args.shards)
    except (StageInputError, StorageError) as err:
        print(f"rodin fit: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    from workflows.fit_triplanes import fit_triplanes

    return _run_flow(args, fit_triplanes, renders=args.renders, out=args.out,
                     shared_subjects=args.shared_subjects, steps=args.steps, target_psnr=args.target_psnr,
                     shards=args.shards, only_failed=args.only_failed)


def _train(args: argparse.Namespace) -> int:
    """Run the ``train-*`` flow of ``args.stage`` and print its summary."""
    if args.stage == REFINER_STAGE:
        return _train_refiner(args)
    if args.stage == TEXT_EMBEDDING:
        return _train_text_embedding(args)
    if args.stage == TEXT_PRIOR_STAGE:
        return _train_text_prior(args)
    if args.hr_renders is not None:
        print(f"rodin train: --hr-renders is the refiner's; `rodin train {args.stage}` reads no high-resolution "
              "renders", file=sys.stderr)
        return 2
    if args.stage == "all" and args.run_name:
        print("rodin: --run-name names one stage's run; train the stages one by one to name them", file=sys.stderr)
        return 2
    if not _fitted_root(args.out):
        return 2
    from rodin_core.stage_specs import STAGE_NAMES
    from workflows.flow_config import check_local_capacity, training_config

    stages = STAGE_NAMES if args.stage == "all" else (args.stage,)
    cfg = training_config(args.preset, args.config_file, args.overrides, stages, args.steps, args.workers)
    if args.ray_address is None:  # before starting Prefect and the local Ray
        import torch

        check_local_capacity(cfg, stages, os.cpu_count() or 1, torch.cuda.device_count(), args.cpus_per_worker)
    from workflows import train_flows as flows

    parameters = {} if args.stage == "all" else {"run_name": args.run_name}
    try:
        with prefect_backend():
            summary = getattr(flows, TRAIN_FLOWS[args.stage])(
                out=args.out, renders=args.renders, preset=args.preset, config_file=args.config_file,
                overrides=args.overrides, steps=args.steps, workers=args.workers,
                cpus_per_worker=args.cpus_per_worker, ray_address=args.ray_address, resume=not args.fresh,
                **parameters)
    except flows.TRAINING_ERRORS as err:
        print(f"rodin: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _train_refiner(args: argparse.Namespace) -> int:
    """``rodin train refiner``: train the refiner in this process, commit it under ``--out``; print its summary."""
    given = [flag for flag, value in (("--workers", args.workers), ("--cpus-per-worker", args.cpus_per_worker),
                                      ("--ray-address", args.ray_address), ("--run-name", args.run_name)) if value]
    if given:
        print(f"rodin train refiner: {', '.join(given)} apply to the Ray Train stages; the refiner trains in this "
              "process, drop them", file=sys.stderr)
        return 2
    if args.hr_renders is None:
        print("rodin train refiner: needs --hr-renders, the dataset root of the same subjects rendered at 2x or 4x "
              f"(`rodin render --preset {args.preset} --resolution <2x side> --out <root>`)", file=sys.stderr)
        return 2
    for flag, uri in (("--out", args.out), ("--renders", args.renders), ("--hr-renders", args.hr_renders)):
        folder = _local_folder(uri) if uri else None
        if folder is not None and not os.path.isdir(folder):
            print(f"rodin train refiner: {flag} {uri} is no folder; pass a dataset root", file=sys.stderr)
            return 2
    from rodin_core.config import load_config
    from rodin_core.training.refiner import refiner_configs

    ours = [item for item in args.overrides if item.strip().startswith(f"{REFINER_STAGE}.")]
    cfg = load_config(args.preset, args.config_file, [item for item in args.overrides if item not in ours])
    net, train = refiner_configs(ours + ([f"refiner.steps={args.steps}"] if args.steps else []))
    from rodin_core.datasets.errors import StageInputError
    from rodin_core.networks.perceptual import PerceptualUnavailableError
    from rodin_core.storage import StorageError
    from rodin_core.training.refiner_job import train_refiner_to_store

    try:
        summary = train_refiner_to_store(cfg, args.out, args.hr_renders, args.renders, net, train,
                                         device=args.device, progress=True, cache=args.pairs_cache)
    except (StageInputError, StorageError, PerceptualUnavailableError) as err:
        print(f"rodin: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _train_text_embedding(args: argparse.Namespace) -> int:
    """Run the ``train-text-embedding`` flow and print its summary; Ray Train flags do not apply."""
    given = [flag for flag, value in (("--workers", args.workers), ("--cpus-per-worker", args.cpus_per_worker),
                                      ("--ray-address", args.ray_address), ("--run-name", args.run_name),
                                      ("--fresh", args.fresh or None)) if value is not None]
    if given:
        print(f"rodin train text-embedding: {given[0]} applies to the diffusion stages only; leave it out (the text "
              "embedding trains in this process and always from scratch)", file=sys.stderr)
        return 2
    renders = args.renders or args.out
    folder = _local_folder(renders)
    if folder is not None and not os.path.isdir(folder):
        print(f"rodin train text-embedding: --renders {renders} is no folder; pass the dataset root `rodin render "
              "--out` wrote", file=sys.stderr)
        return 2
    from workflows.flow_config import text_embedding_config

    text_embedding_config(args.preset, args.config_file, args.overrides, args.steps)  # before starting Prefect
    from rodin_core.datasets.errors import StageInputError
    from rodin_core.storage import StorageError
    from rodin_core.text.sentence import TextUnavailableError
    from workflows.text_embedding import train_text_embedding_flow

    try:
        with prefect_backend():
            summary = train_text_embedding_flow(out=args.out, renders=args.renders, preset=args.preset,
                                                config_file=args.config_file, overrides=args.overrides,
                                                steps=args.steps)
    except (StageInputError, StorageError, TextUnavailableError) as err:
        print(f"rodin: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _train_text_prior(args: argparse.Namespace) -> int:
    """Run the ``train-text-prior`` flow and print its summary; the encoder must have a text tower."""
    if args.hr_renders is not None:
        print("rodin train: --hr-renders is the refiner's; `rodin train text-prior` reads no high-resolution renders",
              file=sys.stderr)
        return 2
    if not _fitted_root(args.out):
        return 2
    from rodin_core.stage_specs import TEXT_PRIOR
    from workflows.flow_config import check_local_capacity, text_prior_config

    cfg = text_prior_config(args.preset, args.config_file, args.overrides, args.steps, args.workers)
    if args.ray_address is None:  # before starting Prefect and the local Ray
        import torch

        check_local_capacity(cfg, (TEXT_PRIOR,), os.cpu_count() or 1, torch.cuda.device_count(), args.cpus_per_worker)
    from rodin_core.encoders import EncoderUnavailableError
    from rodin_core.text.sentence import TextUnavailableError
    from rodin_core.text.towers import NoTextSpaceError
    from workflows import train_flows as flows
    from workflows.text_prior import train_text_prior

    try:
        with prefect_backend():
            summary = train_text_prior(out=args.out, renders=args.renders, preset=args.preset,
                                       config_file=args.config_file, overrides=args.overrides, steps=args.steps,
                                       workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                                       ray_address=args.ray_address, resume=not args.fresh, run_name=args.run_name)
    except (*flows.TRAINING_ERRORS, NoTextSpaceError, TextUnavailableError, EncoderUnavailableError) as err:
        print(f"rodin: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _edit(args: argparse.Namespace) -> int:
    """``rodin edit``: a plain function writing to ``--dest``; an input error is one line with exit code 2."""
    from workflows.text_edit import EDIT_ERRORS, edit_avatar_file

    try:
        result = edit_avatar_file(args.out, args.avatar, args.dest, to=args.to, source=args.source,
                                  strength=args.strength, keep=args.keep, views=args.views,
                                  resolution=args.resolution,
                                  preset=args.preset, device=args.device)
    except EDIT_ERRORS as err:
        print(f"rodin: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


def _text(args: argparse.Namespace) -> int:
    """``rodin text``: a prompt -> avatars under ``--dest``, in this process; bad input is one line, exit code 2."""
    from workflows import text_commands

    try:
        result = text_commands.text_to_avatar(
            args.out, args.prompt, args.dest, n=args.n, seed=args.seed, text_guidance=args.text_guidance,
            guidance_scale=args.guidance_scale, sampler=args.sampler, steps=args.steps, views=args.views,
            resolution=args.resolution, preset=args.preset, device=args.device)
    except text_commands.TEXT_ERRORS as err:
        print(f"rodin: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


GENERATION_COMMANDS = ("sample", "invert", "interpolate", "mesh", "render-avatar")
RENDER_AVATAR_RESOLUTION = 128
"""``rodin render-avatar``'s frame side without --refine or --resolution."""


def _generation(args: argparse.Namespace) -> int:
    """Run a generation command; an input error is printed as one line with exit code 2."""
    from rodin_core.generation.job import GENERATION_ERRORS

    try:
        if args.command == "sample":
            return _sample(args)
        result = _avatar_command(args)
    except GENERATION_ERRORS as err:
        print(f"rodin: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


def _avatar_command(args: argparse.Namespace) -> dict:
    """``rodin invert`` / ``interpolate`` / ``mesh`` / ``render-avatar``: plain functions writing to ``--dest``."""
    from workflows import avatar_commands as commands

    if args.command == "invert":
        return commands.invert_portrait(args.out, args.image, args.dest, seed=args.seed,
                                        guidance_scale=args.guidance_scale, sampler=args.sampler, steps=args.steps,
                                        views=args.views, resolution=args.resolution, preset=args.preset,
                                        device=args.device)
    if args.command == "interpolate":
        return commands.interpolate_avatars(args.out, args.a, args.b, args.dest, frames=args.frames, seed=args.seed,
                                            guidance_scale=args.guidance_scale, sampler=args.sampler,
                                            steps=args.steps, resolution=args.resolution, preset=args.preset,
                                            device=args.device)
    if args.command == "mesh":
        threshold = {} if args.threshold is None else {"threshold": args.threshold}
        return commands.mesh_avatar(args.out, args.avatar, args.dest, resolution=args.resolution, device=args.device,
                                    **threshold)
    resolution = args.resolution or (None if args.refine else RENDER_AVATAR_RESOLUTION)
    return commands.render_avatar(args.out, args.avatar, args.dest, views=args.views, resolution=resolution,
                                  x0=args.x0, refine=args.refine, preset=args.preset, device=args.device)


def _sample(args: argparse.Namespace) -> int:
    """Check the inputs, run the generate flow, copy its committed outputs to ``--dest``; print where they are."""
    from rodin_core.generation import job as data

    outputs = args.outputs or args.out
    request = data.GenerateRequest(n=args.n, guidance_scale=args.guidance_scale, sampler=args.sampler,
                                   steps=args.steps, seed=args.seed, views=args.views, resolution=args.resolution)
    data.plan_generation(args.out, outputs, request, args.preset)  # fail fast, before starting Prefect
    from workflows.generate import generate

    with prefect_backend():
        summary = generate(checkpoints=args.out, n=args.n, guidance_scale=args.guidance_scale, sampler=args.sampler,
                           steps=args.steps, seed=args.seed, outputs=outputs, turntable_views=args.views,
                           resolution=args.resolution, preset=args.preset, device=args.device)
    print(json.dumps(summary, indent=2, default=str))
    state = "reused" if summary["reused"] else "committed"
    print(f"{len(summary['avatars'])} avatars {state} in {summary['stage']} shard {summary['shard_id']}; "
          f"contact sheet: {summary['contact_sheet']}")
    if args.dest:
        files = data.export_generated(outputs, summary["shard_id"], args.dest)
        print(f"copied {len(files)} files to {args.dest} (contact sheet: {files[0]})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """Check the inputs, run the evaluate flow, print its tables and where its files are; bad input is one line."""
    from rodin_core.evaluation import quality_job as job
    from rodin_core.generation import SampleOptions

    clip = {"clip_model": args.clip_model or "ViT-B-32", "clip_pretrained": args.clip_pretrained}
    if args.features == "vgg" and (args.clip_model or args.clip_pretrained):
        print("rodin: --clip-model and --clip-pretrained choose CLIP features; drop them, or pass --features clip",
              file=sys.stderr)
        return 2
    features = args.features or ("clip" if args.clip_model or args.clip_pretrained else "vgg")
    options = {"guidance_scale": args.guidance_scale, "sampler": args.sampler, "steps": args.steps}
    try:
        SampleOptions(**options)
        job.check_quality_inputs(args.out, args.renders, n=args.n, preset=args.preset)  # before starting Prefect
        job.check_features(features, **clip)
        from workflows.evaluate import evaluate

        with prefect_backend():
            summary = evaluate(out=args.out, renders=args.renders, n=args.n, seed=args.seed, features=features,
                               **clip, subjects=args.subjects, **options, preset=args.preset, device=args.device)
    except job.EVALUATION_ERRORS as err:
        print(f"rodin: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(summary["table"])
    print(f"\nevaluation of {args.out} written to:")
    for uri in summary["files"].values():
        print(f"  {uri}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Run the demo flow; print the wall time of each stage and where the outputs are, or the failed stage."""
    from rodin_core.config import load_config

    load_config(args.preset, args.config_file, args.overrides)  # fail fast, before starting Prefect
    if args.n < 2:
        print(f"rodin: --n must be at least 2 (the demo interpolates avatars 0 and 1), got {args.n}", file=sys.stderr)
        return 2
    from workflows import demo as flows

    try:
        flows.demo_folder(args.out, args.dest)
    except ValueError as err:
        print(f"rodin: {err}", file=sys.stderr)
        return 2
    try:
        with prefect_backend():
            summary = flows.demo(out=args.out, preset=args.preset, config_file=args.config_file,
                                 overrides=args.overrides, ray_address=args.ray_address, n=args.n, seed=args.seed,
                                 turntable_views=args.views, mesh_resolution=args.mesh_resolution,
                                 mesh_threshold=args.mesh_threshold, dest=args.dest)
    except flows.DemoStageError as err:
        print(f"rodin: {err}", file=sys.stderr)
        return 1
    print(flows.format_summary(summary))
    return 0


def _contact_sheet(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rodin_core.datasets import renders as corpus
    from rodin_core.imaging import encode_png
    from rodin_core.storage import open_store

    stage = open_store(args.out).stage("renders")
    shards = stage.committed_shards()
    sheet = corpus.frontal_contact_sheet(stage, shards, args.count, args.columns, args.tile, not args.no_labels)
    if sheet is None:
        print(f"rodin: no committed renders shard under {stage.uri}; run `rodin render --out {args.out}` first",
              file=sys.stderr)
        return 1
    Path(args.dest).write_bytes(encode_png(sheet))
    print(f"wrote {args.dest}: {sheet.shape[1]}x{sheet.shape[0]} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
