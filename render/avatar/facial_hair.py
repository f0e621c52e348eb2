"""Procedural facial hair: beard, mustache, goatee, sideburns and stubble (bpy).

Paper §4.1 / appendix B.2: facial hair is one of the attributes combined at random into each
synthetic identity. Each style is a shell offset from the skin of :func:`render.avatar.head.head_surface`
along its normals, restricted to the style's region of the face by a soft mask, so it follows the
jaw and lips of every identity and expression. The mask is computed on the neutral face (the same
vertices as the expressive one), so a beard opens with the jaw. The shell thickness tapers to the
mask's border and is jittered per vertex for a tufted silhouette; the material adds a combed strand
bump in the hair colour of the recipe. Stubble is a thin, speckled, semi-transparent shell.
"""

from __future__ import annotations

import dataclasses

import bpy
import numpy as np

from render.anatomy import Anatomy
from render.avatar.geometry import mesh_object, smoothstep, vertex_normals
from render.avatar.head import HeadSurface, head_surface
from render.avatar.materials import assign, principled
from render.recipe import FACIAL_HAIR, AvatarRecipe

THICKNESS = {"beard": 0.045, "mustache": 0.026, "goatee": 0.04, "sideburns": 0.035, "stubble": 0.0}
"""Largest shell thickness of each style (world units), before jitter."""
COVERAGE_ATTRIBUTE = "coverage"
"""Per-vertex region mask (0..1) of the shell; stubble fades out with it."""
BASE_OFFSET = 0.003
"""Gap between the skin and the shell at the mask's border (avoids z-fighting)."""


def _masks(surface: HeadSurface, a: Anatomy) -> dict[str, np.ndarray]:
    """Soft region (N,) in [0, 1] of every style, on the neutral face's vertices."""
    x, y, z = surface.vertices.T
    side_deg = np.degrees(np.abs(surface.azimuth))
    mz = a.mouth_centre[2]
    half = 0.5 * a.mouth_width
    tip_z, chin_z, ear_y, ear_z = a.nose_tip[2], a.chin[2], a.ear_left[1], a.ear_left[2]
    mouth_hole = (x / (half + 0.02)) ** 2 + ((z - mz + 0.004) / 0.034) ** 2
    not_neck = surface.above_neck
    before_ear = smoothstep(ear_y - 0.02, ear_y - 0.07, y)

    top = np.interp(side_deg, [0, 12, 22, 40, 65, 80, 95], [tip_z - 0.05, tip_z - 0.05, mz + 0.01,
                                                            mz + 0.08, ear_z - 0.03, ear_z + 0.05, ear_z + 0.05])
    beard = smoothstep(top + 0.01, top - 0.015, z) * not_neck * before_ear * (side_deg < 100)
    beard *= smoothstep(0.8, 1.3, mouth_hole)

    mustache_top = tip_z - 0.045
    droop = np.clip((np.abs(x) - half + 0.01) / 0.03, 0.0, 1.0)
    mustache_bottom = mz + 0.012 - 0.035 * droop
    mustache = (smoothstep(mustache_top + 0.005, mustache_top - 0.01, z)
                * smoothstep(mustache_bottom - 0.008, mustache_bottom + 0.004, z)
                * smoothstep(half + 0.045, half + 0.02, np.abs(x)) * (side_deg < 45))

    chin_patch = (smoothstep(0.12, 0.085, np.abs(x)) * smoothstep(mz - 0.02, mz - 0.04, z)
                  * smoothstep(chin_z - 0.06, chin_z - 0.02, z) * (side_deg < 40) * (y < a.chin[1] + 0.16))
    goatee = np.maximum(chin_patch, 0.8 * mustache)

    taper = np.clip((ear_z + 0.1 - z) / 0.25, 0.0, 1.0)
    sideburns = (smoothstep(ear_y - 0.01, ear_y - 0.05, y)
                 * smoothstep(ear_y - 0.24 + 0.06 * taper, ear_y - 0.19 + 0.06 * taper, y)
                 * smoothstep(ear_z + 0.15, ear_z + 0.1, z) * smoothstep(ear_z - 0.18, ear_z - 0.12, z)
                 * (side_deg > 55))

    return {"beard": np.maximum(beard, mustache), "mustache": mustache, "goatee": goatee,
            "sideburns": sideburns, "stubble": np.maximum(beard, mustache)}


