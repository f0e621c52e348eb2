"""The ``rodin`` command's argument parser: its subcommands, their flags and the types that check each flag.

:func:`build_parser` builds the parser :func:`workflows.cli.main` parses ``rodin ARGV`` with; :class:`Parser`
prints a bad flag as one line. The module imports no torch, Prefect or Ray, so that a bad flag is one line within
a second: the ``--sampler`` and ``--features`` choices are written out here rather than imported from the
generation and evaluation code. The command handlers are in :mod:`workflows.cli`; what each command does is in
README.md.
"""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

from rodin_core.config import PRESETS

SAMPLER_CHOICES = ("ancestral", "ddim")
"""``--sampler`` values: :data:`rodin_core.generation.SAMPLERS` (not imported here, to keep the generation stack out
of start-up)."""
FEATURE_CHOICES = ("vgg", "clip")
"""``rodin evaluate --features`` values: :data:`rodin_core.evaluation.quality_job.FEATURES`."""
TRAIN_FLOWS = {"base": "train_base", "upsampler": "train_upsampler", "prior": "train_latent_prior",
               "all": "train_all"}
"""``rodin train`` stage -> flow function of ``workflows.train_flows``."""
REFINER_STAGE = "refiner"
"""``rodin train refiner``: the convolutional refiner, trained in this process (no Prefect, no Ray)."""
TEXT_EMBEDDING = "text-embedding"
"""``rodin train`` stage of the avatar-CLIP text-image embedding (``workflows.text_embedding``)."""
TEXT_PRIOR_STAGE = "text-prior"
"""``rodin train`` stage of the text prior (``workflows.text_prior``), z from a text embedding (appendix B.5)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what is wrong and where the usage is, not the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _integer(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """A count or a size flag: an integer >= 1."""
    return _integer(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """A seed, an id or an index flag: an integer >= 0."""
    return _integer(text, 0, "an integer >= 0")


def finite_float(text: str) -> float:
    """A number flag: a finite float (no nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def unit_float(text: str) -> float:
    """A share flag: a number from 0 to 1."""
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}")
    return value


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", choices=PRESETS, help="named preset (default: tiny)")
    parser.add_argument("--config", dest="config_file", default=None, help="YAML file of config sections")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config field, e.g. --set render.samples=32 or --set "
                             "base.unet.model_channels=64 (repeatable)")


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--runner", default="ray", choices=("ray", "threads"),
                        help="run shards as Ray tasks (default) or in local threads")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rodin", description="Rodin 3D avatar diffusion pipeline")
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser("render", help="render the synthetic avatar corpus (render-avatars flow)")
    _add_config_args(render)
    render.add_argument("--out", required=True, help="dataset root URI (local path, s3://..., memory://...)")
    render.add_argument("--subjects", type=positive_int, help="number of subjects (corpus.subjects)")
    render.add_argument("--views", type=positive_int, help="views per subject (render.views)")
    render.add_argument("--resolution", type=positive_int, help="image side in pixels (render.resolution)")
    render.add_argument("--seed", type=non_negative_int, help="corpus seed (corpus.seed)")
    render.add_argument("--shard-size", type=positive_int, help="subjects per shard (corpus.shard_size)")
    render.add_argument("--asset-dir", help="asset-library folder (hair/, facial_hair/, clothing/, accessories/)")
    _add_run_args(render)

    fit = sub.add_parser("fit", help="fit a tri-plane per rendered subject (fit-triplanes flow)")
    _add_config_args(fit)
    fit.add_argument("--renders", required=True, help="dataset root URI holding the committed renders")
    fit.add_argument("--out", default=None, help="dataset root URI for decoder/ and triplanes/ (default: --renders)")
    fit.add_argument("--shared-subjects", type=positive_int, help="subjects fitted with the shared decoder (fit.shared_subjects)")
    fit.add_argument("--steps", type=positive_int, help="most steps per subject in phase B (fit.steps)")
    fit.add_argument("--target-psnr", type=finite_float, help="held-out PSNR that stops a subject early (fit.target_psnr)")
    fit.add_argument("--shards", type=non_negative_int, nargs="+", metavar="N",
                     help="re-fit only these fitting shards, even when committed")
    fit.add_argument("--only-failed", action="store_true",
                     help="re-fit only shards with a failed subject or a failed, uncommitted attempt")
    _add_run_args(fit)

    train = sub.add_parser("train", help="train a diffusion stage on the fitted tri-planes (train-* flows, Ray Train)")
    train.add_argument("stage", choices=(*TRAIN_FLOWS, REFINER_STAGE, TEXT_EMBEDDING, TEXT_PRIOR_STAGE),
                       help="base (§3.2), upsampler (§3.3), prior (B.4), all three, the refiner (§3.3, Fig. 8), "
                            "the avatar-CLIP text-image embedding on the renders and their captions (text-embedding, "
                            "§4.5), or the text prior, z from a caption's embedding (text-prior, B.5)")
    _add_config_args(train)
    train.add_argument("--out", required=True, help="dataset root URI holding the committed tri-planes and decoder")
    train.add_argument("--renders", default=None, help="dataset root URI of the renders (default: --out)")
    train.add_argument("--steps", type=positive_int, help="optimisation steps of the stage (<stage>.train.steps)")
    train.add_argument("--workers", type=positive_int, help="Ray Train workers of the stage (<stage>.train.workers)")
    train.add_argument("--cpus-per-worker", type=positive_int,
                       help="CPUs and torch threads per worker (default: the largest Ray node's CPUs / workers)")
    train.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray)")
    train.add_argument("--fresh", action="store_true",
                       help="start a new run from scratch instead of resuming the stage's last checkpoint")
    train.add_argument("--run-name", help="Ray Train run name (default: the stage name; not with 'all')")
    train.add_argument("--hr-renders", default=None,
                       help="refiner: dataset root of the same subjects rendered at 2x or 4x the side of --renders "
                            "(`rodin render --resolution`); --set refiner.FIELD=V / refiner.net.FIELD=V set its config")
    train.add_argument("--device", default="cpu", help="refiner: torch device of its training (default: cpu)")
    train.add_argument("--pairs-cache", default=None, metavar="DIR",
                       help="refiner: local folder keeping the renders of the fitted tri-planes for the next run")

    show = sub.add_parser("config", help="print the resolved config as JSON")
    _add_config_args(show)

    status = sub.add_parser("status", help="list committed shards and recorded failures of a dataset")
    status.add_argument("--out", required=True, help="dataset root URI")
    status.add_argument("--stage", default="renders", help="stage folder (default: renders)")
    status.add_argument("--verify", action="store_true",
                        help="also hash the stage's committed files against their manifests (exit code 1 on damage)")
    verify = sub.add_parser("verify", help="hash every committed file of a dataset against its manifest")
    verify.add_argument("--out", required=True, help="dataset root URI")
    verify.add_argument("--stage", nargs="+", metavar="STAGE", help="only these stages (default: every stage there)")
    gc = sub.add_parser("gc", help="remove attempt folders and files that no manifest references")
    gc.add_argument("--out", required=True, help="dataset root URI")
    gc.add_argument("--stage", nargs="+", metavar="STAGE", help="only these stages (default: every stage there)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    gc.add_argument("--min-age", type=float, default=60, metavar="MINUTES",
                    help="leave alone what was written in the last MINUTES, as a stage may still be writing it "
                         "(default 60; 0 removes everything unreferenced: only while no stage runs on the root)")
    sheet = sub.add_parser("contact-sheet", help="tile the frontal views (view 0) of a rendered corpus into a PNG")
    sheet.add_argument("--out", required=True, help="dataset root URI")
    sheet.add_argument("--dest", required=True, help="PNG file to write")
    sheet.add_argument("--count", type=positive_int, default=16, help="subjects to show (default 16)")
    sheet.add_argument("--columns", type=positive_int, default=4, help="tiles per row (default 4)")
    sheet.add_argument("--tile", type=positive_int, default=None, help="shrink tiles to this many pixels")
    sheet.add_argument("--no-labels", action="store_true", help="leave out the subject-id labels")
    _add_generation_parsers(sub)
    _add_edit_parser(sub)
    _add_text_parser(sub)
    _add_evaluate_parser(sub)
    _add_demo_parser(sub)
    return parser


