"""The ``train-text-prior`` flow (workflows.text_prior; appendix B.5) under a temporary Prefect server and a local
Ray: text pairs, Ray Train, a committed checkpoint, and a relaunch that resumes; ``rodin train text-prior`` checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rodin_core.datasets.checkpoints import committed_step, read_stage_checkpoint
from rodin_core.generation.text_prior import TextPrior
from rodin_core.text.files import save_avatar_clip
from rodin_core.text.model import AvatarClip, AvatarClipConfig
from rodin_core.training.text_pairs import read_text_pairs
from workflows.cli import main
from workflows.text_prior import train_text_prior

from ..training_corpus import TINY, add_recipes, make_corpus, tiny_config

TEXT = ["text_prior.mlp.depth=2", "text_prior.mlp.width=32", "text_prior.diffusion.steps=50",
        "text_prior.diffusion.sampling_steps=5", "text_prior.train.batch_size=8", "text_prior.train.checkpoint_every=2",
        "text_prior.train.log_every=1", "text_prior.variants=3"]


def test_train_text_prior_commits_pairs_and_a_checkpoint_then_resumes(prefect_server: float, local_ray: None,
                                                                     tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = save_avatar_clip(AvatarClip(AvatarClipConfig(embed_dim=16, image_size=16, image_channels=4,
                                                           projection_hidden=8)), tmp_path / "avatar_clip.safetensors")
    encoder = ["encoder.kind=avatar_clip", f"encoder.avatar_clip_weights={weights}"]
    out = make_corpus(tmp_path / "store", tiny_config())
    add_recipes(out)
    first = train_text_prior(out=out, overrides=[*TINY, *encoder, *TEXT], steps=4, cpus_per_worker=1)
    assert first["pairs"] == {"pairs": 8 * 3, "computed": True}  # 8 fitted subjects (4 failed) x 3 captions
    assert (first["start_step"], first["steps"], committed_step(out, "text_prior")) == (0, 4, 4)
    ids, text, z = read_text_pairs(out)
    assert ids.tolist() == [s for s in range(9) if s != 4 for _ in range(3)]
    assert text.shape == (24, 16) and z.shape == (24, 16)
    torch.testing.assert_close(text.norm(dim=1), torch.ones(24))
    assert torch.equal(z[0], z[2]) and not torch.equal(z[0], z[3])  # one z per subject, one text per caption
    assert Path(first["loss_curve"]).is_file()
    prior = TextPrior.from_checkpoint(read_stage_checkpoint(out, "text_prior")[0])
    assert prior.sample(text[:1], seed=0).shape == (1, 16)
    again = train_text_prior(out=out, overrides=[*TINY, *encoder, *TEXT], steps=6, cpus_per_worker=1)
    assert again["pairs"] == {"pairs": 24, "computed": False}
    assert (again["start_step"], again["resumed_from"], committed_step(out, "text_prior")) == (4, 4, 6)


def test_cli_refuses_an_encoder_without_a_text_tower_before_starting(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "store").mkdir()
    assert main(["train", "text-prior", "--out", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "encoder.kind='learned' has no text tower" in err
    assert "`rodin train text-embedding --out OUT`" in err and "`rodin train text-prior --out OUT`" in err
