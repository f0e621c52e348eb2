"""What ``rodin text`` does (appendix B.5): a prompt in, avatars and their turntables out, in a local folder.

prompt -> text embedding (the text tower sharing the base encoder's space, :mod:`rodin_core.text.towers`)
-> z from the text prior (:mod:`rodin_core.generation.text_prior`) -> :meth:`GenerationPipeline.generate`
-> ``dest`` gets, per avatar, ``{slug}-{seed}.safetensors`` (its meta records the prompt, the seed and both
guidance scales), ``{slug}-{seed}-turntable.gif`` + frames, and ``{slug}.png``, the frontal views in a row.
A plain function without Prefect, like ``rodin invert``; bad input raises one of
:data:`TEXT_ERRORS`, whose message says what to do. :func:`text_inputs` checks the store (manifests
and configs only) and names what to train first.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import torch

from rodin_core.datasets.checkpoints import committed_step, read_stage_checkpoint
from rodin_core.datasets.layout import CHECKPOINTS_STAGE
from rodin_core.generation import save_avatar
from rodin_core.generation.job import (
    GENERATION_ERRORS,
    GenerateInputError,
    GenerateRequest,
    input_digests,
    load_pipeline,
    trained_config,
    turntable_frames,
    write_file,
)
from rodin_core.generation.text_prior import (
    TextPrior,
    check_text_guidance,
    text_avatars,
)
from rodin_core.imaging import contact_sheet, encode_png
from rodin_core.stage_specs import TEXT_PRIOR
from rodin_core.text.sentence import PromptError, TextUnavailableError
from rodin_core.text.towers import (
    TEXT_REMEDY,
    NoTextSpaceError,
    check_prompt,
    clean_prompt,
    text_tower,
)
from workflows.avatar_commands import check_preset_name, write_turntable

log = logging.getLogger(__name__)

TEXT_STAGES = ("base", "upsampler", TEXT_PRIOR)
"""The checkpoints text-to-avatar reads (no latent prior: the text prior draws z)."""
TEXT_ERRORS = (*GENERATION_ERRORS, PromptError, NoTextSpaceError, TextUnavailableError)
"""Failures caused by the inputs, whose message says what to do (the CLI prints them as one line)."""
SLUG_CHARS = 40
"""Longest prompt slug in the output file names."""


def prompt_slug(prompt: str) -> str:
    """A file-name stem of ``prompt``: lower-case words joined by ``-``, at most :data:`SLUG_CHARS` characters."""
    words = re.findall(r"[a-z0-9]+", prompt.lower())
    return "-".join(words)[:SLUG_CHARS].strip("-") or "prompt"


def text_inputs(out: str, storage_options: dict | None = None, preset: str | None = None) -> dict[str, str]:
    """What identifies the committed inputs of text-to-avatar under ``out`` (weights sha256 and config hash of the
    base, upsampler and text prior checkpoints, the decoder's sha256).

    Raises :class:`GenerateInputError` naming what to train when the base model's encoder has no text tower
    (``encoder.kind=learned``) or a checkpoint is missing.
    """
    input_digests(out, storage_options, stages=TEXT_STAGES[:2], preset=preset)  # the decoder, base and upsampler
    cfg = trained_config(out, storage_options, preset)
    if cfg is not None and cfg.encoder.kind == "learned":
        raise GenerateInputError(f"the base model under {out} reads encoder.kind='learned', which has no text tower; "
                                 + TEXT_REMEDY.replace("OUT", out))
    if committed_step(out, TEXT_PRIOR, storage_options) is None:
        raise GenerateInputError(f"no trained text prior under {out}/{CHECKPOINTS_STAGE}; train it: "
                                 f"`rodin train text-prior --out {out}`")
    return input_digests(out, storage_options, stages=TEXT_STAGES, preset=preset)


def text_to_avatar(out: str, prompt: str, dest: str | Path, *, n: int = 1, seed: int = 0,
                   text_guidance: float | None = None, guidance_scale: float | None = None,
                   sampler: str | None = None, steps: int | None = None, views: int = 24,
                   resolution: int | None = None, preset: str | None = None, storage_options: dict | None = None,
                   device: torch.device | str = "cpu") -> dict[str, Any]:
    """Text to avatar (appendix B.5): ``n`` avatars of ``prompt`` (avatar i from seed + i) under ``dest``.

    ``text_guidance``: CFG scale of the text prior (None: ``text_prior.guidance_scale``); ``guidance_scale``,
    ``sampler`` and ``steps``: the base model's and upsampler's, as in ``rodin sample``. Returns the paths and
    the z of each avatar's meta.
    """
    prompt = clean_prompt(prompt)
    check_preset_name(preset)
    options = GenerateRequest(n=n, guidance_scale=guidance_scale, sampler=sampler, steps=steps, seed=seed,
                              views=views, resolution=resolution).validate().options()
    check_text_guidance(text_guidance)
    text_inputs(out, storage_options, preset)
    pipeline = load_pipeline(out, storage_options, preset, device, require_prior=False)
    prior = TextPrior.from_checkpoint(read_stage_checkpoint(out, TEXT_PRIOR, storage_options)[0], device)
    prior.check_base(pipeline.cfg, out)
    tower = text_tower(pipeline.cfg.encoder, device, storage_options=storage_options)
    check_prompt(tower, prompt)
    start = time.perf_counter()
    text = tower.embed([prompt])  # (1, E)
    avatars = text_avatars(pipeline, prior, text, prompt, n, seed=seed, options=options, text_guidance=text_guidance)
    size = resolution or pipeline.cfg.render.resolution
    folder, slug = Path(dest), prompt_slug(prompt)
    results, fronts = [], []
    for avatar in avatars:
        stem = f"{slug}-{avatar.meta['seed']}"
        frames = turntable_frames(pipeline.cfg, pipeline.decoder, avatar.planes, views, size)
        paths = [save_avatar(avatar, folder / f"{stem}.safetensors"), *write_turntable(folder, stem, frames)]
        results.append({"avatar": str(paths[0]), "turntable": str(paths[1]), "seed": avatar.meta["seed"]})
        fronts.append(frames[0])
    sheet = contact_sheet(fronts, len(fronts), [f"seed {a.meta['seed']}" for a in avatars])
    sheet_path = write_file(folder / f"{slug}.png", encode_png(sheet))
    log.info("made %d avatars of %r under %s in %.1f s", n, prompt, folder, time.perf_counter() - start)
    return {"prompt": prompt, "avatars": results, "sheet": str(sheet_path),
            "text_guidance_scale": avatars[0].meta["text_guidance_scale"]}
