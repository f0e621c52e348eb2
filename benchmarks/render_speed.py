"""Rendering speed of the corpus stage, and what its Cycles settings cost in image quality.

Paper §4.1 / appendix B.2 render 300 views per subject for 100K subjects, so seconds per view
decide the cost of the corpus. This script prints, in one run:

1. seconds per view at 64x64 and 256x256 with the project's settings (``RenderConfig`` of the
   preset), median over several avatars (scene built once per avatar, only the camera moves);
2. for one avatar and view at 256x256: the project's settings, Blender's default Cycles settings
   (factory samples, adaptive threshold, light paths and denoiser) and a high-sample reference;
   seconds per view, the speed ratio, and PSNR / SSIM of each against the reference.

All three share the scene, lights, camera and the 'Standard' view transform, so the comparison
isolates the sampling settings. Run: ``.venv/bin/python benchmarks/render_speed.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bpy
import numpy as np
from PIL import Image

from render.avatar.build import build_avatar
from render.blender_scene import (
    add_camera,
    add_lights,
    configure_cycles,
    reset_scene,
    set_camera_pose,
)
from render.recipe import sample_recipe
from rodin_core.cameras import make_rig
from rodin_core.config import RenderConfig, preset_config
from rodin_core.metrics import psnr, ssim


def build_scene(subject_id: int, render_cfg: RenderConfig, views: int) -> tuple[bpy.types.Object, np.ndarray]:
    """Reset Blender, build one avatar with lights and the rig camera; returns the camera and poses."""
    reset_scene()
    configure_cycles(render_cfg)
    add_lights()
    build_avatar(sample_recipe(0, subject_id))
    rig = make_rig(views, render_cfg.resolution, render_cfg.fov_deg, render_cfg.camera_radius,
                   render_cfg.elevation_min_deg, render_cfg.elevation_max_deg)
    return add_camera(rig), rig.c2w


def render_view(camera: bpy.types.Object, c2w: np.ndarray, path: Path) -> tuple[float, np.ndarray]:
    """Render one view to ``path``; returns the seconds taken and the RGBA image in [0, 1]."""
    set_camera_pose(camera, c2w)
    bpy.context.scene.render.filepath = str(path)
    start = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    seconds = time.perf_counter() - start
    return seconds, np.asarray(Image.open(path), dtype=np.float64) / 255.0


def seconds_per_view(resolution: int, avatars: int, views: int, workdir: Path) -> float:
    """Median seconds per view over ``avatars`` avatars x ``views`` views with the project's settings."""
    cfg = preset_config("paper").render
    cfg.resolution = resolution
    times = []
    for subject in range(avatars):
        camera, poses = build_scene(subject, cfg, views)
        render_view(camera, poses[0], workdir / "warmup.png")  # first render syncs the scene
        times += [render_view(camera, pose, workdir / f"v{k}.png")[0] for k, pose in enumerate(poses)]
    return statistics.median(times)


def blender_defaults(scene: bpy.types.Scene) -> None:
    """Restore Blender's factory Cycles sampling, light-path and denoising settings."""
    factory = scene.cycles.bl_rna.properties
    for name in ("samples", "use_adaptive_sampling", "adaptive_threshold", "adaptive_min_samples",
                 "use_denoising", "denoiser", "denoising_input_passes", "denoising_prefilter", "denoising_quality",
                 "max_bounces", "diffuse_bounces", "glossy_bounces", "transmission_bounces",
                 "volume_bounces", "transparent_max_bounces", "caustics_reflective",
                 "caustics_refractive", "blur_glossy", "sample_clamp_indirect", "tile_size"):
        default = factory[name].default
        if default != "":  # enums whose default depends on the build (the denoiser) keep their value
            setattr(scene.cycles, name, default)


def reference(scene: bpy.types.Scene) -> None:
    """High-sample reference: factory light paths, 2048 samples everywhere, denoised."""
    blender_defaults(scene)
    scene.cycles.samples = 2048
    scene.cycles.use_adaptive_sampling = False


def compare_settings(subject: int, view: int, workdir: Path) -> list[tuple[str, float, np.ndarray]]:
    cfg = preset_config("paper").render
    camera, poses = build_scene(subject, cfg, max(view + 1, 2))
    scene = bpy.context.scene
    modes: list[tuple[str, Callable[[bpy.types.Scene], None]]] = [
        ("project", lambda s: configure_cycles(cfg, s)),
        ("blender-default", blender_defaults),
        ("reference-2048spp", reference),
    ]
    results = []
    for name, apply in modes:
        apply(scene)
        render_view(camera, poses[view], workdir / "warmup.png")
        seconds, image = render_view(camera, poses[view], workdir / f"{name}.png")
        results.append((name, seconds, image))
        print(f"  {name:<18} {seconds:8.2f} s/view (samples={scene.cycles.samples}, "
              f"adaptive={scene.cycles.use_adaptive_sampling}, bounces={scene.cycles.max_bounces})", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatars", type=int, default=5, help="avatars for the median (default 5)")
    parser.add_argument("--views", type=int, default=6, help="views per avatar (default 6)")
    parser.add_argument("--compare-view", type=int, default=0, help="view of the settings comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        threads = preset_config("paper").render.threads
        print(f"Blender {bpy.app.version_string}, Cycles on CPU, {threads} thread(s) per render "
              "(the corpus flow runs one shard per core)")
        for resolution in (64, 256):
            spv = seconds_per_view(resolution, args.avatars, args.views, workdir)
            print(f"project settings {resolution:>3}x{resolution:<3}: {spv:.3f} s/view "
                  f"(median of {args.avatars} avatars x {args.views} views)", flush=True)
        print(f"settings comparison, avatar 0, view {args.compare_view}, 256x256:")
        results = compare_settings(0, args.compare_view, workdir)
        ref = results[-1][2]
        print(f"{'settings':<18} {'s/view':>8} {'speed-up':>9} {'PSNR dB':>8} {'SSIM':>7}   (vs reference, RGBA)")
        for name, seconds, image in results:
            ratio = results[1][1] / seconds
            print(f"{name:<18} {seconds:8.2f} {ratio:8.1f}x {psnr(image, ref):8.2f} {ssim(image, ref):7.4f}")


if __name__ == "__main__":
    main()
