"""The asset library: artist-made parts that replace procedural ones in the avatar factory.

Paper §4.1 / appendix B.2 builds the synthetic corpus from a large library of hairstyles, clothes
and accessories combined at random. Here an asset library is a local folder with one sub-folder
per category of ``render.recipe.ASSET_CATEGORIES`` (``hair/``, ``facial_hair/``, ``clothing/``,
``accessories/``), each holding ``.blend`` / ``.glb`` / ``.gltf`` files authored in the world
convention of ``docs/conventions.md`` (head centre at the origin, +Z up, face towards -Y, inside
[-1, 1]^3). :func:`scan_asset_library` lists it; :func:`render.recipe.sample_recipe` draws one file
per listed category, and ``render.avatar.build.build_avatar`` imports it in place of the
procedural part.

Pure Python (no bpy): the host scans the library once and ships the catalogue to the renderers.
"""

from __future__ import annotations

from pathlib import Path

from render.recipe import ASSET_CATEGORIES, ASSET_SUFFIXES


def scan_asset_library(folder: str | Path) -> dict[str, list[str]]:
    """List the asset files of each category found in ``folder``.

    Returns ``{category: [file, ...]}`` for every category sub-folder present (an empty list when it
    holds no asset), with files as POSIX paths relative to the category folder (sub-folders are
    searched too), sorted, keeping only suffixes of ``ASSET_SUFFIXES`` (case-insensitive) and
    skipping hidden files and folders (names starting with ``.``).

    Raises FileNotFoundError when ``folder`` does not exist, NotADirectoryError when it is a file,
    and ValueError when it holds none of the category sub-folders.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"asset library folder {str(root)!r} does not exist; pass the folder that holds "
                                f"the category sub-folders {', '.join(ASSET_CATEGORIES)}")
    if not root.is_dir():
        raise NotADirectoryError(f"asset library {str(root)!r} is a file; pass the folder that holds "
                                 f"the category sub-folders {', '.join(ASSET_CATEGORIES)}")
    catalog: dict[str, list[str]] = {}
    for category in ASSET_CATEGORIES:
        category_dir = root / category
        if not category_dir.is_dir():
            continue
        files = []
        for path in category_dir.rglob("*"):
            relative = path.relative_to(category_dir)
            if any(part.startswith(".") for part in relative.parts):
                continue
            if path.is_file() and path.suffix.lower() in ASSET_SUFFIXES:
                files.append(relative.as_posix())
        catalog[category] = sorted(files)
    if not catalog:
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise ValueError(f"asset library {str(root)!r} has none of the category sub-folders "
                         f"{', '.join(ASSET_CATEGORIES)} (found folders: {found or 'none'}); "
                         "put each asset under the folder of its category")
    return catalog
