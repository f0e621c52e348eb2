"""Landmarks of a procedural avatar, derived from its recipe's shape parameters.

Every part of the factory (head, hair, facial hair, clothes, accessories) places itself from these
landmarks, so that glasses sit on the eyes and hats on the skull whatever the identity. The
numbers follow the world convention of ``docs/conventions.md``: head centre at the origin, +Z up,
the face towards -Y, +X the avatar's left, the whole bust inside [-1, 1]^3.

Pure Python (no bpy): tests project these landmarks into the rendered views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from render.recipe import AvatarRecipe

Vec3 = tuple[float, float, float]

BUST_BOTTOM_Z = -0.98
"""The bust is cut here so the avatar stays inside the tri-plane cube."""


@dataclass(frozen=True)
class Anatomy:
    """World-space landmarks of one avatar (units of the [-1, 1]^3 cube)."""

    cranium_centre: Vec3
    """Centre of the skull ellipsoid."""
    cranium_radii: Vec3
    """Semi-axes (x: half width, y: half depth, z: half height) of the skull ellipsoid."""
    eye_left: Vec3
    """Centre of the avatar's left eyeball (+X side)."""
    eye_right: Vec3
    eye_radius: float
    brow_z: float
    """Height of the eyebrows."""
    nose_tip: Vec3
    nose_length: float
    nose_width: float
    mouth_centre: Vec3
    mouth_width: float
    chin: Vec3
    """Lowest front point of the jaw."""
    jaw_width: float
    """Half width of the jaw at mouth height."""
    ear_left: Vec3
    ear_right: Vec3
    ear_size: float
    """Half height of an ear (its top is about ``ear_z + ear_size``, the lobe ``ear_z - ear_size``)."""
    ear_angle: float
    """How far the ears stand out: rotation (radians) of each ear about the vertical axis at its front edge."""
    neck_centre: Vec3
    """Centre of the neck cylinder's axis at mid height."""
    neck_radius: float
    neck_top_z: float
    neck_bottom_z: float
    shoulder_z: float
    """Height of the shoulder line (top of the torso)."""
    shoulder_half_width: float
    bust_bottom_z: float

    @property
    def head_top_z(self) -> float:
        return self.cranium_centre[2] + self.cranium_radii[2]

    @property
    def face_front_y(self) -> float:
        """Y of the front of the face (forehead surface)."""
        return self.cranium_centre[1] - self.cranium_radii[1]


def anatomy_for(recipe: AvatarRecipe) -> Anatomy:
    """The landmarks of ``recipe``'s avatar; every shape parameter moves at least one landmark."""
    s = recipe.shape
    feminine = recipe.gender == "woman"
    rx = 0.47 * (1.0 + 0.07 * s["head_width"]) * (0.96 if feminine else 1.0)
    ry = 0.55 * (1.0 + 0.06 * s["head_depth"])
    rz = 0.60 * (1.0 + 0.06 * s["head_height"])
    cz = 0.06
    centre = (0.0, 0.02, cz)
    front = centre[1] - ry
    eye_x = 0.175 * (1.0 + 0.10 * s["eye_spacing"])
    eye_r = 0.072 * (1.0 + 0.12 * s["eye_size"])
    eye_z = cz - 0.02
    eye_y = front + 0.12
    brow_z = eye_z + 0.12 + 0.02 * s["brow_ridge"]
    nose_len = 0.11 * (1.0 + 0.25 * s["nose_length"])
    nose_w = 0.075 * (1.0 + 0.25 * s["nose_width"])
    nose_tip = (0.0, front - 0.06 - 0.03 * s["nose_bridge"] - 0.25 * nose_len, eye_z - 0.20 - 0.4 * nose_len)
    jaw_len = 1.0 + 0.10 * s["jaw_length"]
    chin_z = cz - rz * 0.98 * jaw_len - 0.03 * s["chin"]
    mouth_z = nose_tip[2] + 0.45 * (chin_z - nose_tip[2])
    jaw_w = 0.335 * (1.0 + 0.12 * s["jaw_width"]) * (0.92 if feminine else 1.0)
    ear_size = 0.14 * (1.0 + 0.2 * s["ear_size"])
    ear_y = centre[1] + 0.04
    ear_z = eye_z - 0.06
    neck_r = 0.21 * (0.9 if feminine else 1.0)
    neck_top = chin_z + 0.12
    shoulder_z = -0.80
    return Anatomy(
        cranium_centre=centre,
        cranium_radii=(rx, ry, rz),
        eye_left=(eye_x, eye_y, eye_z),
        eye_right=(-eye_x, eye_y, eye_z),
        eye_radius=eye_r,
        brow_z=brow_z,
        nose_tip=nose_tip,
        nose_length=nose_len,
        nose_width=nose_w,
        mouth_centre=(0.0, front + 0.065 - 0.02 * s["lip_fullness"], mouth_z),
        mouth_width=0.20 * (1.0 + 0.08 * s["cheeks"]),
        chin=(0.0, front + 0.075 - 0.04 * s["chin"], chin_z),
        jaw_width=jaw_w,
        ear_left=(rx - 0.01, ear_y, ear_z),
        ear_right=(-(rx - 0.01), ear_y, ear_z),
        ear_size=ear_size,
        ear_angle=math.radians(24.0 + 14.0 * s["ear_angle"]),
        neck_centre=(0.0, centre[1] + 0.06, 0.5 * (neck_top + shoulder_z)),
        neck_radius=neck_r,
        neck_top_z=neck_top,
        neck_bottom_z=shoulder_z,
        shoulder_z=shoulder_z,
        shoulder_half_width=0.92 * (0.88 if feminine else 1.0),
        bust_bottom_z=BUST_BOTTOM_Z,
    )
