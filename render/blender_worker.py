"""Render one shard of avatars inside an isolated Blender process (paper §4.1, appendix B.2).

Run as ``python -m render.blender_worker SPEC.json``; :mod:`render.launcher` starts it in its own
process group with a timeout, so that a crash or a hang of Blender costs one shard attempt and
never the flow. The spec is a JSON object::

    {"subject_ids": [0, 1], "seed": 0, "render": {...RenderConfig fields...},
     "output_dir": "/tmp/work", "asset_dir": null, "asset_catalog": {}}

For every subject the worker builds the scene once (reset, Cycles settings, lights, avatar,
camera), then only moves the camera between views, and writes::

    <output_dir>/<subject_id:06d>/view_<k:04d>.png   RGBA, resolution x resolution, k < views
    <output_dir>/<subject_id:06d>/recipe.json        the AvatarRecipe the avatar was built from
    <output_dir>/<subject_id:06d>/DONE               written last: JSON timings and Blender version

It prints one progress line per subject to stdout and exits non-zero on any error (1: rendering
failed, 2: the spec is invalid).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy

from render import blender_scene
from render.avatar.build import build_avatar
from render.launcher import DONE_NAME, RECIPE_NAME, subject_dir, view_name
from render.recipe import sample_recipe
from rodin_core.cameras import CameraRig, make_rig
from rodin_core.config.corpus import RenderConfig
from rodin_core.config.keys import merge
from rodin_core.config_dict import ConfigError

SPEC_KEYS = ("subject_ids", "seed", "render", "output_dir", "asset_dir", "asset_catalog")
EXIT_RENDER_FAILED = 1
EXIT_BAD_SPEC = 2


class SpecError(ValueError):
    """The worker spec is malformed; the message names the field and the expected value."""


@dataclass(frozen=True)
class WorkerSpec:
    """A validated worker spec."""

    subject_ids: list[int]
    seed: int
    """Corpus seed: (seed, subject id) determines the avatar."""
    render: RenderConfig
    output_dir: Path
    asset_dir: str | None
    asset_catalog: dict[str, list[str]]
    """Asset-library category -> available files (see ``render.recipe.sample_recipe``)."""


def parse_spec(spec: Mapping[str, Any]) -> WorkerSpec:
    """Check every field of a spec (a decoded JSON object); :class:`SpecError` names the bad one."""
    missing = [k for k in SPEC_KEYS if k not in spec]
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if missing or unknown:
        raise SpecError(f"worker spec has missing fields {missing} and unknown fields {unknown}; "
                        f"it needs exactly {list(SPEC_KEYS)}")
    ids = spec["subject_ids"]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                      for i in ids):
        raise SpecError(f"spec.subject_ids must be a non-empty list of integers >= 0, got {ids!r}")
    seed = spec["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SpecError(f"spec.seed must be an integer >= 0, got {seed!r}")
    if not isinstance(spec["render"], Mapping):
        raise SpecError(f"spec.render must be a mapping of RenderConfig fields, got {spec['render']!r}")
    try:
        render_cfg = RenderConfig()
        merge(render_cfg, spec["render"], "render", {})  # unknown keys and wrong types name the field
        render_cfg.validate()
    except ConfigError as exc:
        raise SpecError(f"spec.render is not a valid render config: {exc}") from exc
    output_dir = spec["output_dir"]
    if not isinstance(output_dir, str) or not output_dir:
        raise SpecError(f"spec.output_dir must be a folder path, got {output_dir!r}")
    asset_dir = spec["asset_dir"]
    if asset_dir is not None and not isinstance(asset_dir, str):
        raise SpecError(f"spec.asset_dir must be null or a folder path, got {asset_dir!r}")
    catalog = spec["asset_catalog"] or {}
    if not isinstance(catalog, Mapping) or not all(isinstance(v, list) for v in catalog.values()):
        raise SpecError(f"spec.asset_catalog must map categories to lists of files, got {catalog!r}")
    return WorkerSpec(ids, seed, render_cfg, Path(output_dir), asset_dir, dict(catalog))


def render_subject(subject_id: int, seed: int, render_cfg: RenderConfig, rig: CameraRig, output_dir: Path,
                   asset_dir: str | None, asset_catalog: Mapping[str, list[str]]) -> dict[str, Any]:
    """Build one avatar, render all views of ``rig`` and write its files; returns its timings."""
    start = time.perf_counter()
    recipe = sample_recipe(seed, subject_id, asset_catalog)
    folder = subject_dir(output_dir, subject_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE_NAME).unlink(missing_ok=True)
    scene = blender_scene.reset_scene()
    blender_scene.configure_cycles(render_cfg, scene)
    blender_scene.add_lights(scene)
    build_avatar(recipe, asset_dir)
    cam = blender_scene.add_camera(rig, scene)
    build_seconds = time.perf_counter() - start

    render_start = time.perf_counter()
    for k in range(len(rig)):
        blender_scene.set_camera_pose(cam, rig.c2w[k])
        blender_scene.render_still(str(folder / view_name(k)), scene)
    render_seconds = time.perf_counter() - render_start

    (folder / RECIPE_NAME).write_text(recipe.to_json())
    stats = {
        "subject_id": subject_id,
        "build_seconds": round(build_seconds, 4),
        "render_seconds": round(render_seconds, 4),
        "views": len(rig),
        "blender_version": bpy.app.version_string,
    }
    (folder / DONE_NAME).write_text(json.dumps(stats, sort_keys=True))
    return stats


def run(spec: WorkerSpec) -> list[dict[str, Any]]:
    """Render every subject of ``spec``; returns the per-subject timings (also in each DONE file)."""
    r = spec.render
    rig = make_rig(r.views, r.resolution, r.fov_deg, r.camera_radius, r.elevation_min_deg, r.elevation_max_deg)
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    print(f"[blender_worker] Blender {bpy.app.version_string}: {len(spec.subject_ids)} subjects x {r.views} views "
          f"at {r.resolution}x{r.resolution}, {r.samples} samples", flush=True)
    results = []
    for i, subject_id in enumerate(spec.subject_ids, start=1):
        stats = render_subject(subject_id, spec.seed, r, rig, spec.output_dir, spec.asset_dir, spec.asset_catalog)
        per_view = stats["render_seconds"] / max(1, stats["views"])
        print(f"[blender_worker] subject {i}/{len(spec.subject_ids)} id={subject_id} views={stats['views']} "
              f"build={stats['build_seconds']:.2f}s render={stats['render_seconds']:.2f}s "
              f"({per_view:.3f} s/view)", flush=True)
        results.append(stats)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m render.blender_worker SPEC.json``; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m render.blender_worker SPEC.json", file=sys.stderr)
        return EXIT_BAD_SPEC
    try:
        data = json.loads(Path(args[0]).read_text())
        if not isinstance(data, dict):
            raise SpecError(f"spec file {args[0]!r} must hold a JSON object, got {type(data).__name__}")
        spec = parse_spec(data)
    except (OSError, ValueError) as exc:
        print(f"[blender_worker] invalid spec {args[0]!r}: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_SPEC
    try:
        run(spec)
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        return EXIT_RENDER_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
