"""Text-guided editing (appendix B.3): z' = z + s·δ generated with the source avatar's seed and options.

The stages condition on the image tower of a tiny avatar-CLIP file (tests/avatar_clip_data.py), whose text
tower gives δ; see conftest.py for the tiny checkpoints.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rodin_core.generation import (
    Avatar,
    GenerationError,
    GenerationPipeline,
    SampleOptions,
    load_avatar,
    save_avatar,
)
from rodin_core.generation.edit import (
    TextEdit,
    edit_avatar,
    edit_text_tower,
    recorded_options,
)
from rodin_core.text.directions import text_direction
from rodin_core.text.towers import NoTextSpaceError, TextTower

from ...avatar_clip_data import avatar_clip_overrides, tiny_avatar_clip
from .conftest import Stages, generation_config

TARGET, SOURCE = "a person with blonde hair", "a person"


@pytest.fixture(scope="module")
def text_pipeline(stages: Stages, tmp_path_factory: pytest.TempPathFactory) -> GenerationPipeline:
    weights = tiny_avatar_clip(tmp_path_factory.mktemp("edit-avatar-clip") / "avatar_clip.safetensors")
    overrides = avatar_clip_overrides(weights)
    base, upsampler, prior = (stages.checkpoint(name, *overrides) for name in ("base", "upsampler", "prior"))
    return GenerationPipeline.from_checkpoints(base, upsampler, prior, stages.decoder, decoder_sha256="ab" * 32)


@pytest.fixture(scope="module")
def source(text_pipeline: GenerationPipeline) -> Avatar:
    """An avatar sampled with non-default options, so that an edit must read them from its record."""
    return text_pipeline.sample(1, seed=5, options=SampleOptions(guidance_scale=2.0, sampler="ddim", steps=2))[0]


@pytest.fixture(scope="module")
def tower(text_pipeline: GenerationPipeline) -> TextTower:
    """The pipeline's text tower, loaded once (the edits below would each load it otherwise)."""
    return edit_text_tower(text_pipeline.cfg)


def test_identical_prompts_or_zero_strength_give_back_the_source_bit_for_bit(text_pipeline, source, tower) -> None:
    same = edit_avatar(text_pipeline, source, TextEdit(TARGET, TARGET), tower=tower)
    assert torch.equal(same.z, source.z) and torch.equal(same.planes, source.planes)
    still = edit_avatar(text_pipeline, source, TextEdit(TARGET, SOURCE, strength=0.0), tower=tower)
    assert torch.equal(still.z, source.z) and torch.equal(still.planes, source.planes)
    moved = edit_avatar(text_pipeline, source, TextEdit(TARGET, SOURCE, strength=1.0), tower=tower)
    assert not torch.equal(moved.z, source.z) and not torch.equal(moved.planes, source.planes)


def test_the_edit_adds_s_delta_on_the_sphere_and_reruns_the_source_seed_and_options(text_pipeline, source,
                                                                                   tower) -> None:
    edit = TextEdit(TARGET, SOURCE, strength=0.5)
    first, second = (edit_avatar(text_pipeline, source, edit, tower=tower) for _ in range(2))
    assert torch.equal(first.planes, second.planes)
    delta = text_direction(tower, TARGET, SOURCE)  # (8,)
    moved = source.z + 0.5 * delta  # (8,)
    assert torch.allclose(first.z, moved * math.sqrt(8) / moved.norm(), atol=1e-6)  # z + s·δ, direction kept
    assert math.isclose(float(first.z.norm()), math.sqrt(8), rel_tol=1e-6)  # on the sphere of the encoder's z
    options = recorded_options(source.meta)
    assert options == SampleOptions(guidance_scale=2.0, sampler="ddim", steps=2)
    assert torch.equal(first.planes, text_pipeline.generate(first.z, seed=5, options=options))
    assert not torch.equal(first.planes, text_pipeline.generate(first.z, seed=6, options=options))  # the seed matters
    assert (first.meta["seed"], first.meta["sampler"], first.meta["steps"], first.meta["guidance_scale"]) == (
        5, "ddim", 2, 2.0)
    swapped = edit_avatar(text_pipeline, source, TextEdit(SOURCE, TARGET, -0.5), tower=tower)  # -s·(-δ) = s·δ
    assert torch.equal(swapped.z, first.z) and torch.equal(swapped.planes, first.planes)


