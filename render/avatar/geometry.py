"""Mesh and hair-curve construction shared by the avatar parts (bpy + numpy).

Small free functions: polygon grids, tubes along paths, UV spheres, hair curves, vertex normals
and world-space points of objects. Everything is vectorised with numpy; meshes are created with
``from_pydata`` and curves with ``foreach_set``, never with per-vertex operators.
"""

from __future__ import annotations

from collections.abc import Sequence

import bpy
import numpy as np


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1``, elementwise."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


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


def uv_sphere(segments: int, rings: int) -> tuple[np.ndarray, list[tuple[int, ...]], np.ndarray]:
    """Unit sphere: vertices (N, 3), faces, and each vertex's (azimuth, elevation) (N, 2).

    Poles on +-Y (the viewing axis of eyes and ears), azimuth around Y."""
    el = np.linspace(-np.pi / 2, np.pi / 2, rings + 1)[1:-1]
    azi = np.arange(segments) / segments * 2 * np.pi
    e, t = np.meshgrid(el, azi, indexing="ij")
    verts = np.stack([np.cos(e) * np.cos(t), np.sin(e), np.cos(e) * np.sin(t)], axis=-1).reshape(-1, 3)
    params = np.stack([t, e], axis=-1).reshape(-1, 2)
    faces: list[tuple[int, ...]] = []
    n = segments
    for r in range(rings - 2):
        faces += [(r * n + (j + 1) % n, r * n + j, (r + 1) * n + j, (r + 1) * n + (j + 1) % n) for j in range(n)]
    south, north = len(verts), len(verts) + 1
    last = (rings - 2) * n
    faces += [(south, j, (j + 1) % n) for j in range(n)]
    faces += [(last + (j + 1) % n, last + j, north) for j in range(n)]
    verts = np.vstack([verts, [[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])
    params = np.vstack([params, [[0.0, -np.pi / 2], [0.0, np.pi / 2]]])
    return verts, faces, params


def vertex_normals(vertices: np.ndarray, faces: list[tuple[int, ...]]) -> np.ndarray:
    """Area-weighted unit normals (N, 3) of a polygon mesh (quads and triangles)."""
    normals = np.zeros_like(vertices)
    for size in (3, 4):
        polys = np.array([f for f in faces if len(f) == size], dtype=np.int64)
        if len(polys) == 0:
            continue
        for i in range(1, size - 1):
            a, b, c = vertices[polys[:, 0]], vertices[polys[:, i]], vertices[polys[:, i + 1]]
            n = np.cross(b - a, c - a)
            for k in (0, i, i + 1):
                np.add.at(normals, polys[:, k], n)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
