"""The pure helpers of benchmarks/text_edits.py: flip and unchanged counts, the strips, and the edits' vocabulary."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from render.attributes import RECIPE_ATTRIBUTES
from render.caption_variants import attribute_phrases
from render.recipe import ACCESSORY_STYLES, HAIR_COLOURS, Colour, sample_recipe
from rodin_core.imaging import LABEL_HEIGHT

from .scripts import loaded_script


@pytest.fixture(scope="module")
def script():
    with loaded_script("text_edits") as module:
        yield module


def judged(**changes: str) -> dict[str, str]:
    base = {"gender": "man", "hairstyle": "long", "hair_colour": "black", "facial_hair": "none",
            "accessory": "none", "accessory_style": "round", "accessory_colour": "black"}
    return {**base, **changes}


def test_flips_count_only_avatars_without_the_target_and_others_count_every_other_attribute(script) -> None:
    glasses = next(e for e in script.EDITS if e.name == "glasses")
    before = [judged(), judged(), judged(accessory="glasses"), judged()]
    after = [judged(accessory="glasses", accessory_style="cat-eye"),  # flipped; the style follows the glasses
             judged(accessory="hat", gender="woman"),                  # not flipped, and the gender changed
             judged(accessory="glasses"),                              # already wearing them
             judged(accessory="glasses", hair_colour="blonde")]        # flipped, and the hair colour changed
    score = script.score_edit(glasses, before, after)
    assert (score.avatars, score.eligible, score.flipped, score.already) == (4, 3, 2, 1)
    assert score.compared == 4 * 4 and score.unchanged == 16 - 2  # gender, hairstyle, hair colour, facial hair
    assert score.flip_share == pytest.approx(2 / 3) and score.unchanged_share == pytest.approx(14 / 16)
    assert score.to_dict()["flip_share"] == pytest.approx(2 / 3)


def test_an_edit_with_no_eligible_avatar_has_no_flip_share(script) -> None:
    beard = next(e for e in script.EDITS if e.name == "beard")
    score = script.score_edit(beard, [judged(facial_hair="beard")], [judged(facial_hair="beard")])
    assert score.eligible == 0 and math.isnan(score.flip_share) and score.to_dict()["flip_share"] is None
    assert score.unchanged_share == 1.0
    assert score.self_agreed is None and math.isnan(score.self_agreement) and score.to_dict()["self_agreement"] is None
    with pytest.raises(ValueError, match="1 judgements before the edit, 0 after; give one per avatar"):
        script.score_edit(beard, [judged()], [])
    with pytest.raises(ValueError, match="1 judgements before the edit, 1 after and 2 pairs of halves"):
        script.score_edit(beard, [judged()], [judged()], [(judged(), judged())] * 2)


def test_self_agreement_counts_the_other_attributes_the_two_halves_of_the_views_agree_on(script) -> None:
    glasses = next(e for e in script.EDITS if e.name == "glasses")
    before = [judged(), judged()]
    after = [judged(accessory="glasses"), judged(accessory="glasses")]
    halves = [(judged(gender="woman", accessory="hat", accessory_style="cat-eye"), judged()),  # gender disagrees
              (judged(hairstyle="short", hair_colour="red"), judged())]  # hairstyle and hair colour disagree
    score = script.score_edit(glasses, before, after, halves)
    # The other attributes are gender, hairstyle, hair colour, facial hair (the accessory and what follows it are
    # left out, so the halves' disagreement on them does not count): 2 x 4 compared, 3 disagreements.
    assert (score.compared, score.unchanged, score.self_agreed) == (8, 8, 5)
    assert score.self_agreement == pytest.approx(5 / 8) and score.to_dict()["self_agreement"] == pytest.approx(5 / 8)


def test_the_table_has_one_row_per_edit(script) -> None:
    scores = [script.score_edit(e, [judged()], [judged(**{e.attribute: e.target})], [(judged(), judged())])
              for e in script.EDITS]
    lines = script.format_scores(scores).splitlines()
    assert len(lines) == 1 + len(script.EDITS) and "flip share" in lines[0] and "judge self-agreement" in lines[0]
    assert all(line.split()[-3:] == ["1.000", "1.000", "1.000"] for line in lines[1:])


def test_the_strip_shows_each_avatar_before_and_after_side_by_side(script) -> None:
    before = [np.full((2, 8, 8, 3), 10 * i, np.uint8) for i in range(3)]
    after = [np.full((2, 8, 8, 3), 200 + i, np.uint8) for i in range(3)]
    strip = script.edit_strip(before, after, ["#0", "#1", "#2"])
    assert strip.shape == (3 * (8 + LABEL_HEIGHT), 4 * 8, 3)
    row = 8 + LABEL_HEIGHT
    assert (strip[row:row + 8, 8:16] == 10).all() and (strip[row:row + 8, 16:24] == 201).all()
    label_strip = strip[row - LABEL_HEIGHT:row]  # the first row's labels
    assert (label_strip[:, 8:16] < 128).any() and (label_strip[:, 16:24] < 128).any()  # "before" and "after" drawn
    assert (label_strip[:, 24:32] == 255).all()  # the after side's second frame is unlabelled
    with pytest.raises(ValueError, match="same positive number"):
        script.edit_strip(before, after[:2], ["#0", "#1", "#2"])


@pytest.mark.parametrize(("frames", "expected"), [
    (3, ["#0 seed 4", "before", "", "after", "", ""]),
    (1, ["#0 seed 4 before", "after"]),
])
def test_the_strip_labels_the_avatar_and_before_on_separate_tiles(script, monkeypatch, frames, expected) -> None:
    """A 64-pixel tile holds about ten characters, so the avatar's label and "before" share a tile only when
    there is one frame per side."""
    seen = {}
    monkeypatch.setattr(script, "contact_sheet",
                        lambda tiles, columns, names: seen.update(names=names, columns=columns))
    frames_of = [np.zeros((frames, 4, 4, 3), np.uint8)]
    script.edit_strip(frames_of, frames_of, ["#0 seed 4"])
    assert seen == {"names": expected, "columns": 2 * frames}


def test_the_edits_speak_the_attribute_and_caption_vocabulary(script) -> None:
    """Each edit sets a class of the classifier's vocabulary, and its phrase uses the words the caption variants
    give a recipe of that class (what the text tower was trained on)."""
    assert [e.name for e in script.EDITS] == ["glasses", "blond hair", "beard", "short hair"]
    recipe = sample_recipe(0, 1)
    for edit in script.EDITS:
        assert edit.target in RECIPE_ATTRIBUTES[edit.attribute]
        assert all(name in RECIPE_ATTRIBUTES for name in edit.follows)
        changes = {"glasses": {"accessory": "glasses", "accessory_style": ACCESSORY_STYLES["glasses"][0]},
                   "blond hair": {"hair": Colour("blonde", HAIR_COLOURS["blonde"]), "hairstyle": "long"},
                   "beard": {"gender": "man", "facial_hair": "beard"},
                   "short hair": {"hairstyle": "short"}}[edit.name]
        phrases = [p for options in attribute_phrases(dataclasses.replace(recipe, **changes)).values() for p in options]
        words = set(edit.phrase.split())
        assert any(words <= set(p.split()) for p in phrases), (edit.phrase, phrases)
        assert edit.prompt == f"a person with {edit.phrase}"
