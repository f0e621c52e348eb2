"""Hair, clothing, accessories and asset import of the avatar factory (paper §4.1): geometry checks in bpy."""

import dataclasses

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from render.anatomy import Anatomy, anatomy_for
from render.avatar.accessories import build_accessory
from render.avatar.assets import import_asset
from render.avatar.clothing import build_clothing
from render.avatar.geometry import mesh_object, object_points, tube_mesh
from render.avatar.hair import build_hair
from render.recipe import (
    ACCESSORY_STYLES,
    GARMENTS,
    HAIRSTYLES,
    SHAPE_KEYS,
    AvatarRecipe,
    sample_recipe,
)

ACCESSORY_CHOICES = [(a, s) for a, styles in ACCESSORY_STYLES.items() for s in styles]


@pytest.fixture(autouse=True)
def empty_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield


def recipe_with(subject_id: int = 1, shape_value: float | None = None, **changes) -> AvatarRecipe:
    recipe = sample_recipe(0, subject_id)
    if shape_value is not None:
        changes["shape"] = {key: shape_value for key in SHAPE_KEYS}
    return dataclasses.replace(recipe, **changes)


def points_of(objects) -> np.ndarray:
    return np.concatenate([object_points(obj) for obj in objects])


def in_ellipsoid_units(points: np.ndarray, anatomy: Anatomy) -> np.ndarray:
    """Normalised radius of each point w.r.t. the cranium ellipsoid (1 on its surface)."""
    return np.linalg.norm((points - np.array(anatomy.cranium_centre)) / np.array(anatomy.cranium_radii), axis=1)


@pytest.mark.parametrize("shape_value", [-1.0, 1.0])
@pytest.mark.parametrize("gender", ["man", "woman"])
def test_every_part_stays_inside_the_cube(shape_value, gender):
    for index, hairstyle in enumerate(HAIRSTYLES):
        for accessory, style in ACCESSORY_CHOICES:
            recipe = recipe_with(shape_value=shape_value, gender=gender, hairstyle=hairstyle,
                                 accessory=accessory, accessory_style=style)
            anatomy = anatomy_for(recipe)
            objects = build_hair(recipe, anatomy) + build_accessory(recipe, anatomy)
            if objects:
                pts = points_of(objects)
                assert np.isfinite(pts).all()
                assert np.abs(pts).max() <= 1.0, (hairstyle, accessory, style, np.abs(pts).max(axis=0))
        garment = GARMENTS[index % len(GARMENTS)]
        recipe = recipe_with(shape_value=shape_value, gender=gender, garment=garment)
        pts = points_of(build_clothing(recipe, anatomy_for(recipe)))
        assert np.abs(pts).max() <= 1.0, (garment, np.abs(pts).max(axis=0))
        assert pts[:, 2].min() >= anatomy_for(recipe).bust_bottom_z - 1e-6


def test_bald_and_no_accessory_build_nothing():
    recipe = recipe_with(hairstyle="bald", accessory="none", accessory_style="none")
    anatomy = anatomy_for(recipe)
    assert build_hair(recipe, anatomy) == []
    assert build_accessory(recipe, anatomy) == []


def hair_points(hairstyle: str, subject_id: int = 1) -> tuple[np.ndarray, Anatomy]:
    recipe = recipe_with(subject_id, hairstyle=hairstyle, accessory="none", accessory_style="none")
    anatomy = anatomy_for(recipe)
    objects = build_hair(recipe, anatomy)
    assert any(obj.type == "CURVES" and len(obj.data.curves) > 100 for obj in objects), "hair must be strands"
    return points_of(objects), anatomy


def test_hairstyles_have_their_own_extent():
    extents = {style: hair_points(style) for style in HAIRSTYLES if style != "bald"}
    anatomy = next(iter(extents.values()))[1]
    cx, cy, cz = anatomy.cranium_centre
    rx, ry, rz = anatomy.cranium_radii
    short_pts = extents["short"][0]
    assert short_pts[:, 2].min() > anatomy.mouth_centre[2]  # short hair stays up on the head
    assert extents["long"][0][:, 2].min() < anatomy.chin[2] - 0.05  # long hair falls below the chin
    assert extents["curly"][0][:, 2].min() < anatomy.mouth_centre[2]
    assert extents["long"][0][:, 2].min() < extents["curly"][0][:, 2].min()  # curly is medium length
    for style in ("bun", "ponytail"):
        assert extents[style][0][:, 1].max() > cy + ry + 0.08, style  # out behind the head
    assert extents["ponytail"][0][:, 2].min() < cz - 0.5 * rz  # the tail hangs down
    assert np.abs(extents["afro"][0][:, 0]).max() > rx + 0.15  # the afro is much wider than the skull
    assert np.abs(short_pts[:, 0]).max() < rx + 0.08

    def forehead(points):
        return ((np.abs(points[:, 0]) < 0.15) & (points[:, 2] > anatomy.brow_z)
                & (points[:, 2] < anatomy.brow_z + 0.15) & (points[:, 1] < cy - 0.8 * ry))

    assert forehead(extents["fringe"][0]).sum() > 200  # bangs cover the forehead
    assert (extents["fringe"][0][forehead(extents["fringe"][0])][:, 2] > anatomy.brow_z + 0.02).all()
    for style in ("short", "long", "bun", "ponytail", "curly"):
        assert forehead(extents[style][0]).sum() == 0, style


