"""The body below the head and the garment on it (bpy).

Paper §4.1 / appendix B.2: the synthetic avatars are busts wearing random clothes. The body is a
neck cylinder (``anatomy.neck_radius``, from inside the head down into the torso) and an upper
torso lofted from superellipse rings between ``anatomy.bust_bottom_z`` (cut flat, the tri-plane
cube ends there) and the shoulder line, rising over the trapezius into the neck.

The garment of ``recipe.garment`` is a shell lofted over the same profile, offset by the fabric
thickness, with its own neckline and details, so each garment has its own silhouette:

* ``tshirt``          thin, crew neckline with a ribbed neck band;
* ``hoodie``          thick, a rolled hood lying behind the neck, two drawstrings on the chest;
* ``collared_shirt``  V opening, a collar stand with two collar flaps, a button placket;
* ``sweater``         thick knit with vertical ribs and a roll (turtle) neck over the neck.

The fabric colour is ``recipe.garment_colour`` with ``recipe.garment_pattern`` (solid, stripes,
checks, dots) in ``recipe.pattern_colour``, a procedural shader on object (= world) coordinates.
Azimuth ``alpha`` around the body is 0 at the front (-Y) and +pi/2 at the avatar's left (+X).
"""

from __future__ import annotations

import bpy
import numpy as np

from render.anatomy import Anatomy
from render.avatar.geometry import grid_faces, mesh_object, tube_mesh
from render.avatar.materials import principled
from render.recipe import GARMENTS, PATTERNS, AvatarRecipe

SEGMENTS = 64
"""Vertices per ring of the torso and garment lofts."""
ROWS = 26
"""Rings of the torso and garment lofts."""
SUPERELLIPSE = 2.6
"""Exponent of the torso cross-section (2: ellipse, larger: boxier)."""

# Torso profile keys: height above the shoulder line, half width as a fraction of
# anatomy.shoulder_half_width, half depth in world units. The last two keys close onto the neck.
_KEY_Z = np.array([-0.30, -0.08, -0.03, 0.0, 0.025, 0.05, 0.085, 0.115])
_KEY_WIDTH = np.array([0.93, 1.0, 0.985, 0.94, 0.85, 0.68, 0.45, 0.0])
_KEY_DEPTH = np.array([0.27, 0.28, 0.275, 0.26, 0.24, 0.22, 0.20, 0.0])

_GARMENT_SPEC: dict[str, tuple[float, float, float]] = {
    "tshirt": (0.012, 0.035, 0.045),
    "hoodie": (0.035, 0.06, 0.035),
    "collared_shirt": (0.014, 0.03, 0.06),
    "sweater": (0.026, 0.045, 0.0),
}
"""garment -> (fabric offset off the skin, neckline gap around the neck, front neckline drop)."""


