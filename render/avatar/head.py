"""The procedural head of a synthetic avatar: skin, ears, eyes, eyebrows, mouth interior (bpy).

Paper §4.1 / appendix B.2: the synthetic corpus is "a random combination of identities,
expressions, hairstyles, and accessories". This module builds the identity and the expression:
the skin surface is a lofted mesh (horizontal rings of superellipses from the neck to the crown,
the jaw rings slanted from chin to jaw angle) sculpted vertex-by-vertex with numpy (nose, eye
sockets and lids, brow ridge, cheekbones, lips, chin), so that every parameter of
``recipe.shape`` and the expression move the geometry. The skin colour, the lip tint and the
mouth interior are a per-vertex colour attribute read by the skin material.

:func:`head_surface` is pure numpy so that other parts (facial hair, tests) can rebuild the exact
surface; :func:`build_head` turns it into Blender objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np
from mathutils import Matrix

from render.anatomy import Anatomy
from render.avatar.geometry import mesh_object, smoothstep, uv_sphere
from render.avatar.materials import assign, principled, srgb_to_linear
from render.recipe import AvatarRecipe

AZIMUTH_SEGMENTS = 128
"""Vertices per ring of the skin; denser on the face than at the back of the head."""
MOUTH_DEPTH = 0.08
"""How far the skin between parted lips is pushed in, behind the mouth interior."""
SKIN_COLOUR_ATTRIBUTE = "skin_colour"
"""Per-vertex linear RGBA colour of the skin mesh (skin, lips, mouth interior, teeth)."""

_LOWER_SUBDIVISIONS = (2, 3, 3, 4, 12, 12)
"""Rings between consecutive lower keyframes: neck bottom -> neck -> under the jaw -> jaw line ->
chin -> mouth -> first ring of the skull ellipsoid (just below the nose)."""


@dataclass(frozen=True)
class HeadSurface:
    """The skin mesh in world units: ``vertices`` (N, 3), ``faces`` quads and pole triangles."""

    vertices: np.ndarray
    """(N, 3) float64 positions."""
    faces: list[tuple[int, ...]]
    colours: np.ndarray
    """(N, 3) float64 linear RGB per vertex."""
    azimuth: np.ndarray
    """(N,) angle around +Z of each vertex's ring parameter, 0 at the face (-Y), +pi/2 at +X."""
    rings: int
    """Number of rings (the two pole vertices come last)."""
    above_neck: np.ndarray
    """(N,) 0 on the neck rings (inside the body's neck), rising to 1 at the jaw line."""


def _gauss(d2: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * d2 / (sigma * sigma))


def _catmull_rom(keys: np.ndarray, counts: list[int]) -> np.ndarray:
    """Interpolate keyframe rows (K, P) through every key; ``counts[i]`` rows from key i to i+1."""
    padded = np.vstack([2 * keys[0] - keys[1], keys, 2 * keys[-1] - keys[-2]])
    rows = []
    for i, n in enumerate(counts):
        p0, p1, p2, p3 = padded[i], padded[i + 1], padded[i + 2], padded[i + 3]
        t = (np.arange(n) / n)[:, None]
        rows.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                           + (3 * p1 - p0 - 3 * p2 + p3) * t**3))
    rows.append(keys[-1:])
    return np.vstack(rows)


