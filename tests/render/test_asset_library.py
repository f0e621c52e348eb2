"""scan_asset_library lists the asset files of each category and fails clearly on a wrong folder."""

import pytest

from render.asset_library import scan_asset_library
from render.recipe import ASSET_CATEGORIES, ASSET_SUFFIXES, sample_recipe


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_lists_asset_files_per_category(tmp_path):
    touch(tmp_path / "hair" / "long_wavy.glb")
    touch(tmp_path / "hair" / "afro.BLEND")
    touch(tmp_path / "hair" / "styles" / "bob.gltf")
    touch(tmp_path / "hair" / "styles" / "bob.bin")  # glTF buffer: not an asset by itself
    touch(tmp_path / "hair" / "notes.txt")
    touch(tmp_path / "hair" / ".hidden.glb")
    touch(tmp_path / "hair" / ".cache" / "tmp.glb")
    touch(tmp_path / "accessories" / "crown.blend")
    (tmp_path / "clothing").mkdir()
    touch(tmp_path / "props" / "chair.glb")  # not a category
    catalog = scan_asset_library(tmp_path)
    assert catalog == {
        "hair": ["afro.BLEND", "long_wavy.glb", "styles/bob.gltf"],
        "clothing": [],
        "accessories": ["crown.blend"],
    }
    assert set(catalog) <= set(ASSET_CATEGORIES)
    assert all(name.lower().endswith(ASSET_SUFFIXES) for files in catalog.values() for name in files)


def test_catalog_feeds_the_recipe_sampler(tmp_path):
    touch(tmp_path / "hair" / "a.glb")
    touch(tmp_path / "hair" / "b.glb")
    touch(tmp_path / "clothing" / "coat.blend")
    (tmp_path / "facial_hair").mkdir()
    catalog = scan_asset_library(str(tmp_path))
    recipes = [sample_recipe(0, i, catalog) for i in range(30)]
    assert {r.assets["hair"] for r in recipes} == {"a.glb", "b.glb"}
    assert all(r.assets["clothing"] == "coat.blend" and "facial_hair" not in r.assets for r in recipes)
    for recipe in recipes:
        for category, name in recipe.assets.items():
            assert (tmp_path / category / name).is_file()


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan_asset_library(tmp_path / "nowhere")


def test_a_file_is_not_a_library(tmp_path):
    touch(tmp_path / "hair.glb")
    with pytest.raises(NotADirectoryError, match="hair.glb"):
        scan_asset_library(tmp_path / "hair.glb")


def test_folder_without_categories_lists_what_it_found(tmp_path):
    touch(tmp_path / "Hairstyles" / "a.glb")
    touch(tmp_path / "loose.glb")
    with pytest.raises(ValueError, match=r"Hairstyles.*") as error:
        scan_asset_library(tmp_path)
    assert all(category in str(error.value) for category in ASSET_CATEGORIES)
