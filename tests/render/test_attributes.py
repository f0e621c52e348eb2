"""Recipe attributes as classifier labels: every sampled label is in the vocabulary; hidden ones are None."""

from __future__ import annotations

import dataclasses

from render.attributes import RECIPE_ATTRIBUTES, recipe_attributes
from render.recipe import GARMENT_COLOURS, HAIRSTYLES, sample_recipe


def test_every_label_of_sampled_recipes_is_a_class_of_the_vocabulary() -> None:
    seen: dict[str, set[str]] = {name: set() for name in RECIPE_ATTRIBUTES}
    for subject_id in range(300):
        labels = recipe_attributes(sample_recipe(0, subject_id))
        assert list(labels) == list(RECIPE_ATTRIBUTES)
        for name, value in labels.items():
            assert value is None or value in RECIPE_ATTRIBUTES[name], (name, value)
            if value is not None:
                seen[name].add(value)
    assert seen["hairstyle"] == set(HAIRSTYLES) and seen["garment_colour"] == set(GARMENT_COLOURS)
    assert seen["gender"] == {"man", "woman"}


def test_vocabulary_classes_are_unique_and_accessory_styles_leave_out_none() -> None:
    assert all(len(set(c)) == len(c) >= 2 for c in RECIPE_ATTRIBUTES.values())
    assert RECIPE_ATTRIBUTES["accessory_style"] == ("round", "rectangular", "aviator", "beanie", "cap", "studs",
                                                     "hoops")


def test_attributes_that_cannot_show_are_none() -> None:
    recipe = sample_recipe(0, 1)
    hidden = dataclasses.replace(recipe, hairstyle="bald", garment_pattern="solid", accessory="none",
                                 accessory_style="none")
    labels = recipe_attributes(hidden)
    assert labels["hair_colour"] is None and labels["pattern_colour"] is None
    assert labels["accessory_style"] is None and labels["accessory_colour"] is None
    assert labels["hairstyle"] == "bald" and labels["accessory"] == "none" and labels["garment_pattern"] == "solid"
    shown = dataclasses.replace(recipe, hairstyle="long", garment_pattern="dots", accessory="hat",
                                accessory_style="cap")
    labels = recipe_attributes(shown)
    assert labels["hair_colour"] == recipe.hair.name and labels["pattern_colour"] == recipe.pattern_colour.name
    assert labels["accessory_style"] == "cap" and labels["accessory_colour"] == recipe.accessory_colour.name


def test_parts_from_the_asset_library_leave_their_attributes_unlabelled() -> None:
    recipe = dataclasses.replace(sample_recipe(0, 2), assets={"hair": "hair/bob.glb", "clothing": "clothing/coat.glb"})
    labels = recipe_attributes(recipe)
    unlabelled = {name for name, value in labels.items() if value is None}
    assert {"hairstyle", "hair_colour", "garment", "garment_colour", "garment_pattern", "pattern_colour"} <= unlabelled
    assert labels["gender"] == recipe.gender and labels["skin_tone"] == recipe.skin.name
