"""The ``text-to-avatar`` flow (appendix B.5): ``rodin text``'s library function as a Prefect flow.

It runs :func:`workflows.text_commands.text_to_avatar` on the flow's machine (avatars, turntables and a
sheet of frontal views into the local folder ``dest``) and publishes the sheet as an artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from workflows.artifacts import publish_image
from workflows.logs import relay_logs
from workflows.text_commands import text_to_avatar

__all__ = ["text_to_avatar_flow"]

TAGS = ["rodin", "generate", "text"]


@task(cache_policy=NO_CACHE, tags=TAGS)
def make_text_avatars(out: str, prompt: str, dest: str, parameters: dict[str, Any],
                      storage_options: dict | None) -> dict[str, Any]:
    """The avatars of ``prompt`` under ``dest``, relaying the library's log lines."""
    with relay_logs("workflows.text_commands"):
        return text_to_avatar(out, prompt, dest, storage_options=storage_options, **parameters)


@flow(name="text-to-avatar")
def text_to_avatar_flow(out: str = "data/tiny", prompt: str = "a smiling woman with long red hair",
                        dest: str = "data/tiny/text", n: int = 1, seed: int = 0, text_guidance: float | None = None,
                        guidance_scale: float | None = None, sampler: str | None = None, steps: int | None = None,
                        views: int = 24, resolution: int | None = None, preset: str | None = None,
                        storage_options: dict | None = None, device: str = "cpu") -> dict[str, Any]:
    """``n`` avatars of ``prompt`` from the checkpoints of ``out`` (base, upsampler, text prior), avatar i from
    seed + i, written with their turntables into the local folder ``dest``; returns their paths."""
    parameters = {"n": n, "seed": seed, "text_guidance": text_guidance, "guidance_scale": guidance_scale,
                  "sampler": sampler, "steps": steps, "views": views, "resolution": resolution, "preset": preset,
                  "device": device}
    result = make_text_avatars(out, prompt, dest, parameters, storage_options)
    sheet = Path(result["sheet"])
    publish_image("text-to-avatar", f"text-to-avatar: {result['prompt']}", sheet.read_bytes(), str(sheet),
                  caption=f"Frontal views of {n} avatars of the prompt, seeds {seed}..{seed + n - 1}.")
    return result
