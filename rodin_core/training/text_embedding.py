"""Training the avatar-CLIP embedding on (frontal render, caption variant) pairs (§4.5, B.3, B.5).

The sentence encoder is frozen, so every caption variant is embedded once; each step draws a
batch of distinct training subjects, one random variant of each and a randomly shifted render,
and minimises the symmetric contrastive loss (CLIP, Radford et al. 2021) over the image tower,
the text projection and the temperature with AdamW. The last ``holdout_subjects`` subject ids are
never trained on: text -> image retrieval is measured on them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rodin_core.config.text_embedding import (
    TextEmbeddingSection,
    TextEmbeddingTrainConfig,
)
from rodin_core.config_dict import ConfigError
from rodin_core.datasets.captioned_frontals import (
    CaptionedFrontals,
    read_captioned_frontals,
)
from rodin_core.datasets.errors import TrainDataError
from rodin_core.datasets.layout import (
    TEXT_EMBEDDING_CONFIG,
    TEXT_EMBEDDING_SHARD,
    TEXT_EMBEDDING_STAGE,
    TEXT_EMBEDDING_WEIGHTS,
)
from rodin_core.evaluation.retrieval import caption_retrieval
from rodin_core.storage import config_hash, open_store
from rodin_core.text.files import avatar_clip_to_bytes
from rodin_core.text.loss import contrastive_loss
from rodin_core.text.model import AvatarClip, AvatarClipConfig
from rodin_core.text.sentence import SentenceEncoder

log = logging.getLogger(__name__)

CaptionVariants = Callable[[str], Sequence[str]]
"""Recipe JSON -> the caption variants of that subject (the workflow passes the render package's)."""


def split_subjects(subject_ids: Sequence[int], holdout: int) -> tuple[list[int], list[int]]:
    """(training ids, held-out ids): the last ``holdout`` ids are held out; at least 2 must train."""
    ids = sorted(subject_ids)
    if len(ids) < holdout + 2:
        raise ConfigError(f"text_embedding.holdout_subjects={holdout} leaves {len(ids) - holdout} of the {len(ids)} "
                          f"rendered subjects to train on; set it to at most {max(len(ids) - 2, 0)} or render more "
                          "subjects (`rodin render --subjects N`)")
    return ids[:-holdout], ids[-holdout:]


def to_images(frontals: CaptionedFrontals) -> Tensor:
    """(N, H, W, 4) uint8 -> (N, 4, H, W) float in [0, 1]."""
    return torch.from_numpy(frontals.images).permute(0, 3, 1, 2).float().div(255.0)


def random_shift(images: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    """Each image (B, 4, H, W) moved by up to ``shift`` pixels each way; uncovered pixels are transparent."""
    if shift <= 0:
        return images
    height, width = images.shape[-2:]
    padded = F.pad(images, (shift, shift, shift, shift))  # alpha 0: background after compositing
    offsets = torch.randint(0, 2 * shift + 1, (images.shape[0], 2), generator=generator)
    return torch.stack([padded[i, :, y:y + height, x:x + width] for i, (y, x) in enumerate(offsets.tolist())])


def embed_variants(variants: Sequence[Sequence[str]], encoder: Callable[[list[str]], Tensor]) -> tuple[Tensor, list[list[int]]]:
    """(sentence embeddings (U, 384) of the distinct texts, each subject's rows into them)."""
    texts = sorted({t for group in variants for t in group})
    row = {t: i for i, t in enumerate(texts)}
    return encoder(texts), [[row[t] for t in group] for group in variants]


def train_avatar_clip(images: Tensor, sentences: Tensor, rows: Sequence[Sequence[int]], model_cfg: AvatarClipConfig,
                      cfg: TextEmbeddingTrainConfig, log_every: int = 50) -> tuple[AvatarClip, list[float]]:
    """Train a fresh model on subjects' renders ``images`` (N, 4, H, W) and the sentence embeddings
    ``sentences`` (U, 384) of their caption variants (``rows[i]``: subject i's); returns it and the losses."""
    if images.shape[0] < 2 or len(rows) != images.shape[0] or any(not r for r in rows):
        raise ValueError(f"need at least 2 subjects with a caption each, got {images.shape[0]} images and "
                         f"{len(rows)} caption lists")
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = AvatarClip(model_cfg)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch_size, images.shape[0])
    losses: list[float] = []
    started = time.monotonic()
    model.train()
    for step in range(cfg.steps):
        subjects = torch.randperm(images.shape[0], generator=generator)[:batch]
        picks = [rows[s][int(torch.randint(len(rows[s]), (1,), generator=generator))] for s in subjects.tolist()]
        image_emb, text_emb, scale = model(random_shift(images[subjects], cfg.shift, generator), sentences[picks])
        loss = contrastive_loss(image_emb, text_emb, scale)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            log.info("text embedding step %d/%d: loss %.4f, temperature %.4f, %.1f steps/s", step + 1, cfg.steps,
                     np.mean(losses[-log_every:]), 1.0 / float(scale), (step + 1) / (time.monotonic() - started))
    return model.eval(), losses


def train_text_embedding(renders: str, out: str | None = None, section: TextEmbeddingSection | None = None,
                         variants: CaptionVariants | None = None, storage_options: dict | None = None) -> dict:
    """Train avatar-CLIP (``section``: the ``text_embedding`` config) on the committed renders of ``renders``
    and commit it as ``text_embedding/`` of ``out`` (default: ``renders``); returns a summary with the
    retrieval figures and the weights URI.

    ``variants``: recipe JSON -> caption variants of a subject (default: its stored caption only).
    Retrieval is measured on the held-out subjects with each one's stored caption (``heldout``) and
    with its partial variants (``heldout_partial``), and on the training subjects (``train``).
    """
    section, out = section or TextEmbeddingSection(), out or renders
    section.validate()
    model_cfg, cfg = section.model, section.train
    frontals = read_captioned_frontals(renders, storage_options)
    train_ids, held_ids = split_subjects(frontals.subject_ids, cfg.holdout_subjects)
    captions = [list(variants(r)) if variants else [c] for r, c in zip(frontals.recipes, frontals.captions,
                                                                        strict=True)]
    if any(not c for c in captions):
        raise TrainDataError(f"a subject of {renders} has no caption variant; re-render the corpus")
    encoder = SentenceEncoder(max_tokens=model_cfg.max_prompt_tokens)
    sentences, rows = embed_variants(captions, encoder)
    index = {s: i for i, s in enumerate(frontals.subject_ids)}
    train, held = frontals.select(train_ids), frontals.select(held_ids)
    log.info("text embedding: %d training and %d held-out subjects, %d distinct captions", len(train_ids),
             len(held_ids), sentences.shape[0])
    model, losses = train_avatar_clip(to_images(train), sentences, [rows[index[s]] for s in train_ids], model_cfg, cfg)
    held_rows = [rows[index[s]] for s in held_ids]
    partial = [[sentences[r] for r in group[1:]] for group in held_rows]
    model.use_sentence_encoder(encoder)
    metrics = {
        "heldout": caption_retrieval(model, held),
        "train": caption_retrieval(model, train),
        "steps": cfg.steps, "loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:])),
        "temperature": float(1.0 / model.scale().detach()), "train_subjects": len(train_ids), "heldout_subjects": held_ids,
    }
    if all(partial):
        metrics["heldout_partial"] = caption_retrieval(
            model, held, queries=[captions[index[s]][1:] for s in held_ids],
            sentences=torch.stack([t for group in partial for t in group]))
    stage = open_store(out, storage_options).stage(TEXT_EMBEDDING_STAGE)
    writer = stage.begin(TEXT_EMBEDDING_SHARD)
    tensors, document = avatar_clip_to_bytes(model, metrics)
    entry = writer.write_bytes(TEXT_EMBEDDING_WEIGHTS, tensors)
    writer.write_bytes(TEXT_EMBEDDING_CONFIG, document.encode("utf-8"))
    digest = config_hash({"model": model_cfg.to_dict(), "train": cfg.to_dict(), "subjects": frontals.subject_ids})
    writer.commit(train_ids, digest, extra={"heldout": metrics["heldout"], "renders": renders})
    return {"weights": f"{stage.uri}/{entry.path}", **metrics}
