"""Geometry entering the avatar scene: asset-library files and procedural meshes/strands (bpy).

Paper §4.1 / appendix B.2: avatars are random combinations of identities, hairstyles, clothes and
accessories. A part comes either from the asset library (``import_asset``: .glb/.gltf through the
glTF importer, .blend by appending its objects) or is built procedurally from numpy arrays by the
part builders through the helpers here (``mesh_object``, ``tube_mesh``, ``strands_object``), which
create the data blocks in one call each (``from_pydata`` / ``foreach_set``), never vertex by vertex.

Every asset and every procedural part is authored in the world convention of
``docs/conventions.md`` (head centre at the origin, +Z up, face towards -Y, inside [-1, 1]^3): no
transform is applied on import.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import bpy
import numpy as np

from render.recipe import ASSET_SUFFIXES


def import_asset(path: str | Path) -> list[bpy.types.Object]:
    """Bring every object of the asset file ``path`` into the current scene and return them.

    ``.glb`` / ``.gltf`` go through Blender's glTF importer (glTF's +Y up becomes Blender's +Z up,
    the inverse of the exporter); ``.blend`` files have all their objects appended and linked to
    the scene collection. Raises FileNotFoundError for a missing file and ValueError for a suffix
    that is not one of ``ASSET_SUFFIXES``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ASSET_SUFFIXES:
        raise ValueError(f"asset {str(path)!r} has suffix {suffix!r}; use one of {', '.join(ASSET_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"asset file {str(path)!r} does not exist; check the asset folder and the recipe")
    scene = bpy.context.scene
    if suffix == ".blend":
        with bpy.data.libraries.load(str(path), link=False) as (data_from, data_to):
            data_to.objects = list(data_from.objects)
        objects = [obj for obj in data_to.objects if obj is not None]
        for obj in objects:
            scene.collection.objects.link(obj)
        return objects
    before = set(scene.objects)
    result = bpy.ops.import_scene.gltf(filepath=str(path))
    if "FINISHED" not in result:
        raise RuntimeError(f"the glTF importer could not read {str(path)!r} (result {set(result)})")
    return sorted((obj for obj in scene.objects if obj not in before), key=lambda obj: obj.name)


def mesh_object(
    name: str,
    vertices: np.ndarray,
    faces: Sequence[Sequence[int]] | np.ndarray,
    material: bpy.types.Material | None = None,
    smooth: bool = True,
) -> bpy.types.Object:
    """A mesh object from world-space ``vertices`` (V, 3) and polygon index lists, linked to the scene."""
    vertices = np.asarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"mesh {name!r}: vertices must have shape (V, 3), got {vertices.shape}")
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(vertices.tolist(), [], [list(map(int, f)) for f in faces])
    mesh.validate()
    mesh.shade_smooth() if smooth else mesh.shade_flat()
    obj = bpy.data.objects.new(name, mesh)
    if material is not None:
        mesh.materials.append(material)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def grid_faces(rows: int, cols: int, wrap: bool) -> np.ndarray:
    """Quads (F, 4) of a (rows, cols) vertex grid stored row-major; ``wrap`` closes each row into a ring."""
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols if wrap else cols - 1), indexing="ij")
    c_next = (c + 1) % cols
    quads = np.stack([r * cols + c, r * cols + c_next, (r + 1) * cols + c_next, (r + 1) * cols + c], axis=-1)
    return quads.reshape(-1, 4)


