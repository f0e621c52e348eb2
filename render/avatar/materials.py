"""Principled-BSDF materials shared by the avatar parts (bpy)."""

from __future__ import annotations

import bpy


def srgb_to_linear(c: float) -> float:
    """sRGB component (0..1) to the linear value Blender's colour sockets expect."""
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def principled(
    name: str,
    rgb: tuple[float, float, float],
    roughness: float = 0.5,
    metallic: float = 0.0,
    subsurface: float = 0.0,
    coat: float = 0.0,
    alpha: float = 1.0,
) -> bpy.types.Material:
    """A node material with one Principled BSDF; ``rgb`` is sRGB in 0..1."""
    mat = bpy.data.materials.new(name)
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*[srgb_to_linear(c) for c in rgb], 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    bsdf.inputs["Metallic"].default_value = metallic
    bsdf.inputs["Subsurface Weight"].default_value = subsurface
    bsdf.inputs["Coat Weight"].default_value = coat
    bsdf.inputs["Alpha"].default_value = alpha
    return mat


def assign(obj: bpy.types.Object, material: bpy.types.Material) -> None:
    """Give ``obj`` a single material slot holding ``material``."""
    obj.data.materials.clear()
    obj.data.materials.append(material)