def _hair_material(recipe: AvatarRecipe, stubble: bool) -> bpy.types.Material:
    """Hair colour with a combed strand bump, fading out (alpha) at the border of the region.

    Stubble is darker, speckled and at most partly opaque."""
    rgb = tuple(0.45 * c for c in recipe.hair.rgb) if stubble else recipe.hair.rgb
    mat = principled(f"facial_hair_{recipe.subject_id}", rgb, roughness=0.65)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    coords = nodes.new("ShaderNodeTexCoord")
    mapping = nodes.new("ShaderNodeMapping")
    mapping.inputs["Scale"].default_value = (160.0, 160.0, 160.0) if stubble else (90.0, 90.0, 12.0)
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Detail"].default_value = 2.0
    links.new(coords.outputs["Object"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], noise.inputs["Vector"])
    coverage = nodes.new("ShaderNodeAttribute")
    coverage.attribute_name = COVERAGE_ATTRIBUTE
    opacity = nodes.new("ShaderNodeMapRange")
    opacity.inputs["From Min"].default_value = 0.42 if stubble else 0.0
    opacity.inputs["From Max"].default_value = 0.58 if stubble else 0.35
    opacity.inputs["To Min"].default_value = 0.1 if stubble else 0.0
    opacity.inputs["To Max"].default_value = 0.9 if stubble else 1.0
    links.new((noise if stubble else coverage).outputs["Fac"], opacity.inputs["Value"])
    fade = nodes.new("ShaderNodeMath")
    fade.operation = "MULTIPLY"
    fade.use_clamp = True
    links.new(opacity.outputs["Result"], fade.inputs[0])
    if stubble:
        links.new(coverage.outputs["Fac"], fade.inputs[1])
    else:
        fade.inputs[1].default_value = 1.0
        bump = nodes.new("ShaderNodeBump")
        bump.inputs["Strength"].default_value = 0.5
        bump.inputs["Distance"].default_value = 0.004
        links.new(noise.outputs["Fac"], bump.inputs["Height"])
        links.new(bump.outputs["Normal"], bsdf.inputs["Normal"])
    links.new(fade.outputs["Value"], bsdf.inputs["Alpha"])
    return mat


def build_facial_hair(recipe: AvatarRecipe, anatomy: Anatomy) -> list[bpy.types.Object]:
    """Create ``recipe.facial_hair`` (one of ``FACIAL_HAIR``) on the face; ``"none"`` gives []."""
    style = recipe.facial_hair
    if style not in FACIAL_HAIR:
        raise ValueError(f"unknown facial hair {style!r}; expected one of {FACIAL_HAIR}")
    if style == "none":
        return []
    neutral = head_surface(dataclasses.replace(recipe, expression="neutral"), anatomy)
    surface = head_surface(recipe, anatomy)
    mask = _masks(neutral, anatomy)[style]
    normals = vertex_normals(surface.vertices, surface.faces)
    rng = np.random.default_rng([recipe.seed, recipe.subject_id, 7])
    jitter = rng.uniform(0.65, 1.3, len(mask))
    down = np.zeros_like(normals)
    if style in ("beard", "goatee"):
        # Hair on the jaw hangs: lean the offset downwards below the mouth.
        below = smoothstep(anatomy.mouth_centre[2] - 0.02, anatomy.chin[2], neutral.vertices[:, 2])
        down[:, 2] = -0.6 * below
    direction = normals + down
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    sides = 1.0 - 0.5 * smoothstep(50.0, 90.0, np.degrees(np.abs(neutral.azimuth))) if style == "beard" else 1.0
    thickness = BASE_OFFSET + THICKNESS[style] * mask * jitter * smoothstep(0.0, 0.6, mask) * sides
    shell = surface.vertices + direction * thickness[:, None]
    keep = [f for f in surface.faces if max(mask[list(f)]) > 0.05]
    used = np.unique(np.concatenate([np.asarray(f) for f in keep]))
    remap = np.full(len(shell), -1)
    remap[used] = np.arange(len(used))
    obj = mesh_object(style, shell[used], [tuple(remap[list(f)]) for f in keep])
    coverage = obj.data.attributes.new(COVERAGE_ATTRIBUTE, "FLOAT", "POINT")
    coverage.data.foreach_set("value", np.clip(mask[used], 0.0, 1.0).astype(np.float32))
    assign(obj, _hair_material(recipe, stubble=style == "stubble"))
    return [obj]
