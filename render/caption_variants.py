"""Caption variants: paraphrased and partial descriptions of a recipe, for text-image training (§4.5).

:func:`caption_for` gives one fixed sentence per subject; a text-image embedding learns more from
the many ways a user describes the same avatar. :func:`attribute_phrases` names every attribute a
user would name (:data:`CAPTION_ATTRIBUTES`) in several phrasings; :func:`caption_variants` draws
sentences from them with a seeded generator: the first variant names every attribute, the others
drop each attribute with probability ``drop`` (partial descriptions: "a man with a beard"). The
same recipe and generator state always give the same variants.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from render.caption import (
    _accessory_phrase,
    _article,
    _join,
)
from render.recipe import AvatarRecipe

CAPTION_ATTRIBUTES = ("gender", "expression", "hair", "facial_hair", "accessory", "skin", "garment")
"""What a variant may name: gender; expression; hairstyle with hair colour; facial hair; accessory
(kind, style, colour); skin tone; garment with its colour, pattern and pattern colour."""

_GENDER_WORDS = {"man": ("man", "guy", "male person"), "woman": ("woman", "lady", "female person")}
_EXPRESSION_ADJECTIVES = {
    "neutral": ("neutral-faced", "calm", "expressionless"),
    "smile": ("smiling", "happy", "grinning"),
    "open_mouth": ("open-mouthed", "shouting", "talking"),
    "raised_brows": ("surprised-looking", "surprised", "astonished"),
}
_HAIR_PHRASES = {
    "bald": ("a bald head", "a shaved head", "no hair"),
    "short": ("short {c} hair", "{c} short hair", "{c} hair cut short"),
    "long": ("long {c} hair", "{c} long hair", "{c} hair down to the shoulders"),
    "bun": ("{c} hair in a bun", "a {c} bun", "{c} hair tied up in a bun"),
    "ponytail": ("{c} hair in a ponytail", "a {c} ponytail", "{c} hair tied back in a ponytail"),
    "afro": ("a {c} afro", "{c} afro hair", "a big {c} afro"),
    "curly": ("curly {c} hair", "{c} curly hair", "{c} curls"),
    "fringe": ("{c} hair with a fringe", "{c} hair with bangs", "a {c} fringe"),
}
_FACIAL_HAIR_PHRASES = {
    "none": ("a clean-shaven face", "no beard", "a shaved face"),
    "beard": ("a full beard", "a beard", "a thick beard"),
    "mustache": ("a mustache", "a moustache", "a mustache on the upper lip"),
    "goatee": ("a goatee", "a goatee beard", "a chin beard"),
    "sideburns": ("sideburns", "long sideburns", "mutton-chop sideburns"),
    "stubble": ("stubble", "a stubbly chin", "a five o'clock shadow"),
}
_SKIN_PHRASES = ("{t} skin", "a {t} skin tone", "a {t} complexion")
_GARMENT_NOUNS = {
    "tshirt": ("t-shirt", "tee", "t-shirt"),
    "hoodie": ("hoodie", "hooded sweatshirt", "hoodie"),
    "collared_shirt": ("collared shirt", "button-up shirt", "shirt with a collar"),
    "sweater": ("sweater", "jumper", "knit sweater"),
}
_PATTERN_PHRASES = {
    "solid": ("{g} {n}", "plain {g} {n}", "{g} {n}"),
    "stripes": ("{g} {n} with {p} stripes", "{g} and {p} striped {n}", "striped {g} {n}"),
    "checks": ("{g} {n} with {p} checks", "{g} and {p} checked {n}", "checked {g} {n}"),
    "dots": ("{g} {n} with {p} polka dots", "{g} and {p} polka-dot {n}", "polka-dot {g} {n}"),
}
_WEARING = ("wearing {a}", "in {a}", "dressed in {a}")
_OPENINGS = ("", "a photo of ", "a portrait of ", "a 3D avatar of ", "a render of ")


def attribute_phrases(recipe: AvatarRecipe) -> dict[str, tuple[str, ...]]:
    """Attribute (:data:`CAPTION_ATTRIBUTES`) -> its phrasings; attributes the recipe lacks (no accessory,
    facial hair on a woman) are left out. Gender and expression are adjectives/nouns of the subject,
    ``garment`` phrases start with "wearing"/"in", the others follow "with"."""
    colour = recipe.hair.name
    garments = tuple(
        f"{_article(text)} {text}" for text in (
            _PATTERN_PHRASES[recipe.garment_pattern][i].format(g=recipe.garment_colour.name,
                                                               p=recipe.pattern_colour.name, n=noun)
            for i, noun in enumerate(_GARMENT_NOUNS[recipe.garment])))
    phrases = {
        "gender": _GENDER_WORDS[recipe.gender],
        "expression": _EXPRESSION_ADJECTIVES[recipe.expression],
        "hair": tuple(p.format(c=colour) for p in _HAIR_PHRASES[recipe.hairstyle]),
        "skin": tuple(p.format(t=recipe.skin.name) for p in _SKIN_PHRASES),
        "garment": tuple(w.format(a=g) for w, g in zip(_WEARING, garments, strict=True)),
    }
    if recipe.gender == "man":
        phrases["facial_hair"] = _FACIAL_HAIR_PHRASES[recipe.facial_hair]
    if recipe.accessory != "none":
        phrases["accessory"] = _accessory_phrases(recipe)
    return {name: phrases[name] for name in CAPTION_ATTRIBUTES if name in phrases}


def _accessory_phrases(recipe: AvatarRecipe) -> tuple[str, ...]:
    style, colour = recipe.accessory_style, recipe.accessory_colour.name
    first = _accessory_phrase(recipe)
    if recipe.accessory in ("glasses", "sunglasses"):
        return first, f"{colour} {style} {recipe.accessory}", f"a pair of {style} {recipe.accessory}"
    if recipe.accessory == "hat":
        return first, f"{_article(style)} {style} in {colour}", f"{_article(colour)} {colour} {style} on the head"
    kind = "stud" if style == "studs" else "hoop"
    return first, f"{kind} earrings in {colour}", f"{colour} {kind}s in the ears"


def caption_variant(recipe: AvatarRecipe, rng: np.random.Generator, keep: Sequence[str] | None = None) -> str:
    """One sentence naming the attributes in ``keep`` (default: all the recipe has), each in a phrasing
    drawn from ``rng``; with ``gender`` left out the subject is "a person"."""
    phrases = attribute_phrases(recipe)
    names = [n for n in phrases if keep is None or n in keep]

    def pick(name: str) -> str:
        options = phrases[name]
        return options[int(rng.integers(len(options)))]

    chosen = {name: pick(name) for name in names}
    subject = " ".join(w for w in (chosen.get("expression", ""), chosen.get("gender", "person")) if w)
    features = [chosen[n] for n in ("hair", "facial_hair", "accessory", "skin") if n in chosen]
    if len(features) > 1:
        features = [features[i] for i in rng.permutation(len(features))]
    opening = _OPENINGS[int(rng.integers(len(_OPENINGS)))]
    text = f"{opening}{_article(subject)} {subject}"
    if features:
        text += " with " + _join(features)
    if "garment" in chosen:
        text += (", " if features else " ") + chosen["garment"]
    return text


def caption_variants(recipe: AvatarRecipe, rng: np.random.Generator, count: int = 8, drop: float = 0.3) -> list[str]:
    """``count`` sentences about ``recipe``: the first names every attribute, each other one drops each
    attribute with probability ``drop`` (always keeping one). Deterministic given ``rng``'s state."""
    if count < 1 or not 0.0 <= drop < 1.0:
        raise ValueError(f"caption_variants needs count >= 1 and 0 <= drop < 1, got count={count}, drop={drop}")
    names = list(attribute_phrases(recipe))
    variants = [caption_variant(recipe, rng)]
    for _ in range(count - 1):
        keep = [n for n in names if rng.random() >= drop] or [names[int(rng.integers(len(names)))]]
        variants.append(caption_variant(recipe, rng, keep))
    return variants


def recipe_caption_variants(recipe_json: str, seed: int, count: int = 8, drop: float = 0.3) -> list[str]:
    """:func:`caption_variants` of a stored recipe (``subjects.parquet``) with a generator seeded by
    (``seed``, subject id)."""
    recipe = AvatarRecipe.from_json(recipe_json)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, recipe.subject_id, 0x7E57])))
    return caption_variants(recipe, rng, count, drop)
