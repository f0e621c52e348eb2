"""Procedural hairstyles: strands grown from the scalp of the cranium ellipsoid (bpy).

Paper §4.1 / appendix B.2: the synthetic corpus combines identities with random hairstyles. Each
style of ``render.recipe.HAIRSTYLES`` is real strand geometry (a Cycles hair-curves object, every
strand a tapered curve) over a thin hair-coloured cap shell that hides the scalp:

* ``short``   short strands combed away from the crown, lying on the scalp;
* ``long``    strands combed down the sides and back, then falling towards the shoulders;
* ``bun``     strands pulled back to the upper back of the head + a ball of wrapped strands;
* ``ponytail`` strands pulled back to a tie at the back + a hanging tail of strands;
* ``afro``    a large volume of radial helical curls;
* ``curly``   medium-length helical curls falling to about the chin;
* ``fringe``  short hair with bangs combed over the forehead down to above the brows;
* ``bald``    nothing.

Roots are sampled on the cranium ellipsoid (``anatomy.cranium_centre`` / ``cranium_radii``) above
a hairline that keeps the face and the ears free. Directions ``u`` live on the unit sphere of the
ellipsoid's normalised frame; azimuth 0 is the face (-Y), +pi/2 the avatar's left (+X). All
randomness comes from the subject's hair stream (``hair_rng``), so a recipe always gives the same
strands.
"""

from __future__ import annotations

import bpy
import numpy as np

from render.anatomy import Anatomy
from render.avatar.geometry import grid_faces, mesh_object, strands_object, tube_mesh
from render.avatar.materials import principled
from render.recipe import HAIRSTYLES, AvatarRecipe

HAIR_STREAM = 1
"""Index of the hair random stream of a subject (see ``hair_rng``)."""

SCALP_CLEARANCE = 0.03
"""Every offset off the cranium ellipsoid starts this far out: the sculpted skin of the head bulges
past the ellipsoid by a few hundredths, and the cap and roots must stay above it."""

STRAND_RADIUS = 0.0045
"""Root radius of one strand in world units (the head is about 1.25 units tall)."""

HAIR_THICKNESS: dict[str, float] = {
    "bald": 0.0, "short": 0.035, "fringe": 0.04, "long": 0.045, "bun": 0.035,
    "ponytail": 0.035, "curly": 0.09, "afro": 0.27,
}
"""How far each style's hair stands off the scalp (beyond ``SCALP_CLEARANCE``); hats sit on top of it."""

STRAND_COUNTS: dict[str, int] = {
    "short": 2200, "fringe": 2200, "long": 2000, "bun": 2200, "ponytail": 2200, "curly": 1300, "afro": 2400,
}
"""Strands grown from the scalp per style (the fringe's bangs, bun ball and tail come on top)."""

AFRO_UNDER_HAT = 0.12
"""Thickness an afro is pressed to under a hat, so that the hat stays inside the [-1, 1]^3 cube."""

_HAIRLINE_AZIMUTH = (0.0, 0.25, 0.5, 0.75, 1.0)  # |azimuth| / pi: face, temple, ear, behind ear, nape
_HAIRLINE_HEIGHT = (0.5, 0.4, 0.22, -0.12, -0.42)  # normalised z of the hairline there


def hair_rng(recipe: AvatarRecipe) -> np.random.Generator:
    """The hair random stream of ``recipe``'s subject, independent of the recipe sampler's stream."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([recipe.seed, recipe.subject_id, HAIR_STREAM])))


def hair_thickness(recipe: AvatarRecipe) -> float:
    """How far ``recipe``'s hair stands off the scalp (beyond ``SCALP_CLEARANCE``); an afro is pressed flatter under a hat."""
    if recipe.hairstyle == "afro" and recipe.accessory == "hat":
        return AFRO_UNDER_HAT
    return HAIR_THICKNESS[recipe.hairstyle]


def hairline_height(azimuth: np.ndarray) -> np.ndarray:
    """Normalised height of the hairline (unit-sphere z) at each azimuth (radians, 0 = face)."""
    return np.interp(np.abs(azimuth) / np.pi, _HAIRLINE_AZIMUTH, _HAIRLINE_HEIGHT)