def _ring_profile(recipe: AvatarRecipe, a: Anatomy) -> np.ndarray:
    """Ring parameters (R, 9): z_front, z_side, z_back, y_front, y_back, y_axis, half width,
    front superellipse exponent, chin exponent; from the neck (row 0) to just below the crown."""
    s = recipe.shape
    man = recipe.gender == "man"
    _, cy, cz = a.cranium_centre
    rx, ry, rz = a.cranium_radii
    ny, nr = a.neck_centre[1], a.neck_radius
    chin_y, chin_z = a.chin[1], a.chin[2]
    mouth_y, mouth_z = a.mouth_centre[1], a.mouth_centre[2]
    gonion_z = mouth_z - 0.05 - 0.02 * s["jaw_length"]
    chin_q = 1.5 - 0.25 * s["chin"] - (0.25 if man else 0.0)
    jaw = a.jaw_width

    def nape(elevation_deg: float) -> tuple[float, float]:
        """(z, y) of the back of the skull ellipse at an elevation below its equator."""
        e = np.radians(elevation_deg)
        return cz + rz * np.sin(e), max(cy + ry * np.cos(e), ny + nr + 0.02)

    (z_chin_back, y_chin_back), (z_mouth_back, y_mouth_back) = nape(-62.0), nape(-45.0)
    lower = np.array([
        # z_front, z_side, z_back, y_front, y_back, y_axis, half width, n_front, chin q
        [a.neck_top_z - 0.16] * 3 + [ny - 0.95 * nr, ny + 0.95 * nr, ny, 0.95 * nr, 2.0, 2.0],
        [a.neck_top_z - 0.08] * 3 + [ny - 0.96 * nr, ny + 0.96 * nr, ny, 0.96 * nr, 2.0, 2.0],
        [chin_z + 0.035, gonion_z - 0.035, a.neck_top_z - 0.10, chin_y + 0.14, ny + 0.94 * nr, ny - 0.04,
         1.05 * nr + 0.01, 2.2, chin_q],
        [chin_z, gonion_z, a.neck_top_z - 0.05, chin_y + 0.035, ny + 0.97 * nr, cy - 0.03, 0.98 * jaw, 2.4, chin_q],
        [chin_z + 0.055, gonion_z + 0.05, z_chin_back, chin_y, y_chin_back, cy - 0.02, 1.04 * jaw, 2.4, chin_q],
        [mouth_z, mouth_z + 0.04, z_mouth_back, mouth_y + 0.02, y_mouth_back, cy, 0.5 * (1.12 * jaw + 0.9 * rx), 2.4, 2.0],
    ])
    z0 = a.nose_tip[2] - 0.015
    e0 = np.arcsin(np.clip((z0 - cz) / rz, -0.99, 0.99))
    face_keys, crown_keys = np.linspace(e0, np.radians(38.0), 9), np.linspace(np.radians(38.0), np.radians(84.0), 6)[1:]
    elevations = np.concatenate([face_keys, crown_keys])
    ce, se = np.cos(elevations), np.sin(elevations)
    crown = ce ** np.where(se > 0.0, 0.8, 1.0)
    n_front = 2.0 + 0.4 * (1.0 - smoothstep(0.15, 0.55, se))
    cranium = np.stack([cz + rz * se] * 3 + [cy - ry * crown, cy + ry * crown, np.full_like(ce, cy), rx * crown,
                                               n_front, np.full_like(ce, 2.0)], axis=1)
    keys = np.vstack([lower, cranium])
    counts = [*_LOWER_SUBDIVISIONS, *[6] * (len(face_keys) - 1), *[2] * len(crown_keys)]
    return _catmull_rom(keys, counts)


def _azimuths() -> np.ndarray:
    u = np.arange(AZIMUTH_SEGMENTS) / AZIMUTH_SEGMENTS * 2.0 - 1.0
    return np.pi * (0.4 * u + 0.6 * u * np.abs(u))


def _loft(profile: np.ndarray, az: np.ndarray) -> np.ndarray:
    """Vertices (R * A, 3) of the rings of ``profile`` at azimuths ``az``."""
    zf, zs, zb, yf, yb, ya, w, nf, q = (profile[:, i:i + 1] for i in range(9))
    c, sn = np.cos(az)[None, :], np.sin(az)[None, :]
    cf, cb = np.clip(c, 0.0, 1.0), np.clip(-c, 0.0, 1.0)
    front = c >= 0.0
    x = np.where(front, w * np.sign(sn) * np.abs(sn) ** (2.0 / nf), w * sn)
    y = np.where(front, ya - (ya - yf) * cf ** (2.0 / nf), ya + (yb - ya) * cb)
    z = zs + (zf - zs) * cf**q + (zb - zs) * cb**2
    return np.stack([x, y, z], axis=-1).reshape(-1, 3)


def mouth_gap(recipe: AvatarRecipe) -> float:
    """How far the jaw drops between the lips for the recipe's expression (world units)."""
    k = recipe.expression_strength
    return {"smile": 0.022 * k, "open_mouth": 0.10 * k}.get(recipe.expression, 0.0)


