"""A tiny avatar-CLIP file, and the overrides that condition the tiny generation models on its image tower.

The model is randomly initialised (seeded) but real: its text side is the packaged sentence encoder
and a projection to ``embed_dim`` (the tiny models' ``encoder.latent_dim``, 8), saved with
:func:`rodin_core.text.files.save_avatar_clip` as `rodin train text-embedding` saves it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rodin_core.text.files import save_avatar_clip
from rodin_core.text.model import AvatarClip, AvatarClipConfig


def tiny_avatar_clip(path: Path, embed_dim: int = 8, seed: int = 0, max_prompt_tokens: int = 128) -> str:
    """Save a fresh avatar-CLIP model of ``embed_dim`` dimensions at ``path`` (``.safetensors``); its path."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AvatarClip(AvatarClipConfig(embed_dim=embed_dim, image_size=16, image_channels=4, projection_hidden=8,
                                            max_prompt_tokens=max_prompt_tokens))
    return str(save_avatar_clip(model, path))


def avatar_clip_overrides(weights: str) -> tuple[str, ...]:
    """Config overrides that make the base model read z from the image tower of ``weights``."""
    return ("encoder.kind=avatar_clip", f"encoder.avatar_clip_weights={weights}")
