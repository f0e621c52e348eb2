"""Caption variants are deterministic, name every attribute of the recipe, and drop some in partial ones."""

import numpy as np
import pytest

from render.caption import caption_for
from render.caption_variants import (
    CAPTION_ATTRIBUTES,
    attribute_phrases,
    caption_variant,
    caption_variants,
    recipe_caption_variants,
)
from render.recipe import GARMENTS, HAIRSTYLES, PATTERNS, sample_recipe

_STYLE_WORDS = {"bald": ("bald", "shaved", "no hair"), "short": ("short",), "long": ("long", "shoulders"),
                "bun": ("bun",), "ponytail": ("ponytail",), "afro": ("afro",), "curly": ("curl",),
                "fringe": ("fringe", "bangs")}
_GARMENT_WORDS = {"tshirt": ("t-shirt", "tee"), "hoodie": ("hoodie", "hooded"),
                  "collared_shirt": ("shirt",), "sweater": ("sweater", "jumper")}
_PATTERN_WORDS = {"solid": ("",), "stripes": ("stripe",), "checks": ("check",), "dots": ("dot",)}


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_variants_are_deterministic_given_the_seed():
    recipe = sample_recipe(0, 5)
    assert caption_variants(recipe, _rng(3), 6) == caption_variants(recipe, _rng(3), 6)
    assert caption_variants(recipe, _rng(3), 6) != caption_variants(recipe, _rng(4), 6)
    stored = recipe.to_json()
    assert recipe_caption_variants(stored, 1) == recipe_caption_variants(stored, 1)
    assert recipe_caption_variants(stored, 1) != recipe_caption_variants(stored, 2)


def test_the_full_variant_names_every_attribute_in_some_phrasing():
    recipes = [sample_recipe(0, i) for i in range(300)]
    assert {r.hairstyle for r in recipes} == set(HAIRSTYLES) and {r.garment for r in recipes} == set(GARMENTS)
    assert {r.garment_pattern for r in recipes} == set(PATTERNS)
    for i, recipe in enumerate(recipes):
        text = caption_variants(recipe, _rng(i), 1)[0]
        assert any(w in text for w in ("man", "guy", "male")) if recipe.gender == "man" else \
            any(w in text for w in ("woman", "lady", "female")), text
        assert any(w in text for w in _STYLE_WORDS[recipe.hairstyle]), text
        assert recipe.hairstyle == "bald" or recipe.hair.name in text, text
        assert recipe.skin.name in text and recipe.garment_colour.name in text, text
        assert any(w in text for w in _GARMENT_WORDS[recipe.garment]), text
        assert any(w in text for w in _PATTERN_WORDS[recipe.garment_pattern]), text
        if recipe.accessory != "none":
            assert recipe.accessory_style[:4] in text or recipe.accessory_colour.name in text, text
        if recipe.gender == "man" and recipe.facial_hair != "none":
            assert any(p in text for p in attribute_phrases(recipe)["facial_hair"]), text
        assert any(p in text for p in attribute_phrases(recipe)["expression"]), text


def test_every_phrasing_of_an_attribute_is_used():
    recipe = sample_recipe(0, 2)
    phrases = attribute_phrases(recipe)
    texts = " | ".join(caption_variant(recipe, _rng(s)) for s in range(60))
    for name, options in phrases.items():
        for option in options:
            assert option in texts, (name, option)


def test_partial_variants_drop_attributes_and_keep_one():
    recipe = sample_recipe(0, 7)
    variants = caption_variants(recipe, _rng(0), 40, drop=0.5)
    assert len(variants) == 40 and len(set(variants)) > 30
    assert min(len(v) for v in variants[1:]) < len(variants[0])
    assert all(v.strip() and "  " not in v for v in variants)
    only_gender = caption_variant(recipe, _rng(0), keep=["gender"])
    assert only_gender.endswith(attribute_phrases(recipe)["gender"]) and " with " not in only_gender
    assert "person" in caption_variant(recipe, _rng(0), keep=["skin"])


def test_attributes_the_recipe_lacks_are_left_out():
    woman = next(r for r in (sample_recipe(0, i) for i in range(50)) if r.gender == "woman" and r.accessory == "none")
    assert set(attribute_phrases(woman)) == set(CAPTION_ATTRIBUTES) - {"facial_hair", "accessory"}


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="count=0"):
        caption_variants(sample_recipe(0, 0), _rng(), 0)
    with pytest.raises(ValueError, match="drop=1.0"):
        caption_variants(sample_recipe(0, 0), _rng(), 2, drop=1.0)


def test_caption_for_is_unchanged_by_variants():
    recipe = sample_recipe(0, 3)
    before = caption_for(recipe)
    caption_variants(recipe, _rng(), 5)
    assert caption_for(recipe) == before
