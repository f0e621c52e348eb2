"""The Blender scene around one avatar: Cycles settings, studio lights and the rig camera (bpy).

Paper §4.1 / appendix B.2: every synthetic subject is rendered from many known cameras (300 views
at 256x256 in the paper). The scene is built once per avatar; between views only the camera
moves, so Cycles' persistent data keeps the BVH, shaders and images of the avatar in memory.

Colours: the view transform is 'Standard' (plain sRGB OETF), not Filmic/AgX, so that a surface's
recipe colour reaches the PNG unchanged apart from the lighting. Alpha is kept (transparent film):
the background is alpha 0, which the tri-plane fitting uses as the foreground mask.

Cameras: one Blender camera with the rig's pinhole intrinsics; its pose is set from an OpenCV
camera-to-world matrix through :func:`rodin_core.cameras.opencv_from_blender`, the one conversion
between the two conventions (see ``docs/conventions.md``).
"""

from __future__ import annotations

import math

import bpy
import numpy as np
from mathutils import Matrix, Vector

from rodin_core.cameras import FACE_DIRECTION, WORLD_UP, CameraRig, opencv_from_blender
from rodin_core.config import RenderConfig

SENSOR_WIDTH_MM = 36.0
"""Width of the virtual sensor; only the ratio lens / sensor width matters."""

WORLD_LIGHT_STRENGTH = 0.35
"""Strength of the uniform grey world light that keeps the back and the shadows readable."""