def _eye_opening(recipe: AvatarRecipe) -> tuple[float, float]:
    """Upper and lower lid heights of the eye opening, in eye radii."""
    k = recipe.expression_strength
    up, down = (0.52, 0.36) if recipe.gender == "man" else (0.58, 0.38)
    if recipe.expression == "raised_brows":
        up *= 1.0 + 0.35 * k
    elif recipe.expression == "smile":
        down *= 1.0 - 0.35 * k
    return up, down


def _sculpt_identity(recipe: AvatarRecipe, a: Anatomy, v: np.ndarray, front: np.ndarray, midline: np.ndarray) -> np.ndarray:
    """Brow ridge, cheekbones, chin, nose and lips, in place on ``v`` (N, 3); ``midline`` (N,) marks
    the vertices on the face's vertical midline. Returns the lip weights (N, 2): (across the
    mouth, on the lips)."""
    s, man = recipe.shape, recipe.gender == "man"
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    eye_z = a.eye_left[2]
    brow = 0.014 + 0.012 * s["brow_ridge"] + (0.01 if man else 0.0)
    y -= front * brow * _gauss((z - (a.brow_z - 0.012)) ** 2, 0.03) * (1 - smoothstep(0.22, 0.34, np.abs(x)))
    cheek = 0.018 + 0.014 * s["cheeks"]
    for side in (1.0, -1.0):
        g = front * _gauss((x - side * 0.22) ** 2 + (z - eye_z + 0.1) ** 2, 0.065)
        y -= cheek * g
        x += side * 0.6 * cheek * g
    y -= front * (0.012 + 0.012 * s["chin"]) * _gauss(x**2 / 1.6 + (z - a.chin[2] - 0.05) ** 2, 0.035)

    # Nose: a ridge from the root between the eyes to the tip (placed on anatomy.nose_tip), then
    # back under the tip to the upper lip, with two wings.
    tip_y, tip_z = a.nose_tip[1], a.nose_tip[2]
    mid = np.flatnonzero(midline)
    mid = mid[np.argsort(z[mid])]
    p_tip = max(float(np.interp(tip_z, z[mid], y[mid])) - tip_y, 0.02)
    root_z, base_z = eye_z + 0.035, tip_z - 0.05
    p_root = 0.01 + 0.01 * s["nose_bridge"]
    t = np.clip((root_z - z) / (root_z - tip_z), 0.0, 1.0)
    above = p_root + (p_tip - p_root) * t**1.4 + 0.012 * s["nose_bridge"] * np.sin(np.pi * t) * (1 - t)
    below = p_tip * np.clip(1.0 - ((tip_z - z) / (tip_z - base_z)) ** 2, 0.0, 1.0)
    height = np.where(z >= tip_z, above, below) * smoothstep(root_z + 0.04, root_z - 0.01, z)
    width = a.nose_width * (0.22 + 0.3 * t)
    y -= front * height * np.exp(-0.5 * x**2 / width**2)
    y -= front * 0.45 * p_tip * _gauss((np.abs(x) - 0.55 * a.nose_width) ** 2 + (z - tip_z + 0.022) ** 2, 0.018)

    # Lips: upper and lower lip bulges thinning to the corners, a groove on the mouth line.
    mz, k = a.mouth_centre[2], recipe.expression_strength
    half = 0.5 * a.mouth_width * (1.0 + (0.15 * k if recipe.expression == "smile" else 0.0))
    across = np.clip((x / half) ** 2, 0.0, 1.0)
    lip_x = (1.0 - across) ** 0.7
    lip = 0.012 + 0.009 * s["lip_fullness"] + (0.0 if man else 0.005)
    upper = _gauss((z - mz - 0.015 + 0.01 * across) ** 2, 0.010 * (1.0 - 0.4 * across)) * lip_x
    lower = _gauss((z - mz + 0.019 - 0.012 * across) ** 2, 0.013 * (1.0 - 0.4 * across)) * lip_x
    y -= front * lip * (upper + 1.15 * lower)
    y += front * 0.012 * _gauss((z - mz) ** 2, 0.006) * lip_x
    return np.stack([lip_x, np.clip(1.6 * (upper + lower), 0.0, 1.0) * front], axis=1)


