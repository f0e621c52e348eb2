"""The ``text_pairs/`` stage: (caption variant, z) pairs of the training subjects, the text prior's data (B.5).

Row k pairs the text embedding c_k (E,) of one caption variant of subject s_k with z_k (D,), the latent
the base model reads for s_k's frontal view (the ``latents/`` stage, :mod:`rodin_core.training.latents`).
Each training subject gets ``text_prior.variants`` captions: the first names every attribute, the others
are partial descriptions (the render package's :func:`render.caption_variants.recipe_caption_variants`,
passed in by the workflow as ``variants``: recipe JSON -> captions). The text tower is the one sharing
the encoder's space (:func:`rodin_core.text.towers.text_tower`). Pairs are computed again when the
latents, the encoder or the caption settings change.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence

import safetensors.torch
import torch
from torch import Tensor

from rodin_core.config import RodinConfig
from rodin_core.datasets.errors import TrainDataError
from rodin_core.datasets.integrity import corrupt_inputs
from rodin_core.datasets.layout import (
    LATENTS_SHARD,
    LATENTS_STAGE,
    RENDERS_STAGE,
    SUBJECTS_TABLE,
    TEXT_PAIRS_CAPTIONS,
    TEXT_PAIRS_FILE,
    TEXT_PAIRS_SHARD,
    TEXT_PAIRS_STAGE,
)
from rodin_core.storage import config_hash, open_store
from rodin_core.text.towers import text_tower
from rodin_core.training.latents import ensure_latents, read_latents

log = logging.getLogger(__name__)

CaptionVariants = Callable[[str, int, int, float], Sequence[str]]
"""(recipe JSON, seed, count, drop) -> caption variants of that subject (the workflow passes the render package's)."""


def read_recipes(renders: str, storage_options: dict | None = None) -> dict[int, str]:
    """Subject id -> recipe JSON of every committed renders shard of ``renders``."""
    stage = open_store(renders, storage_options).stage(RENDERS_STAGE)
    recipes: dict[int, str] = {}
    for shard_id in stage.committed_shards():
        if SUBJECTS_TABLE not in [f.name for f in stage.read_manifest(shard_id).files]:
            raise TrainDataError(f"renders shard {shard_id} of {stage.uri} holds no {SUBJECTS_TABLE} (the subjects' "
                                 f"recipes the captions are made from); render the corpus again: "
                                 f"`rodin render --out {renders}`")
        with corrupt_inputs(renders):
            table = stage.read_table(shard_id, SUBJECTS_TABLE, columns=["subject_id", "recipe_json"]).to_pydict()
        recipes.update(zip(table["subject_id"], table["recipe_json"], strict=True))
    return recipes


def ensure_text_pairs(cfg: RodinConfig, out: str, renders: str, variants: CaptionVariants,
                      storage_options: dict | None = None, device: torch.device | str = "cpu") -> tuple[int, bool]:
    """Commit ``text_pairs/`` of ``out`` unless current; returns ``(pairs, computed)``.

    Reads the latents (computing them first when missing, :func:`~rodin_core.training.latents.ensure_latents`)
    and the recipes of ``renders``. Raises :class:`~rodin_core.text.towers.NoTextSpaceError` when the encoder has no
    text tower, :class:`TrainDataError` when a subject with a latent has no recipe.
    """
    section = cfg.text_prior
    tower = text_tower(cfg.encoder, device, storage_options=storage_options)  # before the latents: fail fast on kind=learned
    ensure_latents(cfg, out, storage_options, device)
    store = open_store(out, storage_options)
    latents_hash = store.stage(LATENTS_STAGE).read_manifest(LATENTS_SHARD).config_hash
    digest = config_hash({"latents": latents_hash, "encoder": dataclasses.asdict(cfg.encoder), "renders": renders,
                          "variants": section.variants, "drop": section.drop, "seed": section.seed})
    stage = store.stage(TEXT_PAIRS_STAGE)
    if stage.is_committed(TEXT_PAIRS_SHARD):
        manifest = stage.read_manifest(TEXT_PAIRS_SHARD)
        if manifest.config_hash == digest:
            return int(manifest.extra.get("pairs", 0)), False
    ids, z = read_latents(out, storage_options)  # (N,), (N, D)
    recipes = read_recipes(renders, storage_options)
    missing = [int(s) for s in ids.tolist() if int(s) not in recipes]
    if missing:
        raise TrainDataError(f"subjects {missing[:10]} have latents under {out} but no recipe among the renders of "
                             f"{renders}; pass the renders root they were rendered into (--renders)")
    captions = [list(variants(recipes[int(s)], section.seed, section.variants, section.drop)) for s in ids.tolist()]
    rows = [(i, caption) for i, group in enumerate(captions) for caption in group]
    texts = [caption for _, caption in rows]
    text = tower.embed(texts)  # (M, E)
    index = torch.tensor([i for i, _ in rows], dtype=torch.int64)  # (M,)
    writer = stage.begin(TEXT_PAIRS_SHARD)
    tensors = {"subject_ids": ids[index].contiguous(), "text": text.contiguous(), "z": z[index].contiguous()}
    writer.write_bytes(TEXT_PAIRS_FILE, safetensors.torch.save(tensors))
    writer.write_bytes(TEXT_PAIRS_CAPTIONS, json.dumps(texts, indent=1).encode("utf-8"))
    writer.commit(ids.tolist(), digest, extra={"pairs": len(rows), "text_dim": int(text.shape[1]),
                                               "latent_dim": int(z.shape[1]), "encoder_kind": cfg.encoder.kind})
    log.info("text pairs: %d captions of %d subjects committed to %s", len(rows), len(ids), stage.uri)
    return len(rows), True


def read_text_pairs(out: str, storage_options: dict | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Subject ids (M,), text embeddings (M, E) and latents z (M, D) committed by :func:`ensure_text_pairs`."""
    stage = open_store(out, storage_options).stage(TEXT_PAIRS_STAGE)
    if not stage.is_committed(TEXT_PAIRS_SHARD):
        raise TrainDataError(f"no committed text pairs under {stage.uri}; they are made when the text prior trains: "
                             f"`rodin train text-prior --out {out}`")
    tensors = safetensors.torch.load(stage.read_bytes(TEXT_PAIRS_SHARD, TEXT_PAIRS_FILE))
    return tensors["subject_ids"], tensors["text"], tensors["z"]
