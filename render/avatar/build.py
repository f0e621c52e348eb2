"""Build one avatar in the current Blender scene from its recipe (paper §4.1, appendix B.2).

The scene must be empty of avatar parts (see ``render.blender_scene.reset_scene``). Each part
places itself from the recipe's :class:`render.anatomy.Anatomy`; a part taken from the asset
library (``recipe.assets``) replaces the procedural one of its category.
"""

from __future__ import annotations

from pathlib import Path

import bpy

from render.anatomy import anatomy_for
from render.avatar import accessories, clothing, facial_hair, hair, head
from render.avatar.assets import import_asset
from render.recipe import AvatarRecipe


def build_avatar(recipe: AvatarRecipe, asset_dir: str | Path | None = None) -> list[bpy.types.Object]:
    """Create every object of the avatar; returns them (all inside [-1, 1]^3)."""
    anatomy = anatomy_for(recipe)
    objects = head.build_head(recipe, anatomy)
    builders = {
        "hair": hair.build_hair,
        "facial_hair": facial_hair.build_facial_hair,
        "clothing": clothing.build_clothing,
        "accessories": accessories.build_accessory,
    }
    for category, builder in builders.items():
        if category in recipe.assets:
            if asset_dir is None:
                raise ValueError(
                    f"recipe of subject {recipe.subject_id} uses asset {recipe.assets[category]!r} "
                    f"({category}) but no asset folder was given"
                )
            objects += import_asset(Path(asset_dir) / category / recipe.assets[category])
        else:
            objects += builder(recipe, anatomy)
    return objects