def _sculpt_eyes(recipe: AvatarRecipe, a: Anatomy, v: np.ndarray, front: np.ndarray) -> None:
    """Eye sockets and lids in place on ``v``: the lid surface wraps each eyeball just in front of
    it, and inside the almond-shaped opening the skin is pushed behind the eyeball's front."""
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    r_eye = a.eye_radius
    up, down = _eye_opening(recipe)
    for e in (a.eye_left, a.eye_right):
        dx, dz = x - e[0], z - e[2]
        rho2 = dx**2 + dz**2
        local = front * (np.abs(dx) < 3 * r_eye) * (np.abs(dz) < 3 * r_eye)
        y += local * 0.05 * _gauss(rho2, 1.15 * r_eye)
        lid_r = 1.07 * r_eye + 0.004
        on_lid = (rho2 < lid_r**2) & (local > 0)
        lid_y = e[1] - np.sqrt(np.clip(lid_r**2 - rho2, 0.0, None))
        y[on_lid] = np.minimum(y, lid_y)[on_lid]
        u = np.clip(1.0 - (dx / (0.98 * r_eye)) ** 2, 0.0, None)
        tilt = 0.12 * np.sign(e[0]) * dx
        inside = (dz - tilt < up * r_eye * u) & (dz - tilt > -down * r_eye * u) & on_lid
        y[inside] = e[1] + 0.2 * r_eye


def _express(recipe: AvatarRecipe, a: Anatomy, v: np.ndarray, front: np.ndarray, lip_x: np.ndarray,
             above_neck: np.ndarray, colours: np.ndarray) -> None:
    """Deform ``v`` (and colour the parted lips) in place for ``recipe.expression``."""
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    kind, k = recipe.expression, recipe.expression_strength
    mz = a.mouth_centre[2]
    if kind == "smile":
        # The mouth line bends up into a U, the corners rise and recede, the cheeks lift.
        half = 0.5 * a.mouth_width * (1.0 + 0.15 * k)
        curve = front * np.clip(x / half, -1.3, 1.3) ** 2 * _gauss((z - mz) ** 2, 0.05)
        z += 0.022 * k * curve
        for side in (1.0, -1.0):
            g = front * _gauss((x - side * half) ** 2 + (z - mz) ** 2, 0.035)
            lift = front * _gauss((x - side * 0.17) ** 2 + (z - mz - 0.08) ** 2, 0.05)
            z += k * (0.02 * g + 0.02 * lift)
            y += k * (0.014 * g - 0.016 * lift)
    if kind == "raised_brows":
        band = (1 - smoothstep(0.25, 0.4, np.abs(x))) * (z > a.eye_left[2] + 0.03)
        z += 0.035 * k * front * _gauss((z - a.brow_z) ** 2, 0.08) * band
        wrinkles = front * smoothstep(a.brow_z + 0.04, a.brow_z + 0.07, z) * smoothstep(a.brow_z + 0.22, a.brow_z + 0.16, z)
        y += 0.004 * k * wrinkles * np.sin(2 * np.pi * (z - a.brow_z) / 0.045) ** 2 * (np.abs(x) < 0.22)
    gap = mouth_gap(recipe)
    if gap > 0.0:
        # Everything below the mouth line drops with the jaw; the stretched band between the lips
        # is pushed in behind the mouth interior.
        below = smoothstep(mz + 0.012, mz - 0.012, z)
        jaw = smoothstep(a.ear_left[1] + 0.02, a.ear_left[1] - 0.25, y) * above_neck
        cavity = 4.0 * below * (1.0 - below) * lip_x * front
        z -= gap * below * jaw
        y += MOUTH_DEPTH * cavity
        if kind == "open_mouth":
            x *= 1.0 - 0.12 * k * lip_x * front * _gauss((z - mz + 0.5 * gap) ** 2, 0.06)
        inner = np.array([0.05, 0.012, 0.01]) if kind == "open_mouth" else np.array([0.8, 0.78, 0.72])
        weight = np.clip(2.0 * cavity - 0.6, 0.0, 1.0)[:, None]
        colours[:] = colours * (1.0 - weight) + inner * weight


