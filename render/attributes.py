"""The attributes of a recipe that show in its renders, as class labels for the attribute classifier.

:data:`RECIPE_ATTRIBUTES` is the vocabulary (attribute -> class names) of
:class:`rodin_core.evaluation.attributes.AttributeClassifier` trained on the corpus;
:func:`recipe_attributes` labels one recipe. An attribute that cannot show is labelled None and
left out of training and scoring: the hair colour of a bald avatar, the pattern colour of a solid
garment, the style and colour of an absent accessory, and every attribute of a part that an
asset-library file replaces (:data:`ASSET_ATTRIBUTES`). Pure Python, like :mod:`render.recipe`.
"""

from __future__ import annotations

from render.recipe import (
    ACCESSORIES,
    ACCESSORY_COLOURS,
    ACCESSORY_STYLES,
    EXPRESSIONS,
    EYE_COLOURS,
    FACIAL_HAIR,
    GARMENT_COLOURS,
    GARMENTS,
    GENDERS,
    HAIR_COLOURS,
    HAIRSTYLES,
    PATTERNS,
    SKIN_TONES,
    AvatarRecipe,
)

RECIPE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "gender": GENDERS,
    "skin_tone": tuple(SKIN_TONES),
    "eye_colour": tuple(EYE_COLOURS),
    "expression": EXPRESSIONS,
    "hairstyle": HAIRSTYLES,
    "hair_colour": tuple(HAIR_COLOURS),
    "facial_hair": FACIAL_HAIR,
    "garment": GARMENTS,
    "garment_colour": tuple(GARMENT_COLOURS),
    "garment_pattern": PATTERNS,
    "pattern_colour": tuple(GARMENT_COLOURS),
    "accessory": ACCESSORIES,
    "accessory_style": tuple(dict.fromkeys(s for a in ACCESSORIES if a != "none" for s in ACCESSORY_STYLES[a])),
    "accessory_colour": tuple(ACCESSORY_COLOURS),
}
"""Attribute -> its classes, in the order of the recipe's palettes and choices."""


ASSET_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "hair": ("hairstyle", "hair_colour"),
    "facial_hair": ("facial_hair",),
    "clothing": ("garment", "garment_colour", "garment_pattern", "pattern_colour"),
    "accessories": ("accessory", "accessory_style", "accessory_colour"),
}
"""Asset-library category -> the attributes of the procedural part that its file replaces."""


def recipe_attributes(recipe: AvatarRecipe) -> dict[str, str | None]:
    """The class of every attribute of :data:`RECIPE_ATTRIBUTES` in ``recipe``; None where it cannot show."""
    accessory = recipe.accessory != "none"
    labels: dict[str, str | None] = {
        "gender": recipe.gender,
        "skin_tone": recipe.skin.name,
        "eye_colour": recipe.eyes.name,
        "expression": recipe.expression,
        "hairstyle": recipe.hairstyle,
        "hair_colour": recipe.hair.name if recipe.hairstyle != "bald" else None,
        "facial_hair": recipe.facial_hair,
        "garment": recipe.garment,
        "garment_colour": recipe.garment_colour.name,
        "garment_pattern": recipe.garment_pattern,
        "pattern_colour": recipe.pattern_colour.name if recipe.garment_pattern != "solid" else None,
        "accessory": recipe.accessory,
        "accessory_style": recipe.accessory_style if accessory else None,
        "accessory_colour": recipe.accessory_colour.name if accessory else None,
    }
    for category in recipe.assets:
        labels.update(dict.fromkeys(ASSET_ATTRIBUTES.get(category, ())))
    return labels
