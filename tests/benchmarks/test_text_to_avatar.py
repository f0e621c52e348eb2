"""The helpers of benchmarks/text_to_avatar.py: the prompts, the shares a judge predicts, the table, the ceiling's errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from render.attributes import recipe_attributes
from render.recipe import sample_recipe

from .scripts import loaded_script


@pytest.fixture(scope="module")
def script():
    with loaded_script("text_to_avatar") as module:
        yield module


def test_prompts_repeat_per_seed_and_name_classes_of_their_own_recipe(script) -> None:
    prompts = script.make_prompts(12, seed=3)
    assert prompts == script.make_prompts(12, seed=3)
    assert [p for p, _ in prompts] != [p for p, _ in script.make_prompts(12, seed=4)]
    for index, (prompt, named) in enumerate(prompts):
        labels = recipe_attributes(sample_recipe(3, script.FIRST_ID + index))
        assert named and isinstance(prompt, str) and prompt
        assert all(labels[attribute] == label for attribute, label in named.items())


def test_the_expected_share_weights_each_attribute_by_how_often_it_was_named(script) -> None:
    rows = {"gender": [True, False, True], "hairstyle": [False]}
    assert script.expected_share(rows, {"gender": 0.9, "hairstyle": 0.5}) == pytest.approx((3 * 0.9 + 0.5) / 4)
    assert script.expected_share(rows, {"gender": 0.9}) is None
    assert script.expected_share({}, {"gender": 0.9}) is None


def test_the_table_gives_recognised_and_predicted_shares_with_and_without_the_fitted_column(script) -> None:
    rows = {"gender": [True, True, False, False], "hair_colour": [True, False, False, False]}
    scores = {"gender": {"accuracy": 0.8, "base_rate": 0.5}, "hair_colour": {"accuracy": 0.6, "base_rate": 0.1}}
    plain = script.format_table(rows, scores).splitlines()
    assert plain[0].split() == ["attribute", "named", "recognised", "classifier", "acc", "base", "rate"]
    assert plain[1].split() == ["gender", "4", "0.500", "0.800", "0.500"]
    assert plain[-1].split() == ["all", "named", "8", "0.375", "0.700"]
    ceilings = {"fitted": {"gender": 0.75, "hair_colour": 0.25}, "from_z": {"gender": 0.5}}
    table = script.format_table(rows, scores, ceilings).splitlines()
    assert table[0].split()[-6:] == ["fitted", "acc", "from-z", "acc", "base", "rate"]
    assert table[2].split() == ["hair_colour", "4", "0.250", "0.600", "0.250", "n/a", "0.100"]
    assert table[-1].split() == ["all", "named", "8", "0.375", "0.700", "0.500", "n/a"]


def test_the_ceiling_without_subjects_to_judge_names_both_ways_to_give_them(script, tmp_path) -> None:
    classifier = SimpleNamespace(metrics={"held_out_subjects": []})
    with pytest.raises(SystemExit, match=r"^error: the classifier's report names no held-out subjects; retrain it "
                                         r"with .* or name them with --ceiling-subjects$"):
        script.held_out_accuracy(str(tmp_path), classifier, None, None, None, "cpu")
    with pytest.raises(SystemExit, match="--ceiling-subjects$"):
        script.held_out_accuracy(str(tmp_path), SimpleNamespace(metrics={"held_out_subjects": [3]}), None, None,
                                 None, "cpu", subjects=[])
