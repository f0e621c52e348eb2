"""Training avatar-CLIP: a few steps lower the loss on a toy set; the held-out split; the committed stage."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from rodin_core.config.text_embedding import (
    TextEmbeddingSection,
    TextEmbeddingTrainConfig,
)
from rodin_core.config_dict import ConfigError
from rodin_core.datasets.errors import TrainDataError
from rodin_core.datasets.layout import (
    RENDERS_STAGE,
    SUBJECTS_TABLE,
    TEXT_EMBEDDING_SHARD,
    TEXT_EMBEDDING_STAGE,
    VIEWS_TABLE,
)
from rodin_core.imaging import encode_png
from rodin_core.storage import open_store
from rodin_core.text.files import load_avatar_clip
from rodin_core.text.loss import contrastive_loss
from rodin_core.text.model import AvatarClip, AvatarClipConfig
from rodin_core.training.text_embedding import (
    random_shift,
    split_subjects,
    train_avatar_clip,
    train_text_embedding,
)

MODEL = AvatarClipConfig(embed_dim=8, image_size=16, image_channels=4, projection_hidden=16)
COLOURS = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0), (0.0, 1.0, 1.0), (1.0, 0.0, 1.0)]


def toy_set() -> tuple[torch.Tensor, torch.Tensor]:
    """Six opaque solid-colour 'renders' and one fixed random sentence embedding each."""
    images = torch.ones(6, 4, 16, 16)
    for i, rgb in enumerate(COLOURS):
        images[i, :3] = torch.tensor(rgb)[:, None, None]
    return images, F.normalize(torch.randn(6, 384, generator=torch.Generator().manual_seed(1)), dim=-1)


def pair_loss(model: AvatarClip, images: torch.Tensor, sentences: torch.Tensor) -> float:
    with torch.no_grad():
        return float(contrastive_loss(*model.eval()(images, sentences)))


def test_a_few_steps_lower_the_loss_on_a_toy_set():
    images, sentences = toy_set()
    cfg = TextEmbeddingTrainConfig(steps=60, batch_size=6, lr=3e-3, shift=0)
    torch.manual_seed(cfg.seed)
    before = pair_loss(AvatarClip(MODEL), images, sentences)
    model, losses = train_avatar_clip(images, sentences, [[i] for i in range(6)], MODEL, cfg, log_every=0)
    after = pair_loss(model, images, sentences)
    assert len(losses) == 60 and after < 0.5 * before and np.mean(losses[-10:]) < np.mean(losses[:10])
    similarity = model.encode_images(images) @ model.project_text(sentences).T
    assert torch.equal(similarity.argmax(dim=1), torch.arange(6))


def test_training_is_deterministic_given_the_seed():
    images, sentences = toy_set()
    cfg = TextEmbeddingTrainConfig(steps=5, batch_size=4, shift=2)
    rows = [[i] for i in range(6)]
    first = train_avatar_clip(images, sentences, rows, MODEL, cfg, log_every=0)[1]
    assert first == train_avatar_clip(images, sentences, rows, MODEL, cfg, log_every=0)[1]


def test_random_shift_moves_content_and_fills_with_transparency():
    images = torch.ones(3, 4, 8, 8)
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape and shifted[:, 3].min() == 0.0
    assert torch.equal(random_shift(images, 0, torch.Generator()), images)


def test_the_last_ids_are_held_out_and_too_few_subjects_is_one_line():
    assert split_subjects([5, 1, 3, 2, 4], 2) == ([1, 2, 3], [4, 5])
    with pytest.raises(ConfigError, match=r"text_embedding.holdout_subjects=16 leaves 0 of the 16 rendered subjects "
                                          r"to train on; set it to at most 14"):
        split_subjects(list(range(16)), 16)


def _renders_store(root, count: int = 6) -> str:
    stage = open_store(str(root)).stage(RENDERS_STAGE)
    writer = stage.begin("shard-000000")
    ids = list(range(count))
    pngs = []
    for i in ids:
        rgba = np.zeros((16, 16, 4), np.uint8)
        rgba[4:12, 4:12] = [*(int(255 * c) for c in COLOURS[i % len(COLOURS)]), 255]
        pngs.append(encode_png(rgba))
    writer.write_table(VIEWS_TABLE, pa.table({"subject_id": ids, "view_index": [0] * count, "png": pngs}))
    captions = [f"a person in a {name} shirt" for name in ("red", "green", "blue", "yellow", "cyan", "magenta")]
    writer.write_table(SUBJECTS_TABLE, pa.table({"subject_id": ids, "recipe_json": [json.dumps({"id": i}) for i in ids],
                                                 "caption": captions[:count]}))
    writer.commit(ids, "toy")
    return str(root)


def _variants(recipe: str) -> list[str]:
    return [f"subject {json.loads(recipe)['id']}", "a person"]


def test_training_commits_the_stage_with_its_retrieval_figures(tmp_path):
    renders = _renders_store(tmp_path)
    train = TextEmbeddingTrainConfig(steps=3, batch_size=4, holdout_subjects=2)
    section = TextEmbeddingSection(model=MODEL, train=train)
    summary = train_text_embedding(renders, None, section, _variants)
    stage = open_store(renders).stage(TEXT_EMBEDDING_STAGE)
    assert stage.read_manifest(TEXT_EMBEDDING_SHARD).subject_ids == (0, 1, 2, 3)
    assert summary["heldout_subjects"] == [4, 5] and summary["train_subjects"] == 4
    for name, queries in (("heldout", 2), ("heldout_partial", 2), ("train", 4)):
        figures = summary[name]
        assert figures["queries"] == queries and 0.0 <= figures["top1"] <= figures["top5"] <= 1.0
    assert summary["heldout"]["chance_top1"] == 0.5 and summary["train"]["chance_top1"] == 0.25
    model = load_avatar_clip(summary["weights"])
    assert model.cfg == MODEL
    document = Path(summary["weights"]).with_suffix(".json").read_text()
    assert json.loads(document)["metrics"]["heldout"] == summary["heldout"]


def test_renders_without_a_frontal_view_are_one_line(tmp_path):
    with pytest.raises(TrainDataError, match="no committed renders shard under .*; render the corpus first"):
        train_text_embedding(str(tmp_path / "empty"))
