"""The text prior's data (rodin_core.training.text_pairs; appendix B.5): caption variants of every training subject,
embedded by the encoder's text tower and paired with the subject's z; committed once, made again when they change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from render.caption_variants import recipe_caption_variants
from rodin_core.datasets.errors import TrainDataError
from rodin_core.datasets.frontals import extract_frontals_shard, plan_frontals
from rodin_core.text.files import save_avatar_clip
from rodin_core.text.model import AvatarClip, AvatarClipConfig
from rodin_core.text.towers import NoTextSpaceError, text_tower
from rodin_core.training.latents import read_latents
from rodin_core.training.text_pairs import ensure_text_pairs, read_recipes, read_text_pairs

from ...training_corpus import add_recipes, make_corpus, tiny_config


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[str, list[str]]:
    """The synthetic fitted corpus with recipes and frontal views, and the overrides of an avatar-CLIP encoder."""
    torch.manual_seed(0)
    weights = save_avatar_clip(AvatarClip(AvatarClipConfig(embed_dim=16, image_size=16, image_channels=4,
                                                           projection_hidden=8)), tmp_path / "avatar_clip.safetensors")
    out = make_corpus(tmp_path / "store", tiny_config())
    add_recipes(out)
    for job in plan_frontals(out, out)[0]:
        extract_frontals_shard(out, out, job)
    return out, ["encoder.kind=avatar_clip", f"encoder.avatar_clip_weights={weights}", "text_prior.variants=3"]


def test_pairs_hold_each_caption_embedding_with_its_subjects_z(corpus) -> None:
    out, overrides = corpus
    cfg = tiny_config(*overrides)
    assert ensure_text_pairs(cfg, out, out, recipe_caption_variants) == (24, True)  # 8 fitted subjects x 3
    ids, text, z = read_text_pairs(out)
    latent_ids, latents = read_latents(out)
    assert ids.tolist() == [s for s in latent_ids.tolist() for _ in range(3)] and 4 not in ids.tolist()
    assert torch.equal(z, latents.repeat_interleave(3, dim=0))
    recipes = read_recipes(out)
    captions = [c for s in latent_ids.tolist() for c in recipe_caption_variants(recipes[s], 0, 3, 0.3)]
    torch.testing.assert_close(text, text_tower(cfg.encoder).embed(captions))
    assert ensure_text_pairs(cfg, out, out, recipe_caption_variants) == (24, False)  # current: reused
    assert ensure_text_pairs(tiny_config(*overrides, "text_prior.variants=2"), out, out,
                             recipe_caption_variants) == (16, True)


def test_pairs_need_a_text_tower_and_the_recipes(corpus, tmp_path: Path) -> None:
    out, overrides = corpus
    with pytest.raises(NoTextSpaceError, match="encoder.kind=learned has no text space"):
        ensure_text_pairs(tiny_config(), out, out, recipe_caption_variants)
    bare = make_corpus(tmp_path / "bare", tiny_config())  # renders without subjects.parquet
    for job in plan_frontals(bare, bare)[0]:
        extract_frontals_shard(bare, bare, job)
    with pytest.raises(TrainDataError, match=r"renders shard shard-000000 of .* holds no subjects.parquet .*"
                                             r"`rodin render --out "):
        ensure_text_pairs(tiny_config(*overrides), bare, bare, recipe_caption_variants)
    with pytest.raises(TrainDataError, match="no committed text pairs .* `rodin train text-prior --out"):
        read_text_pairs(bare)