def _lofted_faces(rings: int) -> list[tuple[int, ...]]:
    """Quads between consecutive rings, then triangle fans to the bottom and top pole vertices."""
    n = AZIMUTH_SEGMENTS
    faces = [(r * n + j, r * n + (j + 1) % n, (r + 1) * n + (j + 1) % n, (r + 1) * n + j)
             for r in range(rings - 1) for j in range(n)]
    bottom, top, last = rings * n, rings * n + 1, (rings - 1) * n
    faces += [(bottom, (j + 1) % n, j) for j in range(n)]
    faces += [(last + j, last + (j + 1) % n, top) for j in range(n)]
    return faces


def head_surface(recipe: AvatarRecipe, anatomy: Anatomy) -> HeadSurface:
    """Sculpt the skin surface of ``recipe`` (pure numpy; deterministic)."""
    a = anatomy
    profile = _ring_profile(recipe, a)
    rings = len(profile)
    azimuth = np.tile(_azimuths(), rings)
    v = _loft(profile, _azimuths())
    front = smoothstep(0.1, 0.5, np.cos(azimuth))
    above_neck = smoothstep(_LOWER_SUBDIVISIONS[0], sum(_LOWER_SUBDIVISIONS[:3]), np.arange(len(v)) // AZIMUTH_SEGMENTS)

    lips = _sculpt_identity(recipe, a, v, front, azimuth == 0.0)
    _sculpt_eyes(recipe, a, v, front)

    man = recipe.gender == "man"
    colours = np.tile(np.array([srgb_to_linear(c) for c in recipe.skin.rgb]), (len(v), 1))
    lip_tint = np.array([0.82, 0.52, 0.52]) * (0.95 if man else 0.85)
    colours *= 1.0 - lips[:, 1:] + lips[:, 1:] * lip_tint
    nostrils = front * _gauss((np.abs(v[:, 0]) - 0.28 * a.nose_width) ** 2 + (v[:, 2] - a.nose_tip[2] + 0.03) ** 2, 0.01)
    colours *= 1.0 - 0.7 * np.clip(2.0 * nostrils, 0.0, 1.0)[:, None]

    _express(recipe, a, v, front, lips[:, 0], above_neck, colours)

    vertices = np.vstack([v, [[0.0, a.neck_centre[1], profile[0, 0] - 0.02]],
                          [[a.cranium_centre[0], a.cranium_centre[1], a.head_top_z]]])
    return HeadSurface(vertices, _lofted_faces(rings), np.vstack([colours, colours[:2]]),
                       np.concatenate([azimuth, [0.0, 0.0]]), rings, np.concatenate([above_neck, [0.0, 1.0]]))


def _paint(obj: bpy.types.Object, colours: np.ndarray) -> None:
    """Store linear RGB ``colours`` (N, 3) as the skin colour attribute of ``obj``'s vertices."""
    attribute = obj.data.color_attributes.new(SKIN_COLOUR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
    rgba = np.hstack([colours, np.ones((len(colours), 1))]).astype(np.float32)
    attribute.data.foreach_set("color", rgba.ravel())


def _mouth(recipe: AvatarRecipe, a: Anatomy) -> list[bpy.types.Object]:
    """Dark mouth interior and the upper teeth behind parted lips (smile, open mouth); else []."""
    gap = mouth_gap(recipe)
    if gap == 0.0:
        return []
    verts, faces, _ = uv_sphere(24, 12)
    half = 0.5 * a.mouth_width
    my, mz = a.mouth_centre[1], a.mouth_centre[2]
    parts = (("mouth_interior", (0.85 * half, 0.04, 0.5 * gap + 0.015), (my + 0.035, mz - 0.5 * gap), (0.12, 0.03, 0.03)),
             ("teeth", (0.7 * half, 0.025, 0.014), (my + 0.02, mz - 0.004), (0.92, 0.9, 0.84)))
    objects = []
    for name, radii, (y, z), rgb in parts:
        obj = mesh_object(name, verts * np.array(radii) + np.array([0.0, y, z]), faces)
        assign(obj, principled(f"{name}_{recipe.subject_id}", rgb, roughness=0.35 if name == "teeth" else 0.7))
        objects.append(obj)
    return objects


def _skin_material(recipe: AvatarRecipe) -> bpy.types.Material:
    mat = principled(f"skin_{recipe.subject_id}", recipe.skin.rgb, roughness=0.5, subsurface=0.1)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    bsdf.subsurface_method = "BURLEY"
    bsdf.inputs["Subsurface Scale"].default_value = 0.015
    attribute = nodes.new("ShaderNodeAttribute")
    attribute.attribute_name = SKIN_COLOUR_ATTRIBUTE
    links.new(attribute.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _eye_material(recipe: AvatarRecipe) -> bpy.types.Material:
    """Sclera, iris (``recipe.eyes``) and pupil by the distance from the eyeball's -Y axis."""
    mat = principled(f"eye_{recipe.subject_id}", (0.9, 0.88, 0.85), roughness=0.15, coat=0.6)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    coords = nodes.new("ShaderNodeTexCoord")
    split = nodes.new("ShaderNodeSeparateXYZ")
    links.new(coords.outputs["Object"], split.inputs["Vector"])
    square_x, square_z, total, root = (nodes.new("ShaderNodeMath") for _ in range(4))
    square_x.operation = square_z.operation = "MULTIPLY"
    total.operation, root.operation = "ADD", "SQRT"
    links.new(split.outputs["X"], square_x.inputs[0])
    links.new(split.outputs["X"], square_x.inputs[1])
    links.new(split.outputs["Z"], square_z.inputs[0])
    links.new(split.outputs["Z"], square_z.inputs[1])
    links.new(square_x.outputs[0], total.inputs[0])
    links.new(square_z.outputs[0], total.inputs[1])
    links.new(total.outputs[0], root.inputs[0])
    ramp = nodes.new("ShaderNodeValToRGB")
    links.new(root.outputs[0], ramp.inputs["Fac"])
    iris = [srgb_to_linear(c) for c in recipe.eyes.rgb]
    stops = [(0.0, (0.005, 0.005, 0.005)), (0.2, (0.005, 0.005, 0.005)), (0.23, iris),
             (0.46, [0.55 * c for c in iris]), (0.52, [srgb_to_linear(c) for c in (0.9, 0.88, 0.85)])]
    elements = ramp.color_ramp.elements
    elements[0].position, elements[1].position = stops[0][0], stops[-1][0]
    for position, _ in stops[1:-1]:
        elements.new(position)
    for element, (_, rgb) in zip(sorted(elements, key=lambda el: el.position), stops):
        element.color = (*rgb, 1.0)
    links.new(ramp.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
    return mat


def _ears(recipe: AvatarRecipe, a: Anatomy, skin: bpy.types.Material) -> list[bpy.types.Object]:
    """Two ears: a flattened, cupped ellipsoid hinged at its front edge, angled out by ``a.ear_angle``."""
    verts, faces, params = uv_sphere(20, 14)
    elev = params[:, 1]
    h = a.ear_size
    # Local frame: X outwards from the head, Y backwards, Z up (sphere poles on +-Y = front/back edge).
    local = verts * np.array([0.13 * h, 0.55 * h, 1.0 * h])
    outer = np.clip(verts[:, 0], 0.0, None) * np.cos(elev) ** 2
    local[:, 0] -= 0.2 * h * outer * (np.abs(verts[:, 1]) < 0.75)
    local[:, 1] += 0.55 * h - 0.12 * h * verts[:, 2] ** 2
    angle = a.ear_angle
    objects = []
    for side, centre in ((1.0, a.ear_left), (-1.0, a.ear_right)):
        ca, sa = np.cos(angle), np.sin(angle)
        x_out = local[:, 0] * ca + local[:, 1] * sa
        y_back = -local[:, 0] * sa + local[:, 1] * ca
        world = np.stack([side * (x_out + abs(centre[0]) - 0.005), y_back + centre[1] - 0.45 * h, local[:, 2] + centre[2]], axis=1)
        ear_faces = faces if side > 0 else [f[::-1] for f in faces]
        obj = mesh_object("ear_L" if side > 0 else "ear_R", world, ear_faces)
        _paint(obj, np.tile([srgb_to_linear(c) for c in recipe.skin.rgb], (len(world), 1)))
        assign(obj, skin)
        objects.append(obj)
    return objects


def _eyes(recipe: AvatarRecipe, a: Anatomy) -> list[bpy.types.Object]:
    verts, faces, _ = uv_sphere(32, 20)
    material = _eye_material(recipe)
    objects = []
    for name, centre in (("eye_L", a.eye_left), ("eye_R", a.eye_right)):
        obj = mesh_object(name, verts, faces)
        obj.matrix_world = Matrix.Translation(centre) @ Matrix.Scale(a.eye_radius, 4)
        assign(obj, material)
        objects.append(obj)
    return objects


def _surface_y(surface: HeadSurface, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Y of the front of the skin at (x, z) (M,), by inverse-distance weighting of 4 vertices."""
    front = np.cos(surface.azimuth) > 0.3
    fv = surface.vertices[front]
    d2 = (fv[None, :, 0] - x[:, None]) ** 2 + (fv[None, :, 2] - z[:, None]) ** 2
    nearest = np.argsort(d2, axis=1)[:, :4]
    w = 1.0 / (np.take_along_axis(d2, nearest, axis=1) + 1e-6)
    return (fv[nearest, 1] * w).sum(axis=1) / w.sum(axis=1)


def _eyebrows(recipe: AvatarRecipe, a: Anatomy, surface: HeadSurface) -> list[bpy.types.Object]:
    """Two arched, tapering strips (hair colour) lying on the brow ridge at ``anatomy.brow_z``."""
    man = recipe.gender == "man"
    raise_z = 0.03 * recipe.expression_strength if recipe.expression == "raised_brows" else 0.0
    material = principled(f"eyebrow_{recipe.subject_id}", recipe.hair.rgb, roughness=0.8)
    t = np.linspace(0.0, 1.0, 14)
    thickness = (0.026 if man else 0.018) * (1.0 - 0.55 * t) + 0.006
    arch = (0.022 + 0.012 * raise_z / 0.03) * np.sin(np.pi * np.clip(t * 1.25, 0, 1)) - 0.02 * t**3
    objects = []
    for name, side, eye in (("eyebrow_L", 1.0, a.eye_left), ("eyebrow_R", -1.0, a.eye_right)):
        x = side * (abs(eye[0]) - 1.15 * a.eye_radius + t * 2.6 * a.eye_radius)
        centre_z = a.brow_z + raise_z + arch - 0.02
        rows = []
        for dz, dy in ((0.5, -0.004), (-0.5, -0.004), (0.5, 0.006), (-0.5, 0.006)):
            zz = centre_z + dz * thickness
            rows.append(np.stack([x, _surface_y(surface, x, zz) + dy - 0.004, zz], axis=1))
        verts = np.vstack(rows)
        n = len(t)
        faces = []
        for i in range(n - 1):
            for r0, r1 in ((0, 1), (1, 3), (3, 2), (2, 0)):
                faces.append((r0 * n + i, r0 * n + i + 1, r1 * n + i + 1, r1 * n + i))
        faces += [(0, 2 * n, 3 * n, n), (n - 1, 2 * n - 1, 4 * n - 1, 3 * n - 1)]
        obj = mesh_object(name, verts, faces)
        assign(obj, material)
        objects.append(obj)
    return objects


def build_head(recipe: AvatarRecipe, anatomy: Anatomy) -> list[bpy.types.Object]:
    """Create the skin ("head"), ears, eyeballs and eyebrows of ``recipe`` in the current scene."""
    surface = head_surface(recipe, anatomy)
    head = mesh_object("head", surface.vertices, surface.faces)
    _paint(head, surface.colours)
    skin = _skin_material(recipe)
    assign(head, skin)
    return [head, *_ears(recipe, anatomy, skin), *_eyes(recipe, anatomy), *_eyebrows(recipe, anatomy, surface),
            *_mouth(recipe, anatomy)]