def reset_scene() -> bpy.types.Scene:
    """Load factory settings with an empty scene (no objects, no world) and return the scene."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


def configure_cycles(render_cfg: RenderConfig, scene: bpy.types.Scene | None = None) -> bpy.types.Scene:
    """Set up Cycles on CPU for fast renders at equal quality, transparent RGBA PNG output.

    Samples from the config with adaptive sampling, OpenImageDenoise when ``render_cfg.denoise``,
    light paths capped (diffuse 3, glossy and transmission 2, transparent 4, never above
    ``max_bounces``; no caustics, indirect light clamped against fireflies), one tile for the whole
    (small) image, ``render_cfg.threads`` threads (0: auto) and persistent data, so the scene is
    synced once and only the camera moves between views. Blender's stamp metadata (date, file
    name) is off; Cycles still records its timings in the PNG, which the host strips on storing.
    """
    scene = scene or bpy.context.scene
    scene.render.engine = "CYCLES"
    cycles = scene.cycles
    cycles.device = "CPU"
    cycles.samples = render_cfg.samples
    cycles.use_adaptive_sampling = True
    cycles.adaptive_threshold = 0.02
    cycles.adaptive_min_samples = min(render_cfg.samples, max(1, render_cfg.samples // 4))
    cycles.use_denoising = render_cfg.denoise
    if render_cfg.denoise:
        cycles.denoiser = "OPENIMAGEDENOISE"
        cycles.denoising_input_passes = "RGB_ALBEDO_NORMAL"
        cycles.denoising_prefilter = "ACCURATE"
        # At 256x256, 8 samples: 'HIGH' costs 2.2x the time of 'BALANCED' for +0.3 dB PSNR.
        cycles.denoising_quality = "BALANCED"
    cycles.seed = 0
    cycles.use_animated_seed = False

    bounces = render_cfg.max_bounces
    cycles.max_bounces = bounces
    cycles.diffuse_bounces = min(3, bounces)
    cycles.glossy_bounces = min(2, bounces)
    cycles.transmission_bounces = min(2, bounces)
    cycles.volume_bounces = 0
    cycles.transparent_max_bounces = min(4, bounces)
    cycles.caustics_reflective = False
    cycles.caustics_refractive = False
    cycles.blur_glossy = 1.0
    cycles.sample_clamp_indirect = 10.0

    cycles.use_auto_tile = True
    cycles.tile_size = max(64, render_cfg.resolution)

    render = scene.render
    render.threads_mode = "AUTO" if render_cfg.threads == 0 else "FIXED"
    if render_cfg.threads > 0:
        render.threads = render_cfg.threads
    render.use_persistent_data = True
    render.film_transparent = True
    render.resolution_x = render_cfg.resolution
    render.resolution_y = render_cfg.resolution
    render.resolution_percentage = 100
    render.pixel_aspect_x = 1.0
    render.pixel_aspect_y = 1.0
    render.use_border = False
    for flag in (name for name in dir(render) if name.startswith("use_stamp")):
        setattr(render, flag, False)

    settings = render.image_settings
    settings.file_format = "PNG"
    settings.color_mode = "RGBA"
    settings.color_depth = "8"
    settings.compression = 15

    scene.display_settings.display_device = "sRGB"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    return scene


def _area_light(name: str, location: np.ndarray, energy: float, size: float) -> bpy.types.Object:
    """An area light at ``location`` aimed at the head centre, invisible to the camera."""
    light = bpy.data.lights.new(name, type="AREA")
    light.energy = energy
    light.shape = "DISK"
    light.size = size
    obj = bpy.data.objects.new(name, light)
    obj.location = Vector(location.tolist())
    # An area light emits along its local -Z: aim that axis at the origin.
    obj.rotation_euler = (-Vector(location.tolist())).to_track_quat("-Z", "Y").to_euler()
    obj.visible_camera = False
    bpy.context.scene.collection.objects.link(obj)
    return obj


def add_lights(scene: bpy.types.Scene | None = None) -> list[bpy.types.Object]:
    """Three-point studio lighting around the face plus a soft uniform world light.

    Key: front-left and above the face; fill: front-right, weaker; rim: behind and above, so the
    silhouette and the back of the head are lit too. The world light keeps every view readable.
    Returns the three light objects.
    """
    scene = scene or bpy.context.scene
    front, up = FACE_DIRECTION, WORLD_UP
    left = np.cross(up, front)  # the avatar's left (+X) when the face looks along -Y
    lights = [
        _area_light("key", 4.0 * front + 2.5 * left + 2.5 * up, energy=250.0, size=2.5),
        _area_light("fill", 4.0 * front - 3.0 * left + 0.5 * up, energy=90.0, size=3.0),
        _area_light("rim", -4.0 * front + 0.8 * left + 3.0 * up, energy=200.0, size=2.0),
    ]
    world = scene.world or bpy.data.worlds.new("studio")
    scene.world = world
    background = world.node_tree.nodes["Background"]
    background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    background.inputs["Strength"].default_value = WORLD_LIGHT_STRENGTH
    return lights


def add_camera(rig: CameraRig, scene: bpy.types.Scene | None = None) -> bpy.types.Object:
    """One perspective camera with the rig's pinhole intrinsics, made the scene's active camera.

    The rig must have square pixels and its principal point at the image centre (Blender's camera
    has no skew and its shift is left at 0); the lens follows from the focal length in pixels:
    ``lens_mm = fx * sensor_width / width``.
    """
    scene = scene or bpy.context.scene
    K = np.asarray(rig.intrinsics, dtype=np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if not math.isclose(fx, fy, rel_tol=1e-6):
        raise ValueError(f"rig intrinsics have non-square pixels (fx={fx}, fy={fy}); use fx == fy")
    if not (math.isclose(cx, rig.width / 2.0, abs_tol=1e-6) and math.isclose(cy, rig.height / 2.0, abs_tol=1e-6)):
        raise ValueError(
            f"rig principal point ({cx}, {cy}) is not the image centre ({rig.width / 2}, {rig.height / 2}); "
            "build the intrinsics with rodin_core.cameras.intrinsics_from_fov"
        )
    data = bpy.data.cameras.new("rig_camera")
    data.type = "PERSP"
    data.sensor_fit = "HORIZONTAL" if rig.width >= rig.height else "VERTICAL"
    data.sensor_width = SENSOR_WIDTH_MM
    data.sensor_height = SENSOR_WIDTH_MM
    sensor_pixels = rig.width if data.sensor_fit == "HORIZONTAL" else rig.height
    data.lens = fx * SENSOR_WIDTH_MM / sensor_pixels
    data.shift_x = 0.0
    data.shift_y = 0.0
    data.clip_start = 0.05
    data.clip_end = 100.0
    cam = bpy.data.objects.new("rig_camera", data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    scene.render.resolution_x = rig.width
    scene.render.resolution_y = rig.height
    scene.render.resolution_percentage = 100
    return cam


def set_camera_pose(cam: bpy.types.Object, c2w_opencv: np.ndarray) -> None:
    """Place ``cam`` at an OpenCV camera-to-world pose (4, 4)."""
    c2w = np.asarray(c2w_opencv, dtype=np.float64)
    if c2w.shape != (4, 4):
        raise ValueError(f"camera pose must be a (4, 4) matrix, got shape {c2w.shape}")
    cam.matrix_world = Matrix(opencv_from_blender(c2w).tolist())


def camera_pose(cam: bpy.types.Object) -> np.ndarray:
    """The OpenCV camera-to-world (4, 4) of a Blender camera, read back from its ``matrix_world``."""
    return opencv_from_blender(np.array(cam.matrix_world, dtype=np.float64))


def render_still(path: str, scene: bpy.types.Scene | None = None) -> None:
    """Render the active camera to the PNG file ``path``."""
    scene = scene or bpy.context.scene
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