def test_hair_leaves_the_face_free():
    for style in HAIRSTYLES[1:]:
        points, anatomy = hair_points(style)
        face = ((np.abs(points[:, 0]) < anatomy.eye_left[0] + anatomy.eye_radius)
                & (points[:, 2] < anatomy.brow_z) & (points[:, 2] > anatomy.chin[2])
                & (points[:, 1] < anatomy.cranium_centre[1] - 0.5 * anatomy.cranium_radii[1]))
        assert face.sum() == 0, style


def test_hair_is_deterministic_per_subject():
    first, _ = hair_points("curly", subject_id=4)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    again, _ = hair_points("curly", subject_id=4)
    other, _ = hair_points("curly", subject_id=5)
    np.testing.assert_array_equal(first, again)
    assert first.shape != other.shape or not np.allclose(first, other)


def test_garments_have_different_geometry():
    signatures = {}
    for garment in GARMENTS:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        recipe = recipe_with(garment=garment, garment_pattern="solid")
        anatomy = anatomy_for(recipe)
        objects = build_clothing(recipe, anatomy)
        names = {obj.name for obj in objects}
        assert {"body_neck", "body_torso", f"garment_{garment}"} <= names
        shell = object_points(next(o for o in objects if o.name == f"garment_{garment}"))
        top = points_of([o for o in objects if o.name.startswith("garment")])[:, 2].max()
        signatures[garment] = (np.abs(shell[:, 0]).max(), top, len(objects))
    assert signatures["hoodie"][0] > signatures["sweater"][0] > signatures["tshirt"][0]  # fabric thickness
    assert signatures["sweater"][1] > max(signatures[g][1] for g in ("tshirt", "collared_shirt")) + 0.05  # roll neck
    assert signatures["sweater"][1] > anatomy.chin[2] - 0.02
    assert signatures["collared_shirt"][2] > signatures["tshirt"][2] + 3  # buttons
    assert len({tuple(np.round(s, 4)) for s in signatures.values()}) == len(GARMENTS)


def test_body_follows_the_anatomy():
    recipe = recipe_with(garment="tshirt")
    anatomy = anatomy_for(recipe)
    objects = {obj.name: obj for obj in build_clothing(recipe, anatomy)}
    neck = object_points(objects["body_neck"])
    radial = np.linalg.norm(neck[:, :2] - np.array(anatomy.neck_centre[:2]), axis=1)
    np.testing.assert_allclose(radial, anatomy.neck_radius, atol=1e-6)
    torso = object_points(objects["body_torso"])
    assert torso[:, 2].min() == pytest.approx(anatomy.bust_bottom_z)
    assert np.abs(torso[:, 0]).max() == pytest.approx(anatomy.shoulder_half_width, rel=0.01)


@pytest.mark.parametrize("pattern,node", [("stripes", "ShaderNodeMath"), ("checks", "ShaderNodeTexChecker"),
                                          ("dots", "ShaderNodeTexVoronoi")])
def test_garment_pattern_is_a_shader(pattern, node):
    recipe = recipe_with(garment="tshirt", garment_pattern=pattern)
    objects = build_clothing(recipe, anatomy_for(recipe))
    material = next(o for o in objects if o.name == "garment_tshirt").data.materials[0]
    kinds = {n.bl_idname for n in material.node_tree.nodes}
    assert node in kinds and "ShaderNodeMix" in kinds
    assert material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].is_linked


@pytest.mark.parametrize("accessory,style", [(a, s) for a, s in ACCESSORY_CHOICES if a in ("glasses", "sunglasses")])
def test_lenses_are_centred_on_the_eyes(accessory, style):
    recipe = recipe_with(accessory=accessory, accessory_style=style)
    anatomy = anatomy_for(recipe)
    objects = {obj.name: obj for obj in build_accessory(recipe, anatomy)}
    for side, eye in (("left", anatomy.eye_left), ("right", anatomy.eye_right)):
        lens = object_points(objects[f"{accessory}_lens_{side}"])
        centre = lens.mean(axis=0)
        assert abs(centre[0] - eye[0]) < 0.01 and abs(centre[2] - eye[2]) < 0.01
        assert lens[:, 1].max() < eye[1] - anatomy.eye_radius  # in front of the eye
    temple = object_points(objects[f"{accessory}_temple_left"])
    assert abs(temple[:, 1].max() - anatomy.ear_left[1]) < 2 * anatomy.ear_size  # reaches the ear


