"""Accessories worn by the avatar: glasses, sunglasses, hats and earrings (bpy).

Paper §4.1 / appendix B.2: the synthetic avatars are random combinations of identities,
expressions, hairstyles and accessories. One accessory of ``render.recipe.ACCESSORIES`` per
avatar, in the style ``recipe.accessory_style`` and colour ``recipe.accessory_colour``:

* ``glasses``    (round | rectangular) frames around ``anatomy.eye_left/right``, a bridge, temples
  running back over the sides of the skull to the ears; nearly clear lenses;
* ``sunglasses`` (aviator | rectangular) thin or thick frames with dark glossy lenses;
* ``hat``        (beanie | cap) a knitted dome with a folded cuff, or a smooth dome with a brim
  towards -Y; both sit on top of the hair (``render.avatar.hair.hair_thickness``);
* ``earrings``   (studs | hoops) metallic, at the ear lobes.

Every piece is placed from the landmarks of :class:`render.anatomy.Anatomy`.
"""

from __future__ import annotations

import bpy
import numpy as np

from render.anatomy import Anatomy
from render.avatar.geometry import grid_faces, mesh_object, tube_mesh
from render.avatar.hair import Scalp, direction, hair_thickness
from render.avatar.materials import principled
from render.recipe import ACCESSORIES, ACCESSORY_STYLES, AvatarRecipe

LENS_GAP = 0.045
"""Distance of the lens plane in front of the face's front (``anatomy.face_front_y``)."""
_METALS = ("gold", "silver")


def _frame_material(recipe: AvatarRecipe, name: str) -> bpy.types.Material:
    metal = recipe.accessory_colour.name in _METALS
    return principled(f"{name}_{recipe.accessory_colour.name}", recipe.accessory_colour.rgb,
                      roughness=0.2 if metal else 0.3, metallic=1.0 if metal else 0.0, coat=0.0 if metal else 0.6)


def lens_outline(style: str, eye_radius: float, points: int = 40) -> np.ndarray:
    """Lens outline (points, 2) as (x outwards from the nose, z up), centred on its mean."""
    t = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    size = max(eye_radius, 0.05)
    if style == "round":
        outline = 1.35 * size * np.stack([c, s], axis=-1)
    elif style == "rectangular":
        e = 2.0 / 6.0  # superellipse exponent 6: a rounded rectangle
        outline = size * np.stack([1.7 * np.sign(c) * np.abs(c) ** e, 1.1 * np.sign(s) * np.abs(s) ** e], axis=-1)
    elif style == "aviator":
        lower = s < 0.0
        x = 1.55 * size * c - np.where(lower, 0.35 * size * s * (c < 0.0), 0.0)
        z = size * s * np.where(lower, 1.7, 1.05)
        outline = np.stack([x, z], axis=-1)
    else:
        raise ValueError(f"unknown lens style {style!r}; expected round, rectangular or aviator")
    return outline - outline.mean(axis=0)