def direction(azimuth: np.ndarray, height: np.ndarray) -> np.ndarray:
    """Unit vectors (..., 3) of the normalised frame at ``azimuth`` (0 = -Y, pi/2 = +X) and unit-sphere z."""
    height = np.clip(height, -1.0, 1.0)
    ring = np.sqrt(1.0 - height**2)
    return np.stack([ring * np.sin(azimuth), -ring * np.cos(azimuth), height], axis=-1)


class Scalp:
    """The cranium ellipsoid: maps unit directions to points offset along the surface normal.

    Offsets are measured from ``SCALP_CLEARANCE`` outside the ellipsoid, i.e. from the skin.
    """

    def __init__(self, anatomy: Anatomy) -> None:
        self.centre = np.asarray(anatomy.cranium_centre, dtype=np.float64)
        self.radii = np.asarray(anatomy.cranium_radii, dtype=np.float64)

    def normal(self, u: np.ndarray) -> np.ndarray:
        """Outward unit normals (..., 3) at directions ``u`` (..., 3)."""
        n = u / self.radii
        return n / np.linalg.norm(n, axis=-1, keepdims=True)

    def point(self, u: np.ndarray, offset: np.ndarray | float = 0.0) -> np.ndarray:
        """World points (..., 3) at directions ``u``, ``offset`` (broadcast to (...)) off the surface."""
        return self.centre + self.radii * u + (SCALP_CLEARANCE + np.asarray(offset))[..., None] * self.normal(u)


