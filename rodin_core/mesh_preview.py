"""A picture of a coloured mesh from a few sides, drawn with numpy alone (the meshes of paper Fig. 5).

:func:`mesh_preview` draws ``mesh.visual.vertex_colors`` of a mesh made by
:func:`rodin_core.mesh.extract_mesh` from ``views`` yaw angles around the world up axis (+Z; yaw 0 is
the frontal side, the face looking towards -Y, see ``docs/conventions.md``), orthographic, the
views side by side. Every face is drawn as its three vertices and its centroid splatted into a
depth buffer, each point a square of ``splat`` pixels, and lit with a headlight Lambert term
(ambient ``AMBIENT``) from the face normal; the nearest point wins each pixel. On a marching-cubes
mesh of a 128^3 grid faces are smaller than a pixel of a 256-pixel view, so the splats close up.
It needs no OpenGL, which the machines this runs on often lack.
"""

from __future__ import annotations

import math

import numpy as np
import trimesh

AMBIENT = 0.35
"""Share of the colour kept on faces turned away from the viewer."""


def _yaw_rotation(yaw: float) -> np.ndarray:
    """(3, 3) world -> view rotation: turn the world by ``-yaw`` about +Z, so the camera sits at yaw ``yaw``."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def _draw(points: np.ndarray, colours: np.ndarray, size: int, half_width: float, splat: int,
          background: np.ndarray) -> np.ndarray:
    """Points (P, 3) in view space (x right, y into the picture, z up) with colours (P, 3) -> (size, size, 3)."""
    scale = (size - 1) / (2.0 * half_width)
    u = np.rint((points[:, 0] + half_width) * scale).astype(np.int64)  # (P,) column
    v = np.rint((half_width - points[:, 2]) * scale).astype(np.int64)  # (P,) row, up is up
    depth = points[:, 1]  # (P,) larger is further away
    image = np.broadcast_to(background, (size, size, 3)).copy()
    nearest = np.full(size * size, np.inf)
    owner = np.full(size * size, -1, dtype=np.int64)
    for du in range(splat):
        for dv in range(splat):
            uu, vv = u + du - splat // 2, v + dv - splat // 2
            inside = (uu >= 0) & (uu < size) & (vv >= 0) & (vv < size)
            pixel, index = vv[inside] * size + uu[inside], np.nonzero(inside)[0]
            order = np.lexsort((depth[index], pixel))  # by pixel, nearest first
            pixel, index = pixel[order], index[order]
            first = np.ones(len(pixel), dtype=bool)
            first[1:] = pixel[1:] != pixel[:-1]
            pixel, index = pixel[first], index[first]
            closer = depth[index] < nearest[pixel]
            nearest[pixel[closer]] = depth[index[closer]]
            owner[pixel[closer]] = index[closer]
    drawn = owner >= 0
    image.reshape(-1, 3)[drawn] = colours[owner[drawn]]
    return image


def mesh_preview(mesh: trimesh.Trimesh, views: int = 4, size: int = 256, splat: int = 2,
                 background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """uint8 (size, views * size, 3): the mesh's vertex colours seen from ``views`` yaws 360/views degrees apart.

    The picture frames the mesh's bounding sphere, the same scale in every view. Raises ValueError for a
    mesh without faces or vertex colours, or for ``views``, ``size`` or ``splat`` below 1.
    """
    if min(views, size, splat) < 1:
        raise ValueError(f"views, size and splat must be at least 1, got {views}, {size}, {splat}")
    if len(mesh.faces) == 0:
        raise ValueError("the mesh has no faces to draw")
    if mesh.visual.kind != "vertex":
        raise ValueError("the mesh has no vertex colours; make it with rodin_core.mesh.extract_mesh")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)  # (V, 3)
    faces = np.asarray(mesh.faces, dtype=np.int64)  # (F, 3)
    vertex_rgb = np.asarray(mesh.visual.vertex_colors, dtype=np.float64)[:, :3]  # (V, 3)
    corners = vertices[faces]  # (F, 3, 3)
    centroids = corners.mean(axis=1)  # (F, 3)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # (F, 3)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    face_rgb = vertex_rgb[faces].mean(axis=1)  # (F, 3)
    centre = (vertices.max(axis=0) + vertices.min(axis=0)) / 2.0
    half_width = float(np.linalg.norm(vertices - centre, axis=1).max()) * 1.05 or 1.0
    points = np.concatenate([corners.reshape(-1, 3), centroids]) - centre  # (4F, 3): corners, then centroids
    point_face = np.concatenate([np.repeat(np.arange(len(faces)), 3), np.arange(len(faces))])  # (4F,)
    background_rgb = np.asarray(background, dtype=np.uint8)
    pictures = []
    for k in range(views):
        rotation = _yaw_rotation(2.0 * math.pi * k / views)
        facing = -(normals @ rotation.T)[:, 1]  # (F,) cosine between the face normal and the way to the viewer
        light = AMBIENT + (1.0 - AMBIENT) * np.clip(facing, 0.0, 1.0)
        colours = np.clip(np.rint(face_rgb * light[:, None]), 0, 255).astype(np.uint8)  # (F, 3)
        pictures.append(_draw(points @ rotation.T, colours[point_face], size, half_width, splat, background_rgb))
    return np.concatenate(pictures, axis=1)
