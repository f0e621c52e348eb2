"""Avatar recipes: the seeded random combination of attributes that defines one synthetic subject.

Paper §4.1 / appendix B.2: each avatar is "a random combination of identities, expressions,
hairstyles, and accessories". A recipe holds every sampled attribute, so that the Blender factory
(``render.avatar``) can rebuild the avatar exactly, and a one-sentence caption made from it is kept
for text conditioning. ``sample_recipe(seed, subject_id)`` always gives the same recipe.

This module is pure Python (no bpy): the host, the tests and later stages read recipes too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

RECIPE_VERSION = 1

SHAPE_KEYS: tuple[str, ...] = (
    "head_width", "head_height", "head_depth", "jaw_width", "jaw_length", "chin", "cheeks",
    "nose_length", "nose_width", "nose_bridge", "brow_ridge", "ear_size", "ear_angle",
    "eye_size", "eye_spacing", "lip_fullness",
)
"""Independent identity shape parameters, each in [-1, 1] (0 = average)."""

GENDERS = ("man", "woman")
EXPRESSIONS = ("neutral", "smile", "open_mouth", "raised_brows")
HAIRSTYLES = ("bald", "short", "long", "bun", "ponytail", "afro", "curly", "fringe")
FACIAL_HAIR = ("none", "beard", "mustache", "goatee", "sideburns", "stubble")
GARMENTS = ("tshirt", "hoodie", "collared_shirt", "sweater")
PATTERNS = ("solid", "stripes", "checks", "dots")
ACCESSORIES = ("none", "glasses", "sunglasses", "hat", "earrings")
ACCESSORY_STYLES: dict[str, tuple[str, ...]] = {
    "none": ("none",),
    "glasses": ("round", "rectangular"),
    "sunglasses": ("aviator", "rectangular"),
    "hat": ("beanie", "cap"),
    "earrings": ("studs", "hoops"),
}
ASSET_CATEGORIES = ("hair", "facial_hair", "clothing", "accessories")
"""Sub-folders of an asset library; each holds .blend / .glb / .gltf files in world units."""
ASSET_SUFFIXES = (".blend", ".glb", ".gltf")

# Named colours in sRGB, 0..1.
SKIN_TONES: dict[str, tuple[float, float, float]] = {
    "porcelain": (0.96, 0.83, 0.76), "fair": (0.92, 0.76, 0.65), "light": (0.87, 0.68, 0.55),
    "medium": (0.78, 0.57, 0.42), "olive": (0.70, 0.52, 0.36), "tan": (0.62, 0.43, 0.29),
    "brown": (0.48, 0.31, 0.20), "dark": (0.33, 0.21, 0.14), "deep": (0.23, 0.15, 0.10),
}
EYE_COLOURS: dict[str, tuple[float, float, float]] = {
    "brown": (0.33, 0.20, 0.10), "dark brown": (0.18, 0.11, 0.06), "hazel": (0.50, 0.38, 0.18),
    "green": (0.27, 0.45, 0.25), "blue": (0.25, 0.45, 0.70), "grey": (0.50, 0.55, 0.58),
}
HAIR_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.03, 0.03, 0.03), "dark brown": (0.14, 0.08, 0.04), "brown": (0.30, 0.18, 0.09),
    "auburn": (0.45, 0.17, 0.07), "red": (0.62, 0.22, 0.08), "blonde": (0.80, 0.64, 0.36),
    "platinum": (0.90, 0.87, 0.78), "grey": (0.55, 0.55, 0.55), "white": (0.88, 0.88, 0.86),
    "blue": (0.12, 0.25, 0.65), "pink": (0.90, 0.45, 0.62),
}
GARMENT_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.75, 0.08, 0.08), "navy": (0.06, 0.10, 0.32), "blue": (0.15, 0.35, 0.80),
    "green": (0.10, 0.50, 0.20), "yellow": (0.95, 0.80, 0.15), "white": (0.92, 0.92, 0.92),
    "black": (0.05, 0.05, 0.05), "grey": (0.45, 0.45, 0.47), "orange": (0.95, 0.45, 0.08),
    "purple": (0.42, 0.18, 0.60), "teal": (0.05, 0.50, 0.50), "pink": (0.95, 0.55, 0.70),
}
ACCESSORY_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.03, 0.03, 0.03), "gold": (0.83, 0.65, 0.25), "silver": (0.75, 0.75, 0.78),
    "tortoiseshell": (0.35, 0.20, 0.08), "red": (0.70, 0.08, 0.08), "blue": (0.12, 0.25, 0.65),
}


@dataclass(frozen=True)
class Colour:
    """A named sRGB colour (components in 0..1)."""

    name: str
    rgb: tuple[float, float, float]


@dataclass(frozen=True)
class AvatarRecipe:
    """Every attribute of one synthetic avatar; the factory builds it deterministically from this."""

    subject_id: int
    seed: int
    gender: str
    shape: dict[str, float]
    """SHAPE_KEYS -> value in [-1, 1]."""
    skin: Colour
    eyes: Colour
    expression: str
    expression_strength: float
    """How strong the expression is, in [0.5, 1]."""
    hairstyle: str
    hair: Colour
    facial_hair: str
    garment: str
    garment_colour: Colour
    garment_pattern: str
    pattern_colour: Colour
    accessory: str
    accessory_style: str
    accessory_colour: Colour
    assets: dict[str, str] = field(default_factory=dict)
    """Asset-library category -> file (relative to the library) used in place of the procedural part."""
    version: int = RECIPE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AvatarRecipe:
        data = dict(data)
        for key in ("skin", "eyes", "hair", "garment_colour", "pattern_colour", "accessory_colour"):
            data[key] = Colour(name=data[key]["name"], rgb=tuple(data[key]["rgb"]))
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> AvatarRecipe:
        return cls.from_dict(json.loads(text))


def subject_rng(seed: int, subject_id: int) -> np.random.Generator:
    """The random generator of one subject: independent streams per (corpus seed, subject id)."""
    if seed < 0 or subject_id < 0:
        raise ValueError(f"seed and subject_id must be >= 0, got seed={seed}, subject_id={subject_id}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, subject_id])))


def sample_recipe(seed: int, subject_id: int, asset_catalog: Mapping[str, Sequence[str]] | None = None) -> AvatarRecipe:
    """Sample the recipe of ``subject_id`` in the corpus of ``seed``.

    ``asset_catalog`` maps asset categories to the files available in an asset library (see
    :func:`render.asset_library.scan_asset_library`); each category present replaces the procedural part
    with a file drawn from it. The same arguments always give the same recipe.
    """
    rng = subject_rng(seed, subject_id)

    def pick(options: Sequence[str], p: Sequence[float] | None = None) -> str:
        return str(options[int(rng.choice(len(options), p=p))])

    def colour(palette: Mapping[str, tuple[float, float, float]], names: Sequence[str] | None = None) -> Colour:
        name = pick(list(names or palette))
        return Colour(name, palette[name])

    gender = pick(GENDERS)
    shape = {key: round(float(np.clip(rng.normal(0.0, 0.45), -1.0, 1.0)), 4) for key in SHAPE_KEYS}
    skin = colour(SKIN_TONES)
    eyes = colour(EYE_COLOURS)
    expression = pick(EXPRESSIONS)
    strength = round(float(rng.uniform(0.5, 1.0)), 3)
    style_p = (0.10, 0.18, 0.12, 0.12, 0.12, 0.10, 0.12, 0.14) if gender == "man" else (
        0.03, 0.12, 0.22, 0.14, 0.16, 0.09, 0.12, 0.12)
    hairstyle = pick(HAIRSTYLES, style_p)
    natural = ("black", "dark brown", "brown", "auburn", "red", "blonde", "platinum", "grey", "white")
    hair = colour(HAIR_COLOURS, natural if rng.random() < 0.9 else None)
    facial_hair = pick(FACIAL_HAIR, (0.35, 0.15, 0.13, 0.13, 0.10, 0.14)) if gender == "man" else "none"
    garment = pick(GARMENTS)
    garment_colour = colour(GARMENT_COLOURS)
    garment_pattern = pick(PATTERNS, (0.55, 0.2, 0.15, 0.1))
    pattern_colour = colour(GARMENT_COLOURS, [n for n in GARMENT_COLOURS if n != garment_colour.name])
    accessory = pick(ACCESSORIES, (0.3, 0.2, 0.15, 0.2, 0.15))
    accessory_style = pick(ACCESSORY_STYLES[accessory])
    accessory_colour = colour(ACCESSORY_COLOURS)

    assets: dict[str, str] = {}
    for category in ASSET_CATEGORIES:
        files = sorted((asset_catalog or {}).get(category, ()))
        if files:
            assets[category] = files[int(rng.integers(len(files)))]

    return AvatarRecipe(
        subject_id=subject_id, seed=seed, gender=gender, shape=shape, skin=skin, eyes=eyes,
        expression=expression, expression_strength=strength, hairstyle=hairstyle, hair=hair,
        facial_hair=facial_hair, garment=garment, garment_colour=garment_colour,
        garment_pattern=garment_pattern, pattern_colour=pattern_colour, accessory=accessory,
        accessory_style=accessory_style, accessory_colour=accessory_colour, assets=assets,
    )