def _slerp(u0: np.ndarray, u1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Great-circle paths (S, K, 3) from unit vectors u0 (S, 3) to u1 (S, 3) at fractions t (K,)."""
    cos = np.clip(np.sum(u0 * u1, axis=-1), -1.0, 1.0)[:, None]  # (S, 1)
    angle = np.arccos(cos)
    sin = np.maximum(np.sin(angle), 1e-6)
    w0 = np.sin((1.0 - t) * angle) / sin  # (S, K)
    w1 = np.sin(t * angle) / sin
    small = angle < 1e-4
    w0, w1 = np.where(small, 1.0 - t, w0), np.where(small, t, w1)
    path = w0[..., None] * u0[:, None] + w1[..., None] * u1[:, None]
    return path / np.linalg.norm(path, axis=-1, keepdims=True)


def _roots(rng: np.random.Generator, count: int, front_limit: float = 1.0) -> np.ndarray:
    """Directions (count, 3) uniform in area over the scalp (above the hairline), |azimuth| <= front_limit*pi."""
    azimuth = rng.uniform(-np.pi * front_limit, np.pi * front_limit, count)
    height = rng.uniform(hairline_height(azimuth), 0.995)
    return direction(azimuth, height)


def _helix(paths: np.ndarray, centre: np.ndarray, radius: np.ndarray, turns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Wind curls around centre-line paths (S, K, 3): ``turns`` (S,) helical turns of ``radius`` (S,)."""
    tangent = np.gradient(paths, axis=1)
    tangent /= np.linalg.norm(tangent, axis=-1, keepdims=True) + 1e-12
    side = paths - centre
    side -= tangent * np.sum(side * tangent, axis=-1, keepdims=True)
    side /= np.linalg.norm(side, axis=-1, keepdims=True) + 1e-12
    other = np.cross(tangent, side)
    s = np.linspace(0.0, 1.0, paths.shape[1])
    phase = 2.0 * np.pi * turns[:, None] * s + rng.uniform(0.0, 2.0 * np.pi, (len(paths), 1))  # (S, K)
    ramp = np.minimum(1.0, 4.0 * s)  # roots stay on the scalp
    offset = (radius[:, None] * ramp)[..., None] * (np.cos(phase)[..., None] * side + np.sin(phase)[..., None] * other)
    return paths + offset


def _short(rng: np.random.Generator, scalp: Scalp, count: int) -> np.ndarray:
    """Short strands (S, 6, 3) combed away from the crown, lying flat, tips kept above the hairline."""
    u0 = _roots(rng, count)
    crown = np.array([0.0, 0.45, 0.89])
    comb = u0 - crown + rng.normal(0.0, 0.15, u0.shape)
    comb -= u0 * np.sum(comb * u0, axis=-1, keepdims=True)
    comb /= np.linalg.norm(comb, axis=-1, keepdims=True) + 1e-12
    length = rng.uniform(0.12, 0.24, count)
    for _ in range(3):
        u1 = u0 * np.cos(length)[:, None] + comb * np.sin(length)[:, None]
        below = u1[:, 2] < hairline_height(np.arctan2(u1[:, 0], -u1[:, 1])) - 0.04
        length = np.where(below, 0.5 * length, length)
    u1 = u0 * np.cos(length)[:, None] + comb * np.sin(length)[:, None]
    t = np.linspace(0.0, 1.0, 6)
    return scalp.point(_slerp(u0, u1, t), 0.008 + 0.022 * np.sqrt(t))


def _pulled_back(rng: np.random.Generator, scalp: Scalp, gather: np.ndarray, count: int) -> np.ndarray:
    """Strands (S, 12, 3) combed over the scalp towards the unit direction ``gather``."""
    u0 = _roots(rng, count)
    target = gather + rng.normal(0.0, 0.03, u0.shape)
    target /= np.linalg.norm(target, axis=-1, keepdims=True)
    t = np.linspace(0.0, 0.93, 12)
    return scalp.point(_slerp(u0, target, t), 0.008 + 0.02 * t)


def _fringe(rng: np.random.Generator, scalp: Scalp, anatomy: Anatomy, count: int = 900) -> np.ndarray:
    """Bangs (S, 10, 3): front strands combed forward and down over the forehead to above the brows."""
    azimuth = rng.uniform(-0.3 * np.pi, 0.3 * np.pi, count)
    u0 = direction(azimuth, rng.uniform(hairline_height(azimuth) + 0.05, 0.95))
    brow = (anatomy.brow_z - scalp.centre[2]) / scalp.radii[2]
    end_height = brow + (0.05 + rng.uniform(0.0, 0.04, count)) / scalp.radii[2]
    u1 = direction(0.85 * azimuth + rng.normal(0.0, 0.03, count), end_height)
    t = np.linspace(0.0, 1.0, 10)
    return scalp.point(_slerp(u0, u1, t), 0.012 + 0.025 * t)


def _falling(rng: np.random.Generator, scalp: Scalp, count: int, end_z: np.ndarray, offset: float) -> np.ndarray:
    """Strands (S, 18, 3) combed down the sides/back of the scalp, then hanging down to ``end_z`` (S,)."""
    u0 = _roots(rng, count)
    azimuth = np.arctan2(u0[:, 0], -u0[:, 1])
    side = np.where(azimuth >= 0.0, 1.0, -1.0)
    target_azimuth = side * np.maximum(np.abs(azimuth), rng.uniform(0.47, 0.58, count) * np.pi)
    target = direction(target_azimuth, np.minimum(u0[:, 2], rng.uniform(-0.2, -0.05, count)))
    t = np.linspace(0.0, 1.0, 8)
    surface = scalp.point(_slerp(u0, target, t), offset * np.sqrt(t))  # (S, 8, 3)
    start = surface[:, -1]  # (S, 3)
    outward = start[:, :2] - scalp.centre[:2]
    outward /= np.linalg.norm(outward, axis=-1, keepdims=True) + 1e-12
    s = np.linspace(0.0, 1.0, 11)[1:]  # (10,)
    drop = np.maximum(start[:, 2] - end_z, 0.05)[:, None] * s  # (S, 10)
    hang = np.repeat(start[:, None], len(s), axis=1)
    hang[..., :2] += outward[:, None] * (0.03 * np.sin(0.5 * np.pi * s))[None, :, None]
    hang[..., 2] -= drop
    return np.concatenate([surface, hang], axis=1)


def _bun_ball(rng: np.random.Generator, centre: np.ndarray, radius: float, count: int = 160) -> np.ndarray:
    """Strands (S, 16, 3) wrapped around a ball of ``radius``: arcs of random great circles."""
    axis_a = rng.normal(size=(count, 3))
    axis_a /= np.linalg.norm(axis_a, axis=-1, keepdims=True)
    axis_b = np.cross(axis_a, rng.normal(size=(count, 3)))
    axis_b /= np.linalg.norm(axis_b, axis=-1, keepdims=True)
    angle = rng.uniform(0.0, 2.0 * np.pi, (count, 1)) + np.linspace(0.0, 1.6 * np.pi, 16)  # (S, 16)
    ring = np.cos(angle)[..., None] * axis_a[:, None] + np.sin(angle)[..., None] * axis_b[:, None]
    return centre + radius * rng.uniform(0.97, 1.05, (count, 1, 1)) * ring


def _tail(rng: np.random.Generator, base: np.ndarray, length: float, count: int = 320) -> np.ndarray:
    """Ponytail strands (S, 14, 3) leaving ``base`` backwards (+Y) and hanging down ``length``."""
    s = np.linspace(0.0, 1.0, 14)[:, None]  # (K, 1)
    p0, p1, p2 = base, base + np.array([0.0, 0.16, 0.02]), base + np.array([0.0, 0.12, -length])
    spine = (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s**2 * p2  # (K, 3) quadratic Bezier
    angle = rng.uniform(0.0, 2.0 * np.pi, count)
    spread = np.sqrt(rng.uniform(0.0, 1.0, count))[:, None] * (0.03 + 0.06 * np.sin(np.pi * np.minimum(s.T, 0.7)))
    offset_x = spread * np.cos(angle)[:, None]  # (S, K)
    offset_yz = spread * np.sin(angle)[:, None]
    strands = np.repeat(spine[None], count, axis=0)
    strands[..., 0] += offset_x
    strands[..., 1] += offset_yz * 0.6
    strands[..., 2] += offset_yz * 0.4
    return strands


def _cap(scalp: Scalp, offset: float, volume: float, name: str, material: bpy.types.Material) -> bpy.types.Object:
    """Hair-coloured shell over the scalp, ``offset`` off the skin (+ ``volume`` away from the hairline)."""
    azimuth = np.linspace(-np.pi, np.pi, 64, endpoint=False)  # (A,)
    rows = np.linspace(0.0, 1.0, 20)[1:]  # (R,) 0 = crown, 1 = hairline
    top_z, low_z = 0.999, hairline_height(azimuth) - 0.02
    height = top_z + rows[:, None] * (low_z[None] - top_z)  # (R, A)
    u = direction(np.broadcast_to(azimuth, height.shape), height)
    edge = np.clip((1.0 - rows) / 0.3, 0.0, 1.0)
    lift = offset + volume * (3 * edge**2 - 2 * edge**3)  # (R,) smooth ramp up from the hairline
    ring = scalp.point(u, np.broadcast_to(lift[:, None], height.shape)).reshape(-1, 3)
    pole = scalp.point(np.array([0.0, 0.0, 1.0]), offset + volume)[None]
    vertices = np.concatenate([pole, ring])
    cols = len(azimuth)
    faces = [list(q + 1) for q in grid_faces(len(rows), cols, wrap=True)]
    faces += [[0, 1 + (j + 1) % cols, 1 + j] for j in range(cols)]
    return mesh_object(name, vertices, faces, material)


def _afro(rng: np.random.Generator, scalp: Scalp, squeeze: float) -> np.ndarray:
    """Curls (S, 14, 3) growing straight out of the scalp, shorter towards the face, scaled by ``squeeze``."""
    u0 = _roots(rng, STRAND_COUNTS["afro"])
    front = np.clip(np.abs(np.arctan2(u0[:, 0], -u0[:, 1])) / (0.35 * np.pi), 0.0, 1.0)
    length = rng.uniform(0.17, 0.23, len(u0)) * (0.5 + 0.5 * front) * squeeze
    s = np.linspace(0.0, 1.0, 14)
    paths = scalp.point(u0)[:, None] + scalp.normal(u0)[:, None] * (length[:, None, None] * s[:, None])
    return _helix(paths, scalp.centre, rng.uniform(0.015, 0.025, len(u0)), rng.uniform(2.0, 3.5, len(u0)), rng)


def _gathered(
    rng: np.random.Generator, scalp: Scalp, style: str, material: bpy.types.Material
) -> tuple[list[np.ndarray], list[bpy.types.Object]]:
    """Bun or ponytail: strands pulled back to a knot, plus the bun ball (and its core) or the tail (and its tie)."""
    gather = np.array([0.0, 0.87, 0.49]) if style == "bun" else np.array([0.0, 0.99, 0.14])
    gather /= np.linalg.norm(gather)
    knot, out = scalp.point(gather, 0.03), scalp.normal(gather)
    pulled = _pulled_back(rng, scalp, gather, STRAND_COUNTS[style])
    if style == "bun":
        radius = 0.12
        centre = knot + out * 0.9 * radius
        core_u = direction(*np.meshgrid(np.linspace(-np.pi, np.pi, 24, endpoint=False), np.linspace(-0.95, 0.95, 12)))
        core = mesh_object("hair_bun_core", centre + 0.96 * radius * core_u.reshape(-1, 3), grid_faces(12, 24, True), material)
        return [pulled, _bun_ball(rng, centre, radius)], [core]
    theta = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
    ring = knot + 0.018 * out + 0.032 * np.stack([np.cos(theta), np.zeros_like(theta), np.sin(theta)], axis=-1)
    tie_vertices, tie_faces = tube_mesh(ring, 0.012, sides=8, closed=True)
    tie = mesh_object("hair_tie", tie_vertices, tie_faces, principled("hair_tie", (0.05, 0.05, 0.05), 0.6))
    return [pulled, _tail(rng, knot, length=rng.uniform(0.45, 0.6))], [tie]


def build_hair(recipe: AvatarRecipe, anatomy: Anatomy) -> list[bpy.types.Object]:
    """Create the hair of ``recipe.hairstyle`` in ``recipe.hair``; returns its objects ([] when bald).

    The objects are the cap shell (``hair_cap``), one hair-curves object per strand group
    (``hair_strands_<i>``) and, for bun / ponytail, the bun core or the hair tie.
    """
    style = recipe.hairstyle
    if style not in HAIRSTYLES:
        raise ValueError(f"unknown hairstyle {style!r}; expected one of {', '.join(HAIRSTYLES)}")
    if style == "bald":
        return []
    rng = hair_rng(recipe)
    scalp = Scalp(anatomy)
    material = principled(f"hair_{recipe.hair.name}", recipe.hair.rgb, roughness=0.4, coat=0.25)
    count = STRAND_COUNTS[style]
    groups: list[np.ndarray] = []
    extras: list[bpy.types.Object] = []
    cap_volume = 0.0
    if style in ("short", "fringe"):
        groups.append(_short(rng, scalp, count))
        if style == "fringe":
            groups.append(_fringe(rng, scalp, anatomy))
    elif style == "long":
        lowest = anatomy.shoulder_z + 0.09  # ends clear the shoulders
        end_z = rng.uniform(lowest, min(anatomy.chin[2] - 0.05, lowest + 0.15), count)
        groups.append(_falling(rng, scalp, count, end_z, offset=0.035))
    elif style == "curly":
        end_z = rng.uniform(anatomy.chin[2] - 0.02, max(anatomy.mouth_centre[2], anatomy.chin[2]), count)
        paths = _falling(rng, scalp, count, end_z, offset=0.04)
        groups.append(_helix(paths, scalp.centre, rng.uniform(0.028, 0.042, count), rng.uniform(2.5, 4.0, count), rng))
    elif style == "afro":
        squeeze = (hair_thickness(recipe) - 0.04) / (HAIR_THICKNESS["afro"] - 0.04)
        groups.append(_afro(rng, scalp, squeeze))
        cap_volume = 0.1 * squeeze
    else:
        groups, extras = _gathered(rng, scalp, style, material)
    objects = [_cap(scalp, 0.01, cap_volume, "hair_cap", material)]
    for index, points in enumerate(groups):
        objects.append(strands_object(f"hair_strands_{index}", np.clip(points, -0.99, 0.99), STRAND_RADIUS, material))
    return objects + extras
