"""One-sentence captions made from avatar recipes, for text conditioning (paper §3.2, §4.5).

``caption_for(recipe)`` -> "a smiling man with short brown hair, a goatee and round glasses,
wearing a red hoodie". Pure Python; every attribute that shows in the picture is named.
"""

from __future__ import annotations

from render.recipe import AvatarRecipe

_EXPRESSION_ADJECTIVE = {
    "neutral": "",
    "smile": "smiling",
    "open_mouth": "open-mouthed",
    "raised_brows": "surprised-looking",
}
_HAIR_PHRASE = {
    "short": "short {c} hair",
    "long": "long {c} hair",
    "bun": "{c} hair in a bun",
    "ponytail": "{c} hair in a ponytail",
    "afro": "a {c} afro",
    "curly": "curly {c} hair",
    "fringe": "{c} hair with a fringe",
}
_FACIAL_HAIR_PHRASE = {
    "beard": "a full beard",
    "mustache": "a mustache",
    "goatee": "a goatee",
    "sideburns": "sideburns",
    "stubble": "stubble",
}
_GARMENT_NOUN = {
    "tshirt": "t-shirt",
    "hoodie": "hoodie",
    "collared_shirt": "collared shirt",
    "sweater": "sweater",
}
_PATTERN_PHRASE = {"solid": "", "stripes": "striped", "checks": "checked", "dots": "polka-dot"}


def caption_for(recipe: AvatarRecipe) -> str:
    """The recipe's caption: expression, gender, hair, facial hair, accessory, then the garment."""
    adjectives = [a for a in ("bald" if recipe.hairstyle == "bald" else "", _EXPRESSION_ADJECTIVE[recipe.expression]) if a]
    subject = " ".join(adjectives + [recipe.gender])
    features = []
    if recipe.hairstyle != "bald":
        features.append(_HAIR_PHRASE[recipe.hairstyle].format(c=recipe.hair.name))
    if recipe.facial_hair != "none":
        features.append(_FACIAL_HAIR_PHRASE[recipe.facial_hair])
    accessory = _accessory_phrase(recipe)
    if accessory:
        features.append(accessory)
    text = f"{_article(subject)} {subject}"
    if features:
        text += " with " + _join(features)
    pattern = _PATTERN_PHRASE[recipe.garment_pattern]
    garment = " ".join(w for w in (recipe.garment_colour.name, pattern, _GARMENT_NOUN[recipe.garment]) if w)
    return f"{text}, wearing {_article(garment)} {garment}"


def _accessory_phrase(recipe: AvatarRecipe) -> str:
    style, colour = recipe.accessory_style, recipe.accessory_colour.name
    if recipe.accessory == "glasses":
        return f"{style} glasses"
    if recipe.accessory == "sunglasses":
        return f"{style} sunglasses"
    if recipe.accessory == "hat":
        return f"{_article(colour)} {colour} {style}"
    if recipe.accessory == "earrings":
        return f"{colour} {'stud' if style == 'studs' else 'hoop'} earrings"
    return ""


def _article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