def test_hat_covers_the_hair_and_the_cap_brim_points_forward():
    for hairstyle in ("short", "afro", "curly"):
        for style in ("beanie", "cap"):
            bpy.ops.wm.read_factory_settings(use_empty=True)
            recipe = recipe_with(hairstyle=hairstyle, accessory="hat", accessory_style=style)
            anatomy = anatomy_for(recipe)
            hair = points_of(build_hair(recipe, anatomy))
            hat = build_accessory(recipe, anatomy)
            dome = object_points(next(o for o in hat if o.name == f"hat_{style}"))
            assert dome[:, 2].max() > hair[:, 2].max(), (hairstyle, style)
            if style == "cap":
                brim = object_points(next(o for o in hat if o.name == "hat_brim"))
                assert brim[:, 1].min() < anatomy.face_front_y - 0.15


def test_earrings_hang_at_the_ear_lobes():
    for style in ("studs", "hoops"):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        recipe = recipe_with(accessory="earrings", accessory_style=style)
        anatomy = anatomy_for(recipe)
        objects = {o.name: o for o in build_accessory(recipe, anatomy)}
        for side, ear in (("left", anatomy.ear_left), ("right", anatomy.ear_right)):
            pts = object_points(objects[f"earring_{side}"])
            assert np.sign(pts[:, 0]).min() == np.sign(pts[:, 0]).max() == np.sign(ear[0])
            assert pts[:, 2].max() < ear[2] - 0.5 * anatomy.ear_size
            bsdf = objects[f"earring_{side}"].data.materials[0].node_tree.nodes["Principled BSDF"]
            assert bsdf.inputs["Metallic"].default_value == 1.0


@pytest.mark.parametrize("change,bad", [({"hairstyle": "mohawk"}, "mohawk"), ({"garment": "kilt"}, "kilt"),
                                        ({"accessory": "glasses", "accessory_style": "aviator"}, "aviator"),
                                        ({"accessory": "crown", "accessory_style": "none"}, "crown")])
def test_unknown_values_are_named_in_the_error(change, bad):
    recipe = recipe_with(**change)
    builder = build_hair if "hairstyle" in change else build_clothing if "garment" in change else build_accessory
    with pytest.raises(ValueError, match=bad):
        builder(recipe, anatomy_for(recipe))


def test_tube_mesh_keeps_its_radius_around_a_ring():
    theta = np.linspace(0.0, 2.0 * np.pi, 30, endpoint=False)
    ring = np.stack([0.5 * np.cos(theta), 0.5 * np.sin(theta), np.zeros_like(theta)], axis=-1)
    vertices, faces = tube_mesh(ring, 0.05, sides=6, closed=True)
    assert vertices.shape == (30 * 6, 3) and len(faces) == 30 * 6
    major = np.linalg.norm(vertices[:, :2], axis=1)
    distance = np.hypot(major - 0.5, vertices[:, 2])
    np.testing.assert_allclose(distance, 0.05, atol=2e-3)


def test_gltf_asset_round_trip(tmp_path):
    vertices = np.array([[x, y, z] for x in (-0.2, 0.3) for y in (-0.6, -0.4) for z in (0.1, 0.5)])
    faces = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    mesh_object("asset_box", vertices, faces, smooth=False)
    path = tmp_path / "box.glb"
    bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    objects = import_asset(path)
    meshes = [o for o in objects if o.type == "MESH"]
    assert len(meshes) == 1
    pts = object_points(meshes[0])
    np.testing.assert_allclose(pts.min(axis=0), vertices.min(axis=0), atol=1e-5)  # no axis swap, no scale
    np.testing.assert_allclose(pts.max(axis=0), vertices.max(axis=0), atol=1e-5)
    assert len({tuple(np.round(p, 5)) for p in pts}) == 8


def test_blend_asset_round_trip(tmp_path):
    obj = mesh_object("asset_tri", np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, -0.5, 0.25]]), [[0, 1, 2]])
    path = tmp_path / "tri.blend"
    bpy.data.libraries.write(str(path), {obj})
    bpy.ops.wm.read_factory_settings(use_empty=True)
    objects = import_asset(path)
    assert [o.name for o in objects] == ["asset_tri"]
    assert objects[0].name in bpy.context.scene.objects
    np.testing.assert_allclose(object_points(objects[0])[2], [0.0, -0.5, 0.25])


def test_import_asset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.glb"):
        import_asset(tmp_path / "missing.glb")
    (tmp_path / "hair.obj").write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match=r"\.obj"):
        import_asset(tmp_path / "hair.obj")