def prompt_text(text: str) -> str:
    """A prompt flag: text that is not blank (its length in tokens is checked by the text tower)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a non-empty prompt, e.g. 'a person with blonde hair', got {text!r}")
    return text


def _add_edit_parser(sub: argparse._SubParsersAction) -> None:
    edit = sub.add_parser("edit", help="text-guided edit of an avatar: z + s * (E(--to) - E(--from)), same seed "
                                       "(§4.5, B.3)")
    edit.add_argument("avatar", help="avatar .safetensors to edit (written by sample, invert, interpolate, edit or text)")
    edit.add_argument("--to", required=True, type=prompt_text, metavar="PROMPT",
                      help="target prompt T_tgt, e.g. 'a person with blonde hair'")
    edit.add_argument("--from", dest="source", default=None, type=prompt_text, metavar="PROMPT",
                      help="source prompt T_src (default: 'a person')")
    edit.add_argument("--strength", type=finite_float, default=1.0,
                      help="s in z' = z + s * delta (default 1; 0 gives back the avatar)")
    edit.add_argument("--keep", type=unit_float, default=0.0,
                      help="share of the base model's noisiest reverse steps that still follow the avatar's own z, "
                           "keeping its layout (default 0: the paper's edit; 1 gives back the avatar)")
    edit.add_argument("--out", required=True,
                      help="dataset root URI holding the checkpoints and decoder the avatar was made with")
    edit.add_argument("--views", type=positive_int, default=24, help="turntable frames (default 24)")
    edit.add_argument("--resolution", type=positive_int, help="rendered frame side in pixels (default: render.resolution)")
    _add_generation_common(edit)
    edit.add_argument("--dest", required=True, help="local folder for the edited avatar, its turntable and comparison")


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser("evaluate", help="sample quality: reconstruction of training and held-out subjects, "
                                               "samples against the training set (evaluate flow)")
    _add_sampling_args(evaluate)
    evaluate.add_argument("--renders", default=None, help="dataset root URI of the renders (default: --out)")
    evaluate.add_argument("--n", type=positive_int, default=16,
                          help="samples; sample i uses seed + i, as in rodin sample (default 16)")
    evaluate.add_argument("--features", choices=FEATURE_CHOICES, default=None,
                          help="image features of the Fréchet distance: vgg (the VGG16 of stlpips; the default) or "
                               "clip (CLIP-FID; the default when --clip-model or --clip-pretrained is given)")
    evaluate.add_argument("--clip-model", default=None, help="open_clip model of the CLIP features (default ViT-B-32)")
    evaluate.add_argument("--clip-pretrained", default=None, metavar="TAG_OR_PATH",
                          help="their weights: an open_clip tag cached locally or a .safetensors file (default openai)")
    evaluate.add_argument("--subjects", type=non_negative_int, nargs="+", metavar="ID",
                          help="reconstruct these subject ids (default: every held-out subject and 8 training ones)")


def _add_text_parser(sub: argparse._SubParsersAction) -> None:
    text = sub.add_parser("text", help="text to avatar: a prompt -> z from the text prior -> avatars + turntables "
                                       "(appendix B.5)")
    text.add_argument("prompt", help="one sentence about the avatar, e.g. 'a woman with afro hair in red'")
    _add_sampling_args(text)
    text.add_argument("--n", type=positive_int, default=1, help="avatars of the prompt; avatar i uses seed + i (default 1)")
    text.add_argument("--guidance", dest="text_guidance", type=finite_float, default=None, metavar="SCALE",
                      help="classifier-free guidance scale of the text prior (0: ignore the text; default: "
                           "text_prior.guidance_scale of its checkpoint)")
    text.add_argument("--views", type=positive_int, default=24, help="turntable frames per avatar (default 24)")
    text.add_argument("--resolution", type=positive_int, help="rendered frame side in pixels (default: render.resolution)")
    text.add_argument("--dest", required=True, help="local folder for the avatars, their turntables and a sheet")


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the main job: render, fit, train, generate, then invert a held-out portrait, "
                                       "interpolate and mesh (demo flow; a re-run reuses every stage)")
    _add_config_args(demo)
    demo.add_argument("--out", required=True, help="dataset root URI of every stage (e.g. data/tiny)")
    demo.add_argument("--dest", default=None, help="local folder for the outputs to look at (default: OUT/demo)")
    demo.add_argument("--n", type=positive_int, default=4, help="avatars to sample, at least 2; avatar i uses seed + i (default 4)")
    demo.add_argument("--seed", type=non_negative_int, default=0, help="seed of the sampled avatars and the inversion (default 0)")
    demo.add_argument("--views", type=positive_int, default=24, help="turntable frames per avatar (default 24)")
    demo.add_argument("--mesh-resolution", type=positive_int, default=128,
                      help="density grid cells per side of the mesh of avatar 0 (default 128)")
    demo.add_argument("--mesh-threshold", type=finite_float, default=None,
                      help="density iso-level of the mesh (default: 10, or below the peak density of an "
                           "undertrained avatar that never reaches it)")
    demo.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray)")


def _add_sampling_args(parser: argparse.ArgumentParser, inherit: bool = False) -> None:
    """--seed, --cfg, --sampler, --steps, --preset, --device; with ``inherit`` the defaults come from avatar A."""
    parser.add_argument("--out", required=True, help="dataset root URI holding checkpoints/ and decoder/")
    parser.add_argument("--seed", type=non_negative_int, default=None if inherit else 0,
                        help="seed of the prior draw and the reverse process (default: " +
                             ("avatar A's)" if inherit else "0)"))
    parser.add_argument("--cfg", dest="guidance_scale", type=finite_float, default=None, metavar="SCALE",
                        help="classifier-free guidance scale (Eq. 3; default: " +
                             ("avatar A's)" if inherit else "base.guidance_scale of the checkpoints)"))
    parser.add_argument("--sampler", choices=SAMPLER_CHOICES, default=None,
                        help="reverse process: ancestral or DDIM (eta 0) (default: " +
                             ("avatar A's)" if inherit else "each stage's: DDIM when its diffusion.sampling_steps "
                              "reads 'ddimN', else ancestral)"))
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="reverse steps of the base model and the upsampler (default: " +
                             ("avatar A's)" if inherit else "each stage's diffusion.sampling_steps)"))
    _add_generation_common(parser)


def _add_generation_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default=None, choices=PRESETS,
                        help="refuse checkpoints trained with another preset (default: take the checkpoints' preset)")
    parser.add_argument("--device", default="cpu", help="torch device of the networks and the renderer (default: cpu)")


def _add_generation_parsers(sub: argparse._SubParsersAction) -> None:
    sample = sub.add_parser("sample", help="sample avatars with turntables and a contact sheet (generate flow)")
    _add_sampling_args(sample)
    sample.add_argument("--n", type=positive_int, default=4, help="avatars to sample; avatar i uses seed + i (default 4)")
    sample.add_argument("--views", type=positive_int, default=24, help="turntable frames per avatar (default 24)")
    sample.add_argument("--resolution", type=positive_int, help="rendered frame side in pixels (default: render.resolution)")
    sample.add_argument("--outputs", default=None, help="dataset root URI for generated/ (default: --out)")
    sample.add_argument("--dest", default=None, help="also copy the committed outputs to this local folder")

    invert = sub.add_parser("invert", help="portrait inversion: an image -> avatar + turntable (§4.5)")
    invert.add_argument("image", help="portrait image file (PNG, JPEG), any size")
    _add_sampling_args(invert)
    invert.add_argument("--views", type=positive_int, default=24, help="turntable frames (default 24)")
    invert.add_argument("--resolution", type=positive_int, help="rendered frame side in pixels (default: render.resolution)")
    invert.add_argument("--dest", required=True, help="local folder for the avatar, its turntable and comparison")

    interp = sub.add_parser("interpolate", help="latent interpolation between two avatars (Fig. 6)")
    interp.add_argument("a", help="avatar .safetensors at t = 0")
    interp.add_argument("b", help="avatar .safetensors at t = 1")
    _add_sampling_args(interp, inherit=True)
    interp.add_argument("--frames", type=positive_int, default=5, help="avatars along the path, both ends included (default 5)")
    interp.add_argument("--resolution", type=positive_int, help="rendered frame side in pixels (default: render.resolution)")
    interp.add_argument("--dest", required=True, help="local folder for interp-NN.safetensors and interpolation.png")

    mesh = sub.add_parser("mesh", help="marching-cubes mesh of an avatar's density field (Fig. 5)")
    mesh.add_argument("avatar", help="avatar .safetensors")
    mesh.add_argument("--out", required=True, help="dataset root URI holding the decoder the avatar was made for")
    mesh.add_argument("--resolution", type=positive_int, default=128, help="density grid cells per side (default 128)")
    mesh.add_argument("--threshold", type=finite_float, default=None,
                      help="density iso-level (default: rodin_core.mesh.DEFAULT_THRESHOLD, 10)")
    mesh.add_argument("--device", default="cpu", help="torch device of the decoder (default: cpu)")
    mesh.add_argument("--dest", required=True, help="mesh file to write, .glb or .ply")

    render = sub.add_parser("render-avatar", help="turntable of an avatar file, and its x0 strip (Fig. 15)")
    render.add_argument("avatar", help="avatar .safetensors")
    render.add_argument("--out", required=True, help="dataset root URI holding the decoder (and checkpoints for --x0)")
    render.add_argument("--views", type=positive_int, default=24, help="turntable frames (default 24)")
    render.add_argument("--resolution", type=positive_int, default=None,
                        help="rendered frame side in pixels (default 128; with --refine the refiner's input side)")
    render.add_argument("--x0", action="store_true",
                        help="also re-run the reverse process from the avatar's z and render x0 along it")
    render.add_argument("--refine", action="store_true",
                        help="pass the frames through the committed refiner of --out (§3.3, Fig. 8): frames at 2x or "
                             "4x --resolution, and a PNG of bilinear vs refined frames")
    _add_generation_common(render)
    render.add_argument("--dest", required=True, help="local folder for the turntable GIF, frames and x0 strip")
