"""The procedural head and facial hair (paper §4.1): shape keys, expressions and styles move the
geometry where they should, and everything stays inside the tri-plane cube."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from render.anatomy import anatomy_for
from render.avatar.facial_hair import build_facial_hair
from render.avatar.geometry import vertex_normals
from render.avatar.head import build_head, head_surface
from render.blender_scene import reset_scene
from render.recipe import (
    EXPRESSIONS,
    FACIAL_HAIR,
    SHAPE_KEYS,
    AvatarRecipe,
    sample_recipe,
)


@pytest.fixture(autouse=True)
def empty_scene():
    reset_scene()
    yield
    reset_scene()


def _recipe(**changes) -> AvatarRecipe:
    """An average man (every shape key 0), neutral, with ``changes`` applied."""
    base = sample_recipe(0, 11)
    base = dataclasses.replace(base, gender="man", shape={k: 0.0 for k in SHAPE_KEYS}, expression="neutral",
                               expression_strength=1.0, facial_hair="none")
    shape = {**base.shape, **{k: v for k, v in changes.items() if k in SHAPE_KEYS}}
    return dataclasses.replace(base, shape=shape, **{k: v for k, v in changes.items() if k not in SHAPE_KEYS})


def _world_vertices(obj: bpy.types.Object) -> np.ndarray:
    """World-space vertex positions (N, 3) of a mesh object."""
    local = np.empty(len(obj.data.vertices) * 3)
    obj.data.vertices.foreach_get("co", local)
    local = np.c_[local.reshape(-1, 3), np.ones(len(local) // 3)]
    return (local @ np.array(obj.matrix_world).T)[:, :3]


def _surface(recipe: AvatarRecipe) -> np.ndarray:
    return head_surface(recipe, anatomy_for(recipe)).vertices


def test_parts_are_named_and_inside_the_cube():
    for i, expression in enumerate(EXPRESSIONS):
        recipe = dataclasses.replace(sample_recipe(3, i), expression=expression)
        objects = build_head(recipe, anatomy_for(recipe))
        names = {o.name.split(".")[0] for o in objects}
        assert {"head", "ear_L", "ear_R", "eye_L", "eye_R", "eyebrow_L", "eyebrow_R"} <= names
        for obj in objects:
            v = _world_vertices(obj)
            assert np.all(np.abs(v) <= 1.0), f"{obj.name} leaves [-1, 1]^3: {v.min(0)} {v.max(0)}"
        a = anatomy_for(recipe)
        by_name = {o.name.split(".")[0]: _world_vertices(o) for o in objects}
        for name, centre in (("eye_L", a.eye_left), ("eye_R", a.eye_right)):
            assert np.allclose(by_name[name].mean(axis=0), centre, atol=1e-3)
            assert np.ptp(by_name[name][:, 0]) == pytest.approx(2 * a.eye_radius, rel=0.02)
        assert by_name["ear_L"][:, 0].min() > 0.3 and by_name["ear_R"][:, 0].max() < -0.3
        assert abs(by_name["ear_L"][:, 2].mean() - a.ear_left[2]) < 0.03
        reset_scene()


def test_every_shape_key_changes_the_geometry():
    def all_vertices(recipe: AvatarRecipe) -> np.ndarray:
        reset_scene()
        return np.vstack([_world_vertices(o) for o in build_head(recipe, anatomy_for(recipe))])

    for key in SHAPE_KEYS:
        low, high = all_vertices(_recipe(**{key: -1.0})), all_vertices(_recipe(**{key: 1.0}))
        assert low.shape == high.shape
        assert np.abs(low - high).max() > 0.01, f"shape key {key} barely moves the head"


def test_nose_length_moves_the_nose_tip_forward():
    short, long_ = _surface(_recipe(nose_length=-1.0)), _surface(_recipe(nose_length=1.0))
    assert long_[:, 1].min() < short[:, 1].min() - 0.01
    recipe = _recipe(nose_length=1.0)
    tip = anatomy_for(recipe).nose_tip
    front = long_[np.argmin(long_[:, 1])]
    assert np.allclose(front, tip, atol=0.02), f"most forward point {front} is not the nose tip {tip}"


def test_jaw_width_widens_the_jaw_only():
    def half_width(v: np.ndarray, z_range: tuple[float, float]) -> float:
        band = (v[:, 2] > z_range[0]) & (v[:, 2] < z_range[1])
        return float(np.abs(v[band, 0]).max())

    narrow, wide = _surface(_recipe(jaw_width=-1.0)), _surface(_recipe(jaw_width=1.0))
    a = anatomy_for(_recipe())
    jaw_band = (a.chin[2] + 0.03, a.mouth_centre[2])
    assert half_width(wide, jaw_band) > half_width(narrow, jaw_band) + 0.02
    skull_band = (a.brow_z + 0.1, a.brow_z + 0.2)
    assert half_width(wide, skull_band) == pytest.approx(half_width(narrow, skull_band))


def test_men_have_a_stronger_brow_ridge():
    def brow_front(recipe: AvatarRecipe) -> float:
        a = anatomy_for(recipe)
        v = _surface(recipe)
        band = (np.abs(v[:, 0] - 0.15) < 0.03) & (np.abs(v[:, 2] - a.brow_z) < 0.02)
        return float(v[band, 1].min())

    assert brow_front(_recipe(gender="man")) < brow_front(_recipe(gender="woman")) - 0.005


def test_eyes_show_through_the_lid_opening():
    recipe = _recipe()
    a = anatomy_for(recipe)
    v = _surface(recipe)
    for eye in (a.eye_left, a.eye_right):
        near = (np.abs(v[:, 0] - eye[0]) < 0.3 * a.eye_radius) & (np.abs(v[:, 2] - eye[2]) < 0.15 * a.eye_radius)
        assert near.any()
        assert np.all(v[near, 1] > eye[1] - a.eye_radius), "skin covers the front of the eyeball"


def _mouth_gap(recipe: AvatarRecipe) -> float:
    """Largest vertical gap between the front-facing midline vertices around the mouth."""
    a = anatomy_for(recipe)
    surface = head_surface(recipe, a)
    v = surface.vertices[surface.azimuth == 0.0]
    my, mz = a.mouth_centre[1], a.mouth_centre[2]
    lips = v[(v[:, 2] > a.chin[2] - 0.12) & (v[:, 2] < mz + 0.05) & (v[:, 1] < my + 0.03)]
    return float(np.diff(np.sort(lips[:, 2])).max())


def test_open_mouth_parts_the_lips():
    neutral, opened = _mouth_gap(_recipe()), _mouth_gap(_recipe(expression="open_mouth"))
    assert neutral < 0.03
    assert opened > neutral + 0.05
    objects = build_head(_recipe(expression="open_mouth"), anatomy_for(_recipe()))
    assert any(o.name.startswith("mouth_interior") for o in objects)


def test_smile_raises_the_mouth_corners_and_raised_brows_lift_the_brows():
    neutral = _recipe()
    a = anatomy_for(neutral)
    v0 = _surface(neutral)
    corner = np.argmin(np.linalg.norm(v0 - np.array([0.5 * a.mouth_width, a.mouth_centre[1], a.mouth_centre[2]]), axis=1))
    smile = _surface(_recipe(expression="smile"))
    assert smile[corner, 2] > v0[corner, 2] + 0.01

    def brow_z(recipe: AvatarRecipe) -> float:
        reset_scene()
        brows = [o for o in build_head(recipe, anatomy_for(recipe)) if o.name.startswith("eyebrow")]
        return float(np.mean([_world_vertices(o)[:, 2].mean() for o in brows]))

    assert brow_z(_recipe(expression="raised_brows")) > brow_z(neutral) + 0.015


def test_head_surface_normals_point_outwards():
    recipe = _recipe()
    surface = head_surface(recipe, anatomy_for(recipe))
    normals = vertex_normals(surface.vertices, surface.faces)
    centre = np.array(anatomy_for(recipe).cranium_centre)
    above_neck = surface.vertices[:, 2] > 0.0
    outward = np.einsum("ij,ij->i", normals[above_neck], surface.vertices[above_neck] - centre)
    assert np.mean(outward > 0) > 0.97


def _facial_hair_box(style: str) -> tuple[np.ndarray, AvatarRecipe]:
    recipe = _recipe(facial_hair=style)
    objects = build_facial_hair(recipe, anatomy_for(recipe))
    assert objects, f"{style} built nothing"
    v = np.vstack([_world_vertices(o) for o in objects])
    assert np.all(np.abs(v) <= 1.0)
    return v, recipe


def test_no_facial_hair_builds_nothing_and_unknown_style_fails():
    recipe = _recipe(facial_hair="none")
    assert build_facial_hair(recipe, anatomy_for(recipe)) == []
    with pytest.raises(ValueError, match="walrus"):
        build_facial_hair(_recipe(facial_hair="walrus"), anatomy_for(recipe))


def test_facial_hair_styles_cover_their_regions():
    assert set(FACIAL_HAIR) == {"none", "beard", "mustache", "goatee", "sideburns", "stubble"}
    a = anatomy_for(_recipe())
    mz, tip_z, chin_z = a.mouth_centre[2], a.nose_tip[2], a.chin[2]

    beard, _ = _facial_hair_box("beard")
    assert beard[:, 2].min() < chin_z + 0.01 and beard[:, 2].max() < a.brow_z
    assert beard[np.abs(beard[:, 0]) < 0.25, 2].max() < tip_z
    assert beard[:, 0].max() > 0.8 * a.jaw_width and beard[:, 0].min() < -0.8 * a.jaw_width

    mustache, _ = _facial_hair_box("mustache")
    assert mustache[:, 2].min() > mz - 0.06 and mustache[:, 2].max() < tip_z
    assert np.abs(mustache[:, 0]).max() < a.mouth_width and mustache[:, 1].max() < a.mouth_centre[1] + 0.1

    goatee, _ = _facial_hair_box("goatee")
    assert goatee[:, 2].min() < chin_z + 0.01 and goatee[:, 2].max() < tip_z
    assert np.abs(goatee[:, 0]).max() < 0.2

    sideburns, _ = _facial_hair_box("sideburns")
    assert np.all(np.abs(sideburns[:, 0]) > 0.3) and (sideburns[:, 0] > 0).any() and (sideburns[:, 0] < 0).any()
    assert np.all(np.abs(sideburns[:, 2] - a.ear_left[2]) < 0.2) and sideburns[:, 1].max() < a.ear_left[1]

    stubble, recipe = _facial_hair_box("stubble")
    skin = _surface(recipe)
    nearest = np.min(np.linalg.norm(stubble[::25, None, :] - skin[None, :, :], axis=2), axis=1)
    assert nearest.max() < 0.01, "stubble should hug the skin"
    assert stubble[:, 2].min() < chin_z + 0.01


def test_beard_follows_the_open_jaw():
    closed, _ = _facial_hair_box("beard")
    recipe = _recipe(facial_hair="beard", expression="open_mouth")
    reset_scene()
    opened = np.vstack([_world_vertices(o) for o in build_facial_hair(recipe, anatomy_for(recipe))])
    assert opened[:, 2].min() < closed[:, 2].min() - 0.05
