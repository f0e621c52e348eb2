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

from pathlib import Path

import bpy

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