class Torso:
    """The torso profile of one avatar: half width/depth as functions of height, and surface points."""

    def __init__(self, anatomy: Anatomy) -> None:
        self.anatomy = anatomy
        self.centre_y = anatomy.neck_centre[1] + 0.02
        neck = anatomy.neck_radius
        self.key_z = anatomy.shoulder_z + _KEY_Z
        self.key_z[0] = anatomy.bust_bottom_z
        self.key_width = _KEY_WIDTH * anatomy.shoulder_half_width
        self.key_depth = _KEY_DEPTH.copy()
        self.key_width[-1] = self.key_depth[-1] = 0.97 * neck
        self.top_z = float(self.key_z[-1])

    def half_axes(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Half width and half depth of the torso at heights ``z`` (any shape)."""
        return np.interp(z, self.key_z, self.key_width), np.interp(z, self.key_z, self.key_depth)

    def point(self, alpha: np.ndarray, z: np.ndarray, offset: float | np.ndarray = 0.0,
              min_radius: float = 0.0) -> np.ndarray:
        """Surface points (..., 3) at azimuth ``alpha`` and height ``z``, ``offset`` outside the skin."""
        a, b = self.half_axes(z)
        a, b = np.maximum(a + offset, min_radius), np.maximum(b + offset, min_radius)
        s, c = np.sin(alpha), np.cos(alpha)
        e = 2.0 / SUPERELLIPSE
        x = a * np.sign(s) * np.abs(s) ** e
        y = self.centre_y - b * np.sign(c) * np.abs(c) ** e
        return np.stack([x, y, np.broadcast_to(z, x.shape)], axis=-1)


def _loft(
    torso: Torso, top_z: np.ndarray, offset: float | np.ndarray, min_radius: float, cap_top: bool
) -> tuple[np.ndarray, list[list[int]]]:
    """A shell over the torso from the bust cut to ``top_z`` (SEGMENTS,) per column; bottom capped."""
    alpha = np.linspace(0.0, 2.0 * np.pi, SEGMENTS, endpoint=False)
    tau = np.linspace(0.0, 1.0, ROWS)[:, None]
    bottom = torso.anatomy.bust_bottom_z
    z = bottom + (top_z[None] - bottom) * (1.0 - (1.0 - tau) ** 1.6)  # (ROWS, SEGMENTS) denser at the top
    rings = torso.point(np.broadcast_to(alpha, z.shape), z, offset, min_radius).reshape(-1, 3)
    centre_bottom = np.array([[0.0, torso.centre_y, bottom]])
    vertices = np.concatenate([rings, centre_bottom])
    faces = [list(q) for q in grid_faces(ROWS, SEGMENTS, wrap=True)]
    hub = len(rings)
    faces += [[hub, (j + 1) % SEGMENTS, j] for j in range(SEGMENTS)]
    if cap_top:
        vertices = np.concatenate([vertices, [[0.0, torso.centre_y, float(top_z.max())]]])
        top = (ROWS - 1) * SEGMENTS
        faces += [[hub + 1, top + j, top + (j + 1) % SEGMENTS] for j in range(SEGMENTS)]
    return vertices, faces


def _pattern_material(recipe: AvatarRecipe) -> bpy.types.Material:
    """Fabric: ``garment_colour`` mixed with ``pattern_colour`` by a procedural pattern on object coordinates."""
    if recipe.garment_pattern not in PATTERNS:
        raise ValueError(f"unknown garment pattern {recipe.garment_pattern!r}; expected one of {', '.join(PATTERNS)}")
    mat = principled(f"garment_{recipe.garment}", recipe.garment_colour.rgb, roughness=0.85)
    if recipe.garment_pattern == "solid":
        return mat
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    coords = nodes.new("ShaderNodeTexCoord").outputs["Object"]
    if recipe.garment_pattern == "stripes":
        split = nodes.new("ShaderNodeSeparateXYZ")
        links.new(coords, split.inputs[0])
        scale, fract, step = (nodes.new("ShaderNodeMath") for _ in range(3))
        scale.operation, fract.operation, step.operation = "MULTIPLY", "FRACT", "GREATER_THAN"
        scale.inputs[1].default_value, step.inputs[1].default_value = 14.0, 0.6
        links.new(split.outputs["Z"], scale.inputs[0])
        links.new(scale.outputs[0], fract.inputs[0])
        links.new(fract.outputs[0], step.inputs[0])
        factor = step.outputs[0]
    elif recipe.garment_pattern == "checks":
        checker = nodes.new("ShaderNodeTexChecker")
        checker.inputs["Scale"].default_value = 9.0
        links.new(coords, checker.inputs["Vector"])
        factor = checker.outputs["Fac"]
    else:
        voronoi = nodes.new("ShaderNodeTexVoronoi")
        voronoi.inputs["Scale"].default_value = 10.0
        voronoi.inputs["Randomness"].default_value = 0.0
        links.new(coords, voronoi.inputs["Vector"])
        inside = nodes.new("ShaderNodeMath")
        inside.operation = "LESS_THAN"
        inside.inputs[1].default_value = 0.28
        links.new(voronoi.outputs["Distance"], inside.inputs[0])
        factor = inside.outputs[0]
    mix = nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    sockets = {s.identifier: s for s in mix.inputs}
    sockets["A_Color"].default_value = bsdf.inputs["Base Color"].default_value
    pattern = principled("pattern", recipe.pattern_colour.rgb)
    sockets["B_Color"].default_value = pattern.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value
    bpy.data.materials.remove(pattern)
    links.new(factor, sockets["Factor_Float"])
    links.new(next(s for s in mix.outputs if s.identifier == "Result_Color"), bsdf.inputs["Base Color"])
    return mat


def _body(recipe: AvatarRecipe, anatomy: Anatomy, torso: Torso) -> list[bpy.types.Object]:
    """Skin neck cylinder and torso."""
    skin = principled("body_skin", recipe.skin.rgb, roughness=0.5, subsurface=0.05)
    cx, cy, _ = anatomy.neck_centre
    neck_path = np.array([[cx, cy, anatomy.neck_top_z + 0.04], [cx, cy, anatomy.shoulder_z - 0.04]])
    neck_vertices, neck_faces = tube_mesh(np.linspace(neck_path[0], neck_path[1], 8), anatomy.neck_radius, sides=32)
    top = np.full(SEGMENTS, torso.top_z)
    torso_vertices, torso_faces = _loft(torso, top, 0.0, 0.0, cap_top=True)
    return [mesh_object("body_neck", neck_vertices, neck_faces, skin),
            mesh_object("body_torso", torso_vertices, torso_faces, skin)]


def _hood(anatomy: Anatomy, top_z: float) -> tuple[np.ndarray, list[list[int]]]:
    """A rolled hood lying around the back of the neck, thickest at the back."""
    alpha = np.linspace(np.radians(70.0), np.radians(290.0), 40)
    back = np.clip(-np.cos(alpha), 0.0, 1.0)
    ring = anatomy.neck_radius + 0.09 + 0.05 * back
    cx, cy, _ = anatomy.neck_centre
    path = np.stack([cx + ring * np.sin(alpha), cy - ring * np.cos(alpha), top_z + 0.01 + 0.03 * back], axis=-1)
    return tube_mesh(path, 0.035 + 0.05 * back, sides=16)


def _drawstrings(torso: Torso, top_z: float, offset: float) -> list[tuple[np.ndarray, list[list[int]]]]:
    """Two cords hanging down the chest from the hood's front ends."""
    cords = []
    z = np.linspace(top_z - 0.01, torso.anatomy.bust_bottom_z + 0.03, 10)
    for side in (-1.0, 1.0):
        alpha = np.full_like(z, side * np.radians(14.0))
        path = torso.point(alpha, z, offset + 0.01)
        path[:, 0] = side * 0.07
        cords.append(tube_mesh(path, np.linspace(0.007, 0.009, len(z)), sides=8))
    return cords


def _collar(anatomy: Anatomy, torso: Torso, top_z: float, offset: float) -> tuple[np.ndarray, list[list[int]]]:
    """Collar stand around the neck and two flaps folded down onto the chest, meeting at the front.

    Each flap is a strip from the stand's base over its fold line down to an outer edge lying just
    above the shirt, its tip at the front; a thin rolled edge along the outer edge casts the line
    that makes the flap read at 256 pixels.
    """
    neck = anatomy.neck_radius + 0.02
    cx, cy, _ = anatomy.neck_centre
    t = np.linspace(0.0, 1.0, 16)
    vertices, faces, piping = [], [], []
    z_grid = np.linspace(torso.anatomy.shoulder_z - 0.1, torso.top_z, 200)
    for side in (-1.0, 1.0):
        fold_alpha = side * np.radians(180.0 - 165.0 * t)
        fold = np.stack([cx + neck * np.sin(fold_alpha), cy - neck * np.cos(fold_alpha), top_z + 0.065 - 0.03 * t**2], axis=-1)
        base = fold.copy()
        base[:, 2] = top_z - 0.01
        edge_alpha = side * np.radians(180.0 - 172.0 * t)
        reach = neck + 0.07 + 0.03 * t**2
        edge = np.stack([cx + reach * np.sin(edge_alpha), cy - reach * np.cos(edge_alpha), np.zeros_like(t)], axis=-1)
        surface = torso.point(edge_alpha[:, None], z_grid[None], offset)  # (16, Z, 3)
        spread = np.linalg.norm(surface[..., :2] - [cx, cy], axis=-1)
        under = np.where(spread >= reach[:, None], z_grid[None], -np.inf).max(axis=1)  # highest z reaching the edge
        edge[:, 2] = np.minimum(under, top_z - 0.01) + 0.015 - 0.05 * t**3
        edge[-1, :2] = [side * 0.015, torso.point(0.0, edge[-1, 2], offset)[1] - 0.012]
        rows = [base, fold, 0.5 * (fold + edge) + np.array([0.0, 0.0, 0.015]), edge]
        piping.append(edge)
        start = sum(len(v) for v in vertices)
        vertices.append(np.concatenate(rows))
        faces += [list(q + start) for q in grid_faces(len(rows), len(t), wrap=False)]
    for edge in piping:
        tube_vertices, tube_faces = tube_mesh(edge, 0.006, sides=6)
        start = sum(len(v) for v in vertices)
        vertices.append(tube_vertices)
        faces += [[i + start for i in f] for f in tube_faces]
    return np.concatenate(vertices), faces


def _placket(torso: Torso, top_z: float, offset: float) -> tuple[tuple[np.ndarray, list[list[int]]], np.ndarray]:
    """Button placket strip down the front (vertices, faces) and the button centres (B, 3)."""
    z = np.linspace(torso.anatomy.bust_bottom_z, top_z, 12)
    centre = torso.point(np.zeros_like(z), z, offset + 0.004)  # (12, 3) the front is flat there
    strip = np.concatenate([centre - [0.028, 0.0, 0.0], centre + [0.028, 0.0, 0.0]])
    faces = [list(q) for q in grid_faces(2, len(z), wrap=False)]
    button_z = np.arange(top_z - 0.03, torso.anatomy.bust_bottom_z + 0.02, -0.07)
    buttons = torso.point(np.zeros_like(button_z), button_z, offset + 0.01)
    return (strip, faces), buttons


def _crew_band(anatomy: Anatomy, neckline_z: float, gap: float, drop: float) -> tuple[np.ndarray, list[list[int]]]:
    """Ribbed band along a crew neckline, dipping ``drop`` at the front."""
    cx, cy, _ = anatomy.neck_centre
    theta = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
    radius = anatomy.neck_radius + gap
    band = np.stack([cx + radius * np.sin(theta), cy - radius * np.cos(theta),
                     neckline_z - drop * np.clip(np.cos(theta), 0.0, 1.0) ** 2], axis=-1)
    return tube_mesh(band, 0.014, sides=10, closed=True)


def _roll_neck(anatomy: Anatomy, neckline_z: float) -> list[tuple[np.ndarray, list[list[int]]]]:
    """Ribbed turtleneck tube up the neck to under the chin, with a rolled fold near its top."""
    cx, cy, _ = anatomy.neck_centre
    theta = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
    z = np.linspace(neckline_z - 0.02, anatomy.chin[2] + 0.01, 12)
    radius = anatomy.neck_radius + 0.04 + 0.006 * np.cos(24.0 * theta)  # (48,) knit ribs
    rings = np.stack([np.broadcast_to(cx + radius * np.sin(theta), (len(z), len(theta))),
                      np.broadcast_to(cy - radius * np.cos(theta), (len(z), len(theta))),
                      np.broadcast_to(z[:, None], (len(z), len(theta)))], axis=-1).reshape(-1, 3)  # (12 * 48, 3)
    tube = (rings, [list(q) for q in grid_faces(len(z), len(theta), wrap=True)])
    fold_radius = radius.mean() + 0.012
    fold = np.stack([cx + fold_radius * np.sin(theta), cy - fold_radius * np.cos(theta),
                     np.full_like(theta, z[-1] - 0.03)], axis=-1)
    return [tube, tube_mesh(fold, 0.028, sides=12, closed=True)]


def build_clothing(recipe: AvatarRecipe, anatomy: Anatomy) -> list[bpy.types.Object]:
    """Create the body (neck, torso) and the garment of ``recipe``; returns their objects.

    Objects: ``body_neck``, ``body_torso``, the garment shell ``garment_<garment>``, its details
    ``garment_<garment>_detail_<i>`` (neck band, hood, cords, collar, placket, roll neck) and, for
    the collared shirt, ``garment_button_<i>``.
    """
    garment = recipe.garment
    if garment not in GARMENTS:
        raise ValueError(f"unknown garment {garment!r}; expected one of {', '.join(GARMENTS)}")
    torso = Torso(anatomy)
    objects = _body(recipe, anatomy, torso)
    fabric = _pattern_material(recipe)
    offset, gap, drop = _GARMENT_SPEC[garment]
    alpha = np.linspace(0.0, 2.0 * np.pi, SEGMENTS, endpoint=False)
    front = np.clip(np.cos(alpha), 0.0, 1.0)
    neckline_z = anatomy.shoulder_z + 0.105
    top_z = neckline_z - drop * front ** (12.0 if garment == "collared_shirt" else 2.0)  # (SEGMENTS,)
    rib = 0.006 * np.cos(36.0 * alpha) if garment == "sweater" else 0.0
    shell_vertices, shell_faces = _loft(torso, top_z, offset + rib, anatomy.neck_radius + gap, cap_top=False)
    objects.append(mesh_object(f"garment_{garment}", shell_vertices, shell_faces, fabric))
    details: list[tuple[np.ndarray, list[list[int]], bpy.types.Material]] = []
    if garment == "tshirt":
        details.append((*_crew_band(anatomy, neckline_z, gap, drop), fabric))
    elif garment == "hoodie":
        details.append((*_hood(anatomy, neckline_z), fabric))
        cord = principled("drawstring", (0.9, 0.9, 0.88), 0.7)
        details += [(*mesh, cord) for mesh in _drawstrings(torso, neckline_z, offset)]
    elif garment == "collared_shirt":
        details.append((*_collar(anatomy, torso, neckline_z, offset), fabric))
        placket, buttons = _placket(torso, neckline_z - drop, offset)
        details.append((*placket, fabric))
        button_material = principled("buttons", (0.92, 0.9, 0.85), roughness=0.3, coat=0.5)
        for index, centre in enumerate(buttons):
            vertices, faces = tube_mesh(np.stack([centre + [0.0, 0.004, 0.0], centre - [0.0, 0.004, 0.0]]), 0.012, sides=12)
            objects.append(mesh_object(f"garment_button_{index}", vertices, faces, button_material))
    else:
        details += [(*mesh, fabric) for mesh in _roll_neck(anatomy, neckline_z)]
    for index, (vertices, faces, material) in enumerate(details):
        objects.append(mesh_object(f"garment_{garment}_detail_{index}", vertices, faces, material))
    return objects
