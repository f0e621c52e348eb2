"""A tiny open_clip CLIP for the text-tower tests: ViT-B-32 shrunk through ``open_clip.create_model``'s model-config
overrides, with CLIP's real tokenizer vocabulary (so that its token ids fit) and a 12-token context; random weights
saved as a local ``.safetensors``, the way a user hands over CLIP weights. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}}
"""The overrides: 16-dimensional embeddings, one-layer towers, 12 text tokens."""


def save_tiny_clip(path: Path, seed: int = 0) -> open_clip.model.CLIP:
    """A seeded tiny CLIP (eval mode) whose weights are saved at ``path``; the model, as the reference."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model("ViT-B-32", pretrained=None, **TINY_CLIP).eval()  # a local file: no quick GELU
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model
