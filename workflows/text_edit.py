"""What ``rodin edit`` does: an avatar file and two prompts in, the edited avatar and its turntable out
(paper §4.5, appendix B.3).

Like the other avatar commands (:mod:`workflows.avatar_commands`) it reads the committed base and
upsampler checkpoints and the decoder of a dataset root ``out``, refuses an avatar made for another
decoder, preset or plane shape, and writes into a local ``dest``. A plain function without Prefect:
the prompts, the strength, the avatar file and the store's encoder are checked before the
checkpoints are loaded; bad input raises one of :data:`EDIT_ERRORS` with a message that says what to do.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from rodin_core.generation import load_avatar, save_avatar
from rodin_core.generation.edit import TextEdit, edit_avatar, edit_text_tower
from rodin_core.generation.job import (
    GENERATION_ERRORS,
    GenerateInputError,
    input_digests,
    load_pipeline,
    trained_config,
    turntable_frames,
    write_file,
)
from rodin_core.imaging import contact_sheet, encode_png
from rodin_core.text.directions import text_direction
from rodin_core.text.sentence import PromptError, TextUnavailableError
from rodin_core.text.towers import NoTextSpaceError
from workflows.avatar_commands import (
    INVERSION_STAGES,
    check_avatar,
    check_counts,
    check_preset_name,
    write_turntable,
)

log = logging.getLogger(__name__)

EDIT_ERRORS = (*GENERATION_ERRORS, PromptError, NoTextSpaceError, TextUnavailableError)
"""Failures caused by the inputs of an edit, whose message says what to do (the CLI prints them as one line)."""
PROMPT_FLAGS = ("--to", "--from")
"""How the command names the target and source prompts in its errors."""


def edit_avatar_file(out: str, avatar_path: str | Path, dest: str | Path, *, to: str, source: str | None = None,
                     strength: float = 1.0, keep: float = 0.0, views: int = 24, resolution: int | None = None,
                     preset: str | None = None, storage_options: dict | None = None,
                     device: torch.device | str = "cpu") -> dict[str, Any]:
    """Edit the avatar at ``avatar_path`` towards the prompt ``to`` (from ``source``) and write it under ``dest``.

    ``dest`` gets ``{stem}-edit.safetensors``, ``{stem}-edit-turntable.gif`` + frames and
    ``{stem}-edit.png`` (the source's frontal view beside the edited one); ``stem`` is the avatar
    file's stem. ``keep``: see :class:`~rodin_core.generation.edit.TextEdit`. Order of the checks: the counts,
    the strength and keep, the avatar file, the committed checkpoints, the store's text tower and the
    prompts; only then are the networks loaded.
    """
    check_preset_name(preset)
    check_counts(views=views, resolution=resolution)
    edit = TextEdit(to, **({} if source is None else {"source": source}), strength=strength, keep=keep)
    try:
        avatar = load_avatar(avatar_path)
    except OSError as exc:
        raise GenerateInputError(f"cannot read the avatar file {str(avatar_path)!r} ({exc.strerror or exc}); check "
                                 "its path and permissions") from None
    if avatar.z is None:
        raise GenerateInputError(f"{str(avatar_path)!r} has no latent z (e.g. a fitted subject), so it cannot be "
                                 "edited; edit avatars written by rodin sample, invert, interpolate or edit")
    input_digests(out, storage_options, stages=INVERSION_STAGES, preset=preset)
    cfg = trained_config(out, storage_options, preset)
    if cfg is None:
        raise GenerateInputError(f"the checkpoints under {out} disappeared while reading them; run again once "
                                 "training has committed them")
    tower = edit_text_tower(cfg, "cpu", storage_options)
    direction = text_direction(tower, edit.target, edit.source, PROMPT_FLAGS)  # (D,)
    pipeline = load_pipeline(out, storage_options, preset, device, require_prior=False)
    check_avatar(avatar, avatar_path, pipeline.decoder, pipeline.decoder_sha256, out, pipeline.cfg)
    start = time.perf_counter()
    edited = edit_avatar(pipeline, avatar, edit, direction=direction, name=Path(avatar_path).name)
    size = resolution or pipeline.cfg.render.resolution
    frames = turntable_frames(pipeline.cfg, pipeline.decoder, edited.planes, views, size, progress=True)
    before = turntable_frames(pipeline.cfg, pipeline.decoder, avatar.planes, 1, size)[0]
    folder, stem = Path(dest), f"{Path(avatar_path).stem}-edit"
    label = f"edited, s={edit.strength:g}" + (f", keep {edit.keep:g}" if edit.keep else "")
    sheet = contact_sheet([before, frames[0]], 2, ["source", label])
    paths = [save_avatar(edited, folder / f"{stem}.safetensors"), *write_turntable(folder, stem, frames),
             write_file(folder / f"{stem}.png", encode_png(sheet))]
    log.info("edited %s towards %r into %s in %.1f s", avatar_path, edit.target, paths[0], time.perf_counter() - start)
    return {"avatar": str(paths[0]), "turntable": str(paths[1]), "frames": views, "comparison": str(paths[-1]),
            "seed": edited.meta["seed"], "edit": edit.to_dict(), "direction_norm": float(direction.norm()),
            "latent_shift": float((edited.z - avatar.z.float()).norm())}