def test_the_record_keeps_the_source_prompts_and_strength_and_round_trips(text_pipeline, source, tower,
                                                                           tmp_path: Path) -> None:
    edit = TextEdit(TARGET, SOURCE, strength=0.75)
    edited = edit_avatar(text_pipeline, source, edit, name="avatar-000.safetensors")
    loaded = load_avatar(save_avatar(edited, tmp_path / "edited.safetensors"))
    assert loaded.meta == edited.meta and torch.equal(loaded.z, edited.z) and torch.equal(loaded.planes, edited.planes)
    assert loaded.kind == "edit" and TextEdit.from_dict(loaded.meta["edit"]) == edit
    assert loaded.meta["edit"] == {"target": TARGET, "source": SOURCE, "strength": 0.75, "keep": 0.0}
    assert TextEdit.from_dict({"target": TARGET, "source": SOURCE, "strength": 0.75}) == edit  # records without keep
    assert loaded.meta["source"] == source.meta and loaded.meta["source_file"] == "avatar-000.safetensors"
    assert loaded.meta["encoder"] == "avatar_clip"
    again = edit_avatar(text_pipeline, loaded, TextEdit("a person with glasses"), tower=tower)  # an edit of an edit
    assert again.meta["source"]["kind"] == "edit" and again.meta["seed"] == 5


def test_keep_runs_the_noisiest_base_steps_on_the_source_z(text_pipeline, source, tower) -> None:
    plain = edit_avatar(text_pipeline, source, TextEdit(TARGET, SOURCE), tower=tower)
    kept = edit_avatar(text_pipeline, source, TextEdit(TARGET, SOURCE, keep=0.6), tower=tower)
    assert torch.equal(kept.z, plain.z) and kept.meta["edit"]["keep"] == 0.6
    options = recorded_options(source.meta)  # DDIM, 2 steps of the test's T = 40: at t = 20, then t = 0
    assert torch.equal(kept.planes, text_pipeline.generate(plain.z, seed=5, options=options, early_z=source.z,
                                                           keep=0.6))
    assert not torch.equal(kept.planes, plain.planes)
    # keep 0.6 and 0.5 switch at t = ceil(0.4 T) = 16 and 20: the step at t = 20 follows the source's z, the last z'
    assert torch.equal(kept.planes, text_pipeline.generate(plain.z, seed=5, options=options, early_z=source.z,
                                                           keep=0.5))
    # keep 0.4 switches at t = 24, after no step: the plain edit; keep 1 runs both steps on the source's z
    assert torch.equal(plain.planes, text_pipeline.generate(plain.z, seed=5, options=options, early_z=source.z,
                                                            keep=0.4))
    all_source = text_pipeline.generate(plain.z, seed=5, options=options, early_z=source.z, keep=1.0)
    assert torch.allclose(all_source, source.planes, atol=1e-4)  # the source again, up to float rounding
    whole = edit_avatar(text_pipeline, source, TextEdit(TARGET, SOURCE, keep=1.0), tower=tower)
    assert torch.equal(whole.planes, source.planes) and torch.equal(whole.z, plain.z)
    with pytest.raises(GenerationError, match=r"^keep must be a number from 0 to 1 .*got 1\.5$"):
        TextEdit(TARGET, SOURCE, keep=1.5)
    for bad in (-0.1, 1.5):  # the sampler refuses it too, below the edit
        with pytest.raises(ValueError, match=rf"^keep must lie in \[0, 1\] .*got {bad}$"):
            text_pipeline.generate(plain.z, seed=5, options=options, early_z=source.z, keep=bad)


def test_edits_that_cannot_work_are_refused(stages: Stages, text_pipeline, source, tower) -> None:
    with pytest.raises(GenerationError, match="edit strength must be a finite number"):
        TextEdit(TARGET, SOURCE, strength=float("nan"))
    with pytest.raises(GenerationError, match="has no latent z"):
        edit_avatar(text_pipeline, Avatar(source.planes, None, {"kind": "fitted"}), TextEdit(TARGET), tower=tower)
    with pytest.raises(GenerationError, match="records no integer seed"):
        edit_avatar(text_pipeline, Avatar(source.planes, source.z, {"kind": "sample"}), TextEdit(TARGET), tower=tower)
    with pytest.raises(NoTextSpaceError, match="encoder.kind=learned has no text space"):
        edit_avatar(stages.pipeline(), Avatar(source.planes, source.z, source.meta), TextEdit(TARGET))
    with pytest.raises(GenerationError, match="trained without latent conditioning"):
        edit_text_tower(generation_config("base.latent_conditioning=false"))
