"""Recipes are deterministic per (seed, subject), cover every attribute, and caption what they hold."""

import itertools

import numpy as np
import pytest

from render.anatomy import anatomy_for
from render.caption import caption_for
from render.recipe import (
    ACCESSORIES,
    EXPRESSIONS,
    FACIAL_HAIR,
    GARMENTS,
    HAIRSTYLES,
    SHAPE_KEYS,
    AvatarRecipe,
    sample_recipe,
)


def test_same_seed_and_subject_give_the_same_recipe():
    assert sample_recipe(3, 17) == sample_recipe(3, 17)
    assert sample_recipe(3, 17).to_json() == sample_recipe(3, 17).to_json()


def test_subjects_and_seeds_give_different_recipes():
    recipes = [sample_recipe(0, i) for i in range(20)]
    assert len({r.to_json() for r in recipes}) == 20
    assert sample_recipe(1, 5).shape != sample_recipe(0, 5).shape


def test_every_attribute_value_occurs_in_a_corpus():
    recipes = [sample_recipe(0, i) for i in range(400)]
    assert {r.expression for r in recipes} == set(EXPRESSIONS)
    assert {r.hairstyle for r in recipes} == set(HAIRSTYLES)
    assert {r.facial_hair for r in recipes} == set(FACIAL_HAIR)
    assert {r.garment for r in recipes} == set(GARMENTS)
    assert {r.accessory for r in recipes} == set(ACCESSORIES)
    shapes = np.array([[r.shape[k] for k in SHAPE_KEYS] for r in recipes])
    assert shapes.min() >= -1 and shapes.max() <= 1
    assert np.all(shapes.std(axis=0) > 0.2)  # each shape parameter varies
    corr = np.corrcoef(shapes.T) - np.eye(len(SHAPE_KEYS))
    assert np.abs(corr).max() < 0.25  # and independently


def test_json_round_trip():
    recipe = sample_recipe(2, 9, {"hair": ["a.glb", "b.blend"]})
    assert recipe.assets["hair"] in {"a.glb", "b.blend"}
    assert AvatarRecipe.from_json(recipe.to_json()) == recipe


def test_asset_catalog_is_sampled_deterministically():
    catalog = {"hair": ["b.glb", "a.glb"], "accessories": ["hat.blend"]}
    a = sample_recipe(0, 1, catalog)
    assert a == sample_recipe(0, 1, {"hair": ["a.glb", "b.glb"], "accessories": ["hat.blend"]})
    assert a.assets["accessories"] == "hat.blend" and "clothing" not in a.assets


def test_negative_ids_are_refused():
    with pytest.raises(ValueError, match="subject_id"):
        sample_recipe(0, -1)


def test_caption_names_what_the_recipe_holds():
    base = sample_recipe(0, 0)
    recipe = AvatarRecipe(**{**base.__dict__, "gender": "man", "expression": "smile", "hairstyle": "short",
                             "hair": type(base.hair)("brown", (0.3, 0.2, 0.1)), "facial_hair": "goatee",
                             "accessory": "glasses", "accessory_style": "round", "garment": "hoodie",
                             "garment_colour": type(base.hair)("red", (0.7, 0.1, 0.1)), "garment_pattern": "solid"})
    assert caption_for(recipe) == "a smiling man with short brown hair, a goatee and round glasses, wearing a red hoodie"
    bald = AvatarRecipe(**{**recipe.__dict__, "hairstyle": "bald", "facial_hair": "none", "accessory": "none",
                           "expression": "neutral", "garment_pattern": "stripes", "garment": "tshirt"})
    assert caption_for(bald) == "a bald man, wearing a red striped t-shirt"


def test_captions_are_distinct_sentences():
    captions = [caption_for(sample_recipe(0, i)) for i in range(100)]
    assert len(set(captions)) > 90
    for text in captions:
        assert text.startswith(("a ", "an ")) and ", wearing " in text and "  " not in text


def test_every_shape_key_moves_the_anatomy():
    base = sample_recipe(0, 0)
    ref = anatomy_for(AvatarRecipe(**{**base.__dict__, "shape": {k: 0.0 for k in SHAPE_KEYS}}))
    for key, value in itertools.product(SHAPE_KEYS, (1.0,)):
        shape = {k: 0.0 for k in SHAPE_KEYS} | {key: value}
        moved = anatomy_for(AvatarRecipe(**{**base.__dict__, "shape": shape}))
        assert moved != ref, f"shape parameter {key} changes no landmark"
