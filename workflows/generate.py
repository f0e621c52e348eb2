"""The ``generate`` flow: trained checkpoints in, avatars people can look at out (paper §4.2, §3.2-3.3, B.4).

Unconditional generation as in §4.2: z from the latent prior (appendix B.4), the base diffusion
model at the base resolution with classifier-free guidance (Eq. 3), the diffusion upsampler to
the full tri-plane resolution (§3.3). The flow body reads like its table of contents:

1. plan: check the committed checkpoints and decoder, name the output shard from a hash of the
   parameters and the inputs' sha256s; a shard committed for them is reused (and says so);
2. load the :class:`~rodin_core.generation.GenerationPipeline` (:func:`load_pipeline`);
3. sample the avatars, avatar i from seed + i, one task each;
4. render a turntable per avatar through the fitting renderer;
5. tile frame 0 of every turntable into a labelled contact sheet;
6. commit everything as one shard of the ``generated`` stage (layout in :mod:`rodin_core.generation.job`);
7. publish the contact sheet as a Prefect artifact and return where the outputs are.

What the flow reads and writes, and the input errors it raises, are library code in
:mod:`rodin_core.generation.job`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from rodin_core.datasets.layout import CONTACT_SHEET_FILE, FRAMES_FILE
from rodin_core.generation import Avatar, GenerationPipeline
from rodin_core.generation.job import (
    GenerateRequest,
    GenerationPlan,
    avatar_file,
    avatar_sheet,
    commit_generated,
    generated_stage,
    generated_uri,
    gif_file,
    load_pipeline,
    plan_generation,
    turntable_frames,
)
from workflows.artifacts import publish_image
from workflows.logs import relay_logs

__all__ = ["generate"]

TAGS = ["rodin", "generate"]
ARTIFACT_KEY = "generate-contact-sheet"
COMMIT_RETRIES = 2
COMMIT_RETRY_DELAY_S = 5


@task(cache_policy=NO_CACHE, tags=TAGS)
def plan_outputs(checkpoints: str, outputs: str, request: GenerateRequest, preset: str | None,
                 storage_options: dict | None) -> GenerationPlan:
    """Check the inputs and name the output shard (manifests and configs only)."""
    return plan_generation(checkpoints, outputs, request, preset, storage_options)


@task(cache_policy=NO_CACHE, tags=TAGS)
def load_generator(checkpoints: str, preset: str | None, device: str,
                   storage_options: dict | None) -> GenerationPipeline:
    """Rebuild the pipeline from the committed checkpoints (EMA weights) and the frozen decoder."""
    with relay_logs("rodin_core.generation.job"):
        return load_pipeline(checkpoints, storage_options, preset, device)


@task(cache_policy=NO_CACHE, tags=TAGS, task_run_name="sample-avatar-{index}")
def sample_avatar(pipeline: GenerationPipeline, index: int, request: GenerateRequest) -> Avatar:
    """Avatar ``index`` of the request: z drawn by the prior with seed + index, then base and upsampler."""
    start = time.perf_counter()
    avatar = pipeline.sample(1, seed=request.seed + index, options=request.options())[0]
    get_run_logger().info("avatar %d/%d sampled (seed %d) in %.1f s", index + 1, request.n, request.seed + index,
                          time.perf_counter() - start)
    return avatar


@task(cache_policy=NO_CACHE, tags=TAGS, task_run_name="render-turntable-{index}")
def render_turntable(pipeline: GenerationPipeline, avatar: Avatar, index: int, views: int,
                     resolution: int) -> np.ndarray:
    """``views`` frames around avatar ``index`` -> uint8 (views, R, R, 3)."""
    start = time.perf_counter()
    frames = turntable_frames(pipeline.cfg, pipeline.decoder, avatar.planes, views, resolution)
    get_run_logger().info("turntable of avatar %d: %d views at %d px in %.1f s", index, views, resolution,
                          time.perf_counter() - start)
    return frames


@task(retries=COMMIT_RETRIES, retry_delay_seconds=COMMIT_RETRY_DELAY_S, cache_policy=NO_CACHE, tags=TAGS)
def commit_outputs(plan: GenerationPlan, avatars: list[Avatar], turntables: list[np.ndarray], sheet: np.ndarray,
                   storage_options: dict | None, seconds: dict[str, float]) -> dict[str, Any]:
    """Commit the shard; returns ``{attempt_id, files}`` with the URI of every file."""
    manifest = commit_generated(plan, avatars, turntables, sheet, storage_options, seconds)
    return {"attempt_id": manifest.attempt_id,
            "files": {entry.name: generated_uri(plan, manifest, entry.name) for entry in manifest.files}}


def committed_files(plan: GenerationPlan, storage_options: dict | None) -> dict[str, Any]:
    """``{attempt_id, files}`` of the shard committed for ``plan``."""
    manifest = generated_stage(plan.outputs, storage_options).read_manifest(plan.shard_id)
    return {"attempt_id": manifest.attempt_id,
            "files": {entry.name: generated_uri(plan, manifest, entry.name) for entry in manifest.files}}


def summarise(plan: GenerationPlan, committed: dict[str, Any], reused: bool, seconds: float) -> dict[str, Any]:
    """What the flow returns: where the outputs are and what made them."""
    files = committed["files"]
    n = plan.parameters["n"]
    return {"store": plan.outputs, "stage": plan.stage_uri, "shard_id": plan.shard_id,
            "attempt_id": committed["attempt_id"], "reused": reused, "avatars": [files[avatar_file(i)] for i in range(n)],
            "turntables": [files[gif_file(i)] for i in range(n)], "frames": files[FRAMES_FILE],
            "contact_sheet": files[CONTACT_SHEET_FILE], "parameters": plan.parameters, "inputs": plan.inputs,
            "flow_seconds": round(seconds, 3)}


def sheet_caption(plan: GenerationPlan) -> str:
    p = plan.parameters
    steps = "each stage's default" if p["steps"] is None else p["steps"]
    sampler = p["sampler"] or "each stage's own"
    return (f"{p['n']} avatars sampled from the {p['preset']} checkpoints of `{plan.checkpoints}`: z from the latent "
            f"prior, base diffusion with guidance {p['guidance_scale']}, then the upsampler ({sampler} sampler, "
            f"{steps} steps, seeds {p['seed']}..{p['seed'] + p['n'] - 1}). Frontal frame of each turntable "
            f"({p['views']} views at {p['resolution']} px).")


@flow(name="generate")
def generate(checkpoints: str = "data/tiny", n: int = 4, guidance_scale: float | None = None,
             sampler: str | None = None, steps: int | None = None, seed: int = 0, outputs: str | None = None,
             turntable_views: int = 24, resolution: int | None = None, preset: str | None = None,
             device: str = "cpu", storage_options: dict | None = None) -> dict[str, Any]:
    """Sample ``n`` avatars from the checkpoints under ``checkpoints`` and commit them with their turntables.

    ``checkpoints``: dataset root holding ``checkpoints/`` and ``decoder/``; ``outputs``: dataset
    root of the ``generated/`` stage (default: ``checkpoints``). ``guidance_scale`` (None: the base
    stage's), ``sampler`` (``ancestral`` | ``ddim``; None: each stage's configured rule) and ``steps`` (None: each stage's sampling
    steps) set the reverse process; avatar i is drawn with seed ``seed + i``. ``turntable_views``
    frames of ``resolution`` pixels (None: ``render.resolution``) per avatar. ``preset``: refuse
    checkpoints of another preset. Returns ``{shard_id, reused, avatars, turntables, frames,
    contact_sheet, parameters, ...}`` with the URI of every file.
    """
    start = time.perf_counter()
    logger = get_run_logger()
    outputs = outputs or checkpoints
    request = GenerateRequest(n=n, guidance_scale=guidance_scale, sampler=sampler, steps=steps, seed=seed,
                              views=turntable_views, resolution=resolution)
    plan = plan_outputs(checkpoints, outputs, request, preset, storage_options)
    if plan.committed is not None:
        logger.info("reusing shard %s of %s (attempt %s): committed for the same parameters and checkpoints; "
                    "delete its manifest to generate again", plan.shard_id, plan.stage_uri, plan.committed)
        committed, reused = committed_files(plan, storage_options), True
    else:
        logger.info("generating %d avatars into shard %s of %s", n, plan.shard_id, plan.stage_uri)
        pipeline = load_generator(checkpoints, preset, device, storage_options)
        began = time.perf_counter()
        avatars = [sample_avatar(pipeline, index, request) for index in range(n)]
        sampled = time.perf_counter()
        size = plan.parameters["resolution"]
        turntables = [render_turntable(pipeline, avatar, index, turntable_views, size)
                      for index, avatar in enumerate(avatars)]
        rendered = time.perf_counter()
        sheet = avatar_sheet(avatars, turntables)
        seconds = {"sample": round(sampled - began, 3), "render": round(rendered - sampled, 3)}
        committed = commit_outputs(plan, avatars, turntables, sheet, storage_options, seconds)
        reused = False
        logger.info("committed shard %s (attempt %s): sampling %.1f s, turntables %.1f s", plan.shard_id,
                    committed["attempt_id"], seconds["sample"], seconds["render"])
    summary = summarise(plan, committed, reused, time.perf_counter() - start)
    png = generated_stage(outputs, storage_options).read_bytes(plan.shard_id, CONTACT_SHEET_FILE)
    publish_image(ARTIFACT_KEY, "generate: contact sheet", png, summary["contact_sheet"], caption=sheet_caption(plan))
    logger.info("outputs under %s: %d avatars, turntables and the contact sheet %s", plan.stage_uri, n,
                summary["contact_sheet"])
    return summary