def tube_mesh(
    path: np.ndarray, radius: float | np.ndarray, sides: int = 8, closed: bool = False
) -> tuple[np.ndarray, list[list[int]]]:
    """Vertices (N * sides, 3) and polygons of a tube of ``radius`` (scalar or (N,)) along ``path`` (N, 3).

    Cross-sections are oriented with parallel-transported frames, so tubes along curves do not
    twist; ``closed`` joins the last section to the first (rings, tori). Open tubes are capped.
    """
    path = np.asarray(path, dtype=np.float64)  # (N, 3)
    n = len(path)
    if n < 2:
        raise ValueError(f"a tube needs at least 2 path points, got {n}")
    tangents = np.roll(path, -1, axis=0) - np.roll(path, 1, axis=0) if closed else np.gradient(path, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True) + 1e-12
    helper = np.array([0.0, 0.0, 1.0]) if abs(tangents[0, 2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    normal = np.cross(tangents[0], helper)
    normal /= np.linalg.norm(normal)
    normals = np.empty_like(path)
    for i in range(n):
        normal = normal - tangents[i] * (normal @ tangents[i])
        normal /= np.linalg.norm(normal) + 1e-12
        normals[i] = normal
    binormals = np.cross(tangents, normals)
    angle = np.linspace(0.0, 2.0 * np.pi, sides, endpoint=False)
    radius = np.broadcast_to(np.asarray(radius, dtype=np.float64), (n,))
    ring = np.cos(angle)[None, :, None] * normals[:, None] + np.sin(angle)[None, :, None] * binormals[:, None]
    vertices = (path[:, None] + radius[:, None, None] * ring).reshape(-1, 3)  # (N * sides, 3)
    faces = [list(f) for f in grid_faces(n + 1 if closed else n, sides, wrap=True) % (n * sides)]
    if not closed:
        faces += [list(range(sides))[::-1], list(range((n - 1) * sides, n * sides))]
    return vertices, faces


def strands_object(
    name: str, points: np.ndarray, radius: float | np.ndarray, material: bpy.types.Material | None = None
) -> bpy.types.Object:
    """A hair-curves object: ``points`` (S, K, 3) are S strands of K points each; root radius ``radius``.

    Cycles renders these natively as thick curves. The radius tapers to 35% at the tips; a scalar
    or per-strand (S,) ``radius`` is accepted.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 3 or points.shape[2] != 3 or points.shape[1] < 2:
        raise ValueError(f"strands {name!r}: points must have shape (S, K>=2, 3), got {points.shape}")
    count, length, _ = points.shape
    curves = bpy.data.hair_curves.new(name)
    curves.add_curves([length] * count)
    curves.position_data.foreach_set("vector", points.ravel())
    taper = np.linspace(1.0, 0.35, length, dtype=np.float32)  # (K,)
    radii = np.broadcast_to(np.asarray(radius, dtype=np.float32).reshape(-1, 1), (count, 1)) * taper
    attribute = curves.attributes.new("radius", "FLOAT", "POINT")
    attribute.data.foreach_set("value", np.ascontiguousarray(radii, dtype=np.float32).ravel())
    if material is not None:
        curves.materials.append(material)
    obj = bpy.data.objects.new(name, curves)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def world_matrix(obj: bpy.types.Object) -> np.ndarray:
    """The (4, 4) object-to-world matrix from the object's own transform and its parents'.

    Unlike ``obj.matrix_world`` this needs no depsgraph update after the transform was set.
    """
    matrix = np.array(obj.matrix_basis, dtype=np.float64)
    if obj.parent is not None:
        matrix = world_matrix(obj.parent) @ np.array(obj.matrix_parent_inverse, dtype=np.float64) @ matrix
    return matrix


def object_points(obj: bpy.types.Object) -> np.ndarray:
    """World-space points (N, 3) of a mesh, hair-curves or curve object (its vertices / control points)."""
    matrix = world_matrix(obj)
    if obj.type == "MESH":
        local = np.empty(len(obj.data.vertices) * 3, dtype=np.float64)
        obj.data.vertices.foreach_get("co", local)
    elif obj.type == "CURVES":
        local = np.empty(len(obj.data.points) * 3, dtype=np.float32)
        obj.data.position_data.foreach_get("vector", local)
    elif obj.type == "CURVE":
        coords = [p.co[:3] for spline in obj.data.splines for p in (*spline.points, *spline.bezier_points)]
        local = np.array(coords, dtype=np.float64).ravel()
    else:
        return np.zeros((0, 3))
    local = local.reshape(-1, 3).astype(np.float64)
    return local @ matrix[:3, :3].T + matrix[:3, 3]
