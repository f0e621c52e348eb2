"""Text -> image retrieval of an avatar-CLIP embedding: does a caption find its subject's render?

Each query caption ranks every frontal render of a gallery by cosine similarity; top-k accuracy is
the fraction of queries whose own subject is among the k best, against the chance level k / N of
a random ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rodin_core.datasets.captioned_frontals import CaptionedFrontals
from rodin_core.text.model import AvatarClip

TOP_K = (1, 5)
"""The accuracies reported."""


def retrieval_accuracy(text: Tensor, images: Tensor, targets: Sequence[int]) -> dict[str, float]:
    """Top-1/top-5 accuracy, chance levels and mean rank (1 = best) of queries ``text`` (Q, D) against the
    gallery ``images`` (G, D), both unit norm; query i's answer is gallery row ``targets[i]``."""
    if text.shape[0] != len(targets) or images.shape[0] < 1:
        raise ValueError(f"need one target per query and a non-empty gallery, got {text.shape[0]} queries, "
                         f"{len(targets)} targets and {images.shape[0]} gallery images")
    similarity = text @ images.T  # (Q, G)
    index = torch.as_tensor(list(targets), dtype=torch.long)
    own = similarity.gather(1, index[:, None])  # (Q, 1)
    ranks = (similarity > own).sum(dim=1)  # (Q,) images strictly better than the right one
    gallery = images.shape[0]
    figures = {"queries": int(text.shape[0]), "gallery": int(gallery), "mean_rank": float(ranks.float().mean() + 1)}
    for k in TOP_K:
        figures[f"top{k}"] = float((ranks < k).float().mean())
        figures[f"chance_top{k}"] = min(k, gallery) / gallery
    return figures


@torch.no_grad()
def caption_retrieval(model: AvatarClip, frontals: CaptionedFrontals, queries: Sequence[Sequence[str]] | None = None,
                      sentences: Tensor | None = None) -> dict[str, float]:
    """Retrieval of ``frontals``' renders by their captions: by default each subject's stored caption;
    ``queries[i]`` gives subject i's captions instead (several queries per subject). ``sentences``: their
    precomputed sentence embeddings, in the same order (else the model's sentence encoder embeds them)."""
    texts = [[c] for c in frontals.captions] if queries is None else [list(q) for q in queries]
    flat = [t for group in texts for t in group]
    targets = [i for i, group in enumerate(texts) for _ in group]
    device = model.logit_scale.device
    images = torch.from_numpy(frontals.images).permute(0, 3, 1, 2).float().div(255.0).to(device)  # (N, 4, H, W)
    image_emb = model.encode_images(images)
    text_emb = model.encode_text(flat) if sentences is None else model.project_text(sentences.to(device))
    return retrieval_accuracy(text_emb.cpu(), image_emb.cpu(), targets)