def _head_half_width(anatomy: Anatomy, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Half width of the cranium ellipsoid at (y, z) (0 outside it)."""
    (_, cy, cz), (rx, ry, rz) = anatomy.cranium_centre, anatomy.cranium_radii
    return rx * np.sqrt(np.clip(1.0 - ((y - cy) / ry) ** 2 - ((z - cz) / rz) ** 2, 0.0, None))


def _eyewear(recipe: AvatarRecipe, anatomy: Anatomy, sunglasses: bool) -> list[bpy.types.Object]:
    """Two lenses in frames, a bridge and two temples back to the ears."""
    kind = "sunglasses" if sunglasses else "glasses"
    style = recipe.accessory_style
    frame_material = _frame_material(recipe, kind)
    if sunglasses:
        lens_material = principled("sunglass_lens", (0.03, 0.03, 0.04), roughness=0.05, coat=1.0)
    else:
        lens_material = principled("glass_lens", (0.9, 0.95, 1.0), roughness=0.05, alpha=0.12)
    wire = 0.006 if style == "aviator" else 0.0095
    lens_y = anatomy.face_front_y - LENS_GAP
    outline = lens_outline(style, anatomy.eye_radius)
    objects = []
    inner, outer = {}, {}
    for side, eye in ((1.0, anatomy.eye_left), (-1.0, anatomy.eye_right)):
        x = eye[0] + side * outline[:, 0]
        z = eye[2] + outline[:, 1]
        wrap = 0.25 * (side * (x - eye[0])) ** 2  # lenses curve back a little towards the temples
        ring = np.stack([x, lens_y + wrap, z], axis=-1)  # (P, 3)
        vertices, faces = tube_mesh(ring, wire, sides=8, closed=True)
        name = "left" if side > 0 else "right"
        objects.append(mesh_object(f"{kind}_frame_{name}", vertices, faces, frame_material))
        lens = np.concatenate([np.array([[eye[0], lens_y + 0.002, eye[2]]]), ring + [0.0, 0.002, 0.0]])
        fan = [[0, 1 + (j + 1) % len(ring), 1 + j] for j in range(len(ring))]
        objects.append(mesh_object(f"{kind}_lens_{name}", lens, fan, lens_material))
        inner[side] = ring[np.argmin(side * ring[:, 0])]
        outer[side] = ring[np.argmax(side * ring[:, 0])]
    bars = [np.stack([inner[-1.0], (inner[-1.0] + inner[1.0]) / 2 + [0.0, -0.01, 0.02], inner[1.0]])]
    if style == "aviator":
        top = anatomy.eye_left[2] + outline[:, 1].max() - 0.005
        eye_x = anatomy.eye_left[0]
        bars.append(np.array([[-eye_x, lens_y, top], [0.0, lens_y - 0.005, top + 0.004], [eye_x, lens_y, top]]))
    for index, bar in enumerate(bars):
        t = np.linspace(0.0, 1.0, 10)[:, None]
        curve = (1 - t) ** 2 * bar[0] + 2 * (1 - t) * t * bar[1] + t**2 * bar[2]
        vertices, faces = tube_mesh(curve, wire * 0.9, sides=8)
        objects.append(mesh_object(f"{kind}_bridge_{index}", vertices, faces, frame_material))
    for side, ear in ((1.0, anatomy.ear_left), (-1.0, anatomy.ear_right)):
        start = outer[side] + [0.0, 0.0, 0.015]
        rest_y, rest_z = ear[1] - 0.3 * anatomy.ear_size, ear[2] + 0.75 * anatomy.ear_size
        t = np.linspace(0.0, 1.0, 14)
        y = start[1] + (rest_y - start[1]) * t
        z = start[2] + (rest_z - start[2]) * t
        x = np.maximum(np.abs(start[0]) + (abs(ear[0]) - abs(start[0])) * t, _head_half_width(anatomy, y, z) + 0.03)
        hook_t = np.linspace(0.0, 1.0, 6)[1:]
        hook = np.stack([np.full_like(hook_t, x[-1] - 0.01 * hook_t), rest_y + 0.5 * anatomy.ear_size * hook_t,
                         rest_z - 0.35 * anatomy.ear_size * hook_t**2], axis=-1)
        path = np.concatenate([np.stack([side * x, y, z], axis=-1), hook * [side, 1.0, 1.0]])
        vertices, faces = tube_mesh(path, wire * 0.85, sides=8)
        objects.append(mesh_object(f"{kind}_temple_{'left' if side > 0 else 'right'}", vertices, faces, frame_material))
    return objects


def _hat(recipe: AvatarRecipe, anatomy: Anatomy) -> list[bpy.types.Object]:
    """A beanie (ribbed dome + folded cuff) or a cap (smooth dome + brim towards -Y) over the hair."""
    scalp = Scalp(anatomy)
    cz, rz = anatomy.cranium_centre[2], anatomy.cranium_radii[2]
    lift = hair_thickness(recipe) + 0.02
    beanie = recipe.accessory_style == "beanie"
    front = (anatomy.brow_z + (0.08 if beanie else 0.11) - cz) / rz
    rim_at = np.array([front, (anatomy.ear_left[2] + 0.9 * anatomy.ear_size - cz) / rz, (0.05 if beanie else 0.12)])
    azimuth = np.linspace(-np.pi, np.pi, 72, endpoint=False)  # (A,)
    rim = np.interp(np.abs(azimuth) / np.pi, [0.0, 0.5, 1.0], rim_at)
    rows = np.linspace(0.0, 1.0, 16)[:, None]  # 0 = crown, 1 = rim
    height = 0.999 + rows * (rim[None] - 0.999)  # (R, A)
    u = direction(np.broadcast_to(azimuth, height.shape), height)
    knit = 0.006 * np.cos(40.0 * azimuth)[None] if beanie else 0.0
    slouch = (0.05 if beanie else 0.015) * (1.0 - rows) ** 2
    dome = scalp.point(u, lift + knit + slouch).reshape(-1, 3)
    top = scalp.point(np.array([0.0, 0.0, 1.0]), lift + (0.05 if beanie else 0.015))[None]
    columns = len(azimuth)
    faces = [list(q + 1) for q in grid_faces(len(rows), columns, wrap=True)]
    faces += [[0, 1 + (j + 1) % columns, 1 + j] for j in range(columns)]
    material = principled(f"hat_{recipe.accessory_colour.name}", recipe.accessory_colour.rgb, roughness=0.9 if beanie else 0.6)
    objects = [mesh_object(f"hat_{recipe.accessory_style}", np.concatenate([top, dome]), faces, material)]
    edge = u[-1]  # (A, 3) rim directions
    if beanie:
        band = 0.16
        levels = [(0.0, lift), (0.0, lift + 0.025), (band, lift + 0.03), (band, lift)]
        rings = [scalp.point(direction(azimuth, rim + dz), off + knit[0]) for dz, off in levels]
        cuff = np.concatenate(rings)
        cuff_faces = [list(q) for q in grid_faces(len(rings) + 1, columns, wrap=True) % len(cuff)]  # last row = first
        objects.append(mesh_object("hat_cuff", cuff, cuff_faces, material))
    else:
        keep = np.abs(azimuth) <= 0.42 * np.pi
        base = scalp.point(edge[keep], lift)  # (B, 3) front part of the rim
        reach = 0.22 * np.cos(np.clip(azimuth[keep] / (0.42 * np.pi), -1.0, 1.0) * np.pi / 2.0) ** 0.6 + 0.01
        out = base.copy()
        out[:, 1] -= reach
        out[:, 2] -= 0.04 * reach
        out[:, 0] *= 1.0 + 0.3 * reach
        layers = [base, out, out - [0.0, 0.0, 0.012], base - [0.0, 0.0, 0.012]]
        brim = np.concatenate(layers)
        brim_faces = [list(q) for q in grid_faces(len(layers) + 1, len(base), wrap=False) % len(brim)]  # closed section
        objects.append(mesh_object("hat_brim", brim, brim_faces, material))
        button = scalp.point(np.array([0.0, 0.0, 1.0]), lift + 0.02)
        vertices, faces = tube_mesh(np.stack([button - [0, 0, 0.01], button + [0, 0, 0.008]]), 0.018, sides=12)
        objects.append(mesh_object("hat_button", vertices, faces, material))
    return objects


def _earrings(recipe: AvatarRecipe, anatomy: Anatomy) -> list[bpy.types.Object]:
    """Metallic studs or hoops hanging from both ear lobes."""
    rgb = recipe.accessory_colour.rgb
    material = principled(f"earring_{recipe.accessory_colour.name}", rgb, roughness=0.15, metallic=1.0)
    objects = []
    for side, ear in ((1.0, anatomy.ear_left), (-1.0, anatomy.ear_right)):
        lobe = np.array([ear[0] + side * 0.025, ear[1] - 0.01, ear[2] - 0.8 * anatomy.ear_size])
        name = "left" if side > 0 else "right"
        if recipe.accessory_style == "studs":
            vertices, faces = tube_mesh(np.stack([lobe, lobe + [side * 0.012, 0.0, 0.0]]), 0.014, sides=12)
        else:
            theta = np.linspace(0.0, 2.0 * np.pi, 32, endpoint=False)
            radius = 0.045
            ring = lobe + np.stack([np.full_like(theta, side * 0.01), radius * np.sin(theta),
                                    radius * (np.cos(theta) - 1.0)], axis=-1)  # hangs from the lobe
            vertices, faces = tube_mesh(ring, 0.006, sides=8, closed=True)
        objects.append(mesh_object(f"earring_{name}", vertices, faces, material))
    return objects


def build_accessory(recipe: AvatarRecipe, anatomy: Anatomy) -> list[bpy.types.Object]:
    """Create ``recipe.accessory`` in ``recipe.accessory_style``; returns its objects ([] for none)."""
    accessory, style = recipe.accessory, recipe.accessory_style
    if accessory not in ACCESSORIES:
        raise ValueError(f"unknown accessory {accessory!r}; expected one of {', '.join(ACCESSORIES)}")
    if style not in ACCESSORY_STYLES[accessory]:
        raise ValueError(f"accessory {accessory!r} has no style {style!r}; "
                         f"expected one of {', '.join(ACCESSORY_STYLES[accessory])}")
    if accessory == "none":
        return []
    if accessory in ("glasses", "sunglasses"):
        return _eyewear(recipe, anatomy, sunglasses=accessory == "sunglasses")
    if accessory == "hat":
        return _hat(recipe, anatomy)
    return _earrings(recipe, anatomy)
