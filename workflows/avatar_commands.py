"""What ``rodin invert``, ``rodin interpolate``, ``rodin mesh`` and ``rodin render-avatar`` do: local files
in, local files out (paper §4.5 portrait inversion, §4.2 Fig. 6 interpolation and Fig. 5 meshes,
appendix C.2 Fig. 15 x̂0 along the reverse process).

Each reads the committed checkpoints and/or the frozen decoder of a dataset root ``out``
(:mod:`rodin_core.generation.job`), refuses an avatar made for another decoder, and writes into a
local ``dest``: avatars as ``.safetensors`` (:mod:`rodin_core.generation.avatar`), turntables as a
GIF plus PNG frames, strips as PNG, meshes as ``.glb``/``.ply``. Plain functions without Prefect,
so that the commands start fast; bad input raises :class:`GenerateInputError` (or one of
:data:`rodin_core.generation.job.GENERATION_ERRORS`) with a message that says what to do.
For callers that reuse or mesh these outputs: :func:`inversion_inputs` identifies what an inversion
reads, :func:`density_range` tells the density values an avatar's field reaches.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rodin_core.config import PRESETS, RodinConfig, preset_config
from rodin_core.datasets.decoder import load_decoder
from rodin_core.datasets.layout import CHECKPOINTS_STAGE
from rodin_core.datasets.refiner_store import read_refiner
from rodin_core.generation import (
    Avatar,
    GenerationError,
    GenerationPipeline,
    SampleOptions,
    load_avatar,
    save_avatar,
)
from rodin_core.generation.job import (
    TURNTABLE_FPS,
    GenerateInputError,
    GenerateRequest,
    input_digests,
    load_pipeline,
    trained_config,
    turntable_frames,
    write_file,
)
from rodin_core.generation.portrait import check_portrait_size
from rodin_core.generation.refine import comparison_sheet, refined_turntable
from rodin_core.imaging import contact_sheet, encode_png, image_to_rgb
from rodin_core.mesh import (
    DEFAULT_THRESHOLD,
    MESH_FORMATS,
    density_grid,
    export_mesh,
    extract_mesh,
)
from rodin_core.mesh_preview import mesh_preview
from rodin_core.networks.refiner_io import TrainedRefiner
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.turntable import save_frames, save_gif, x0_strip

log = logging.getLogger(__name__)

X0_TILES = 6
"""x̂0 renders per diffusion stage in the reverse-process strip."""
INVERSION_STAGES = ("base", "upsampler")
"""The checkpoints portrait inversion reads (it needs no latent prior)."""


def write_turntable(folder: str | Path, stem: str, frames: np.ndarray) -> list[Path]:
    """``{stem}-turntable.gif`` and ``{stem}-turntable/frame_0000.png ...`` under ``folder``."""
    folder = Path(folder)
    gif = save_gif(frames, folder / f"{stem}-turntable.gif", TURNTABLE_FPS)
    return [gif, *save_frames(frames, folder / f"{stem}-turntable")]


def check_counts(**counts: int | None) -> None:
    """Refuse a ``--views``, ``--resolution`` or ``--frames`` that is not a positive integer (None: default)."""
    for name, value in counts.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise GenerateInputError(f"--{name} must be a positive integer, got {value!r}")


def check_preset_name(preset: str | None) -> None:
    """Refuse an unknown ``--preset`` before anything is loaded."""
    if preset is not None and preset not in PRESETS:
        raise GenerateInputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


def render_config(out: str, avatar: Avatar, storage_options: dict | None = None) -> RodinConfig:
    """The config whose render and fit sections draw ``avatar``: the checkpoints' config when committed,
    else the preset named in the avatar's meta."""
    cfg = trained_config(out, storage_options)
    if cfg is not None:
        return cfg
    preset = avatar.meta.get("preset")
    if preset not in PRESETS:
        raise GenerateInputError(f"no committed checkpoint under {out}/{CHECKPOINTS_STAGE} to take the "
                                 f"render settings from and the avatar names no known preset ({preset!r}); train "
                                 f"the stages first: `rodin train all --out {out}`")
    return preset_config(preset)


def read_image(path: str | Path) -> np.ndarray:
    """A portrait image file of any mode and bit depth -> float32 RGB (H, W, 3) in [0, 1], alpha composited over
    white as the encoder composites the renders (:func:`rodin_core.imaging.image_to_rgb`); a portrait too small
    to hold a face is refused. :class:`GenerateInputError` when it is no usable image."""
    source = Path(path)
    if not source.is_file():
        raise GenerateInputError(f"no image file at {str(source)!r}; pass the path of a portrait (PNG or JPEG)")
    try:
        with Image.open(source) as image:
            image.load()
            decoded = image
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise GenerateInputError(f"{str(source)!r} is not an image file PIL can read ({type(exc).__name__}); pass a "
                                 "portrait as PNG or JPEG, e.g. a subject's frontal render") from None
    try:
        rgb = image_to_rgb(decoded, background=1.0)
    except ValueError as exc:
        raise GenerateInputError(f"{str(source)!r}: {exc}") from None
    try:
        check_portrait_size(*rgb.shape[:2])
    except GenerationError as exc:
        raise GenerateInputError(f"{str(source)!r}: {exc}") from None
    return rgb


def check_avatar(avatar: Avatar, source: str | Path, decoder: TriplaneDecoder, decoder_sha256: str | None,
                 out: str, cfg: RodinConfig | None = None) -> None:
    """Refuse an avatar the decoder of ``out`` cannot draw: another decoder or another channel count, and with
    ``cfg`` (the committed checkpoints' config) another preset or another plane shape."""
    made_with = avatar.meta.get("decoder_sha256")
    if made_with and decoder_sha256 and made_with != decoder_sha256:
        raise GenerateInputError(f"{str(source)!r} was made for decoder {made_with[:12]}, but the decoder of {out} is "
                                 f"{decoder_sha256[:12]}; pass the --out dataset root it was generated from")
    if cfg is not None:
        preset, shape = avatar.meta.get("preset"), tuple(avatar.planes.shape)
        side = cfg.triplane.resolution
        expected = (3, cfg.triplane.channels, side, side)
        if (preset is not None and preset != cfg.preset) or shape != expected:
            raise GenerateInputError(f"{str(source)!r} is an avatar of preset {preset!r} with planes {shape}, but the "
                                     f"checkpoints under {out} are of preset {cfg.preset!r} with planes {expected}; "
                                     "pass the --out dataset root it was generated from")
    channels = decoder.cfg.channels
    if avatar.planes.shape[1] != channels:
        raise GenerateInputError(f"{str(source)!r} has {avatar.planes.shape[1]}-channel planes, the decoder of {out} "
                                 f"reads {channels}; pass the --out dataset root it was generated from")


def options_for(meta: dict[str, Any], guidance_scale: float | None = None, sampler: str | None = None,
                steps: int | None = None) -> SampleOptions:
    """The sampling options recorded in an avatar's ``meta``, overridden by those given."""
    return SampleOptions(guidance_scale=meta.get("guidance_scale") if guidance_scale is None else guidance_scale,
                         sampler=meta.get("sampler") if sampler is None else sampler,
                         steps=meta.get("steps") if steps is None else steps)


def invert_portrait(out: str, image_path: str | Path, dest: str | Path, *, seed: int = 0,
                    guidance_scale: float | None = None, sampler: str | None = None, steps: int | None = None,
                    views: int = 24, resolution: int | None = None, preset: str | None = None,
                    storage_options: dict | None = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Portrait inversion (§4.5): image -> encoder z -> avatar, with its turntable, written under ``dest``.

    ``dest`` gets ``{stem}.safetensors``, ``{stem}-turntable.gif`` + frames and ``{stem}-inversion.png``
    (the input beside the avatar's frontal view); ``stem`` is the image's file stem.
    """
    check_preset_name(preset)
    options = GenerateRequest(guidance_scale=guidance_scale, sampler=sampler, steps=steps, seed=seed,
                              views=views, resolution=resolution).validate().options()
    image = read_image(image_path)  # (H, W, 3) float in [0, 1]
    pipeline = load_pipeline(out, storage_options, preset, device, require_prior=False)
    encoder_size = getattr(pipeline.encoder, "image_size", pipeline.cfg.encoder.image_size)
    try:
        warning = check_portrait_size(*image.shape[:2], encoder_size=encoder_size)
    except GenerationError as exc:
        raise GenerateInputError(f"{str(image_path)!r}: {exc}") from None
    if warning:
        log.warning("%s: %s", image_path, warning)
    start = time.perf_counter()
    avatar = pipeline.invert(image, seed=seed, options=options, name=Path(image_path).name)
    size = resolution or pipeline.cfg.render.resolution
    frames = turntable_frames(pipeline.cfg, pipeline.decoder, avatar.planes, views, size, progress=True)
    folder, stem = Path(dest), Path(image_path).stem
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)  # (H, W, 3)
    shown = np.asarray(Image.fromarray(pixels).resize((max(1, round(image.shape[1] * size / image.shape[0])), size),
                                                      Image.Resampling.LANCZOS))
    sheet = contact_sheet([shown, frames[0]], 2, ["input", "inverted"])
    paths = [save_avatar(avatar, folder / f"{stem}.safetensors"), *write_turntable(folder, stem, frames),
             write_file(folder / f"{stem}-inversion.png", encode_png(sheet))]
    log.info("inverted %s into %s in %.1f s", image_path, paths[0], time.perf_counter() - start)
    return {"avatar": str(paths[0]), "turntable": str(paths[1]), "frames": views, "comparison": str(paths[-1])}


def inversion_inputs(out: str, storage_options: dict | None = None, preset: str | None = None) -> dict[str, str]:
    """What identifies the committed inputs of :func:`invert_portrait` under ``out``: the weights sha256 and
    config hash of the base and upsampler checkpoints, and the decoder's weights sha256.

    Raises :class:`GenerateInputError` naming every missing piece and the command that makes it.
    """
    return input_digests(out, storage_options, stages=INVERSION_STAGES, preset=preset)


def interpolate_avatars(out: str, a_path: str | Path, b_path: str | Path, dest: str | Path, *, frames: int = 5,
                        seed: int | None = None, guidance_scale: float | None = None, sampler: str | None = None,
                        steps: int | None = None, resolution: int | None = None, preset: str | None = None,
                        storage_options: dict | None = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Latent interpolation (Fig. 6): ``frames`` avatars on the path from A (t = 0) to B (t = 1), under ``dest``.

    Seed and sampling options default to those recorded in A, so that t = 0 reproduces A when A
    and B were made with the same ones. ``dest`` gets ``interp-00.safetensors ...`` and
    ``interpolation.png``, the frontal views in a row labelled with t.
    """
    check_preset_name(preset)
    check_counts(resolution=resolution)
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise GenerateInputError(f"--frames must be an integer >= 2 (the two endpoints included), got {frames!r}")
    a, b = load_avatar(a_path), load_avatar(b_path)
    pipeline = load_pipeline(out, storage_options, preset, device, require_prior=False)
    check_avatar(a, a_path, pipeline.decoder, pipeline.decoder_sha256, out, pipeline.cfg)
    check_avatar(b, b_path, pipeline.decoder, pipeline.decoder_sha256, out, pipeline.cfg)
    seed = int(a.meta.get("seed", 0)) if seed is None else seed
    options = options_for(a.meta, guidance_scale, sampler, steps)
    ts = np.linspace(0.0, 1.0, frames).tolist()
    start = time.perf_counter()
    avatars = pipeline.interpolate(a, b, ts, seed=seed, options=options)
    size = resolution or pipeline.cfg.render.resolution
    fronts = [turntable_frames(pipeline.cfg, pipeline.decoder, avatar.planes, 1, size)[0] for avatar in avatars]
    folder = Path(dest)
    paths = [save_avatar(avatar, folder / f"interp-{k:02d}.safetensors") for k, avatar in enumerate(avatars)]
    strip = contact_sheet(fronts, len(fronts), [f"t={t:.2f}" for t in ts])
    sheet = write_file(folder / "interpolation.png", encode_png(strip))
    log.info("interpolated %d avatars between %s and %s in %.1f s", frames, a_path, b_path,
             time.perf_counter() - start)
    return {"avatars": [str(p) for p in paths], "strip": str(sheet), "t": ts, "seed": seed}


def mesh_avatar(out: str, avatar_path: str | Path, dest: str | Path, *, resolution: int = 128,
                threshold: float = DEFAULT_THRESHOLD, storage_options: dict | None = None,
                device: torch.device | str = "cpu") -> dict[str, Any]:
    """Marching-cubes mesh of an avatar's density field (Fig. 5) with decoder colours, as .glb or .ply, and a
    picture of it from four sides beside it (``<name>-preview.png``, :func:`rodin_core.mesh_preview.mesh_preview`)."""
    if Path(dest).suffix.lower().lstrip(".") not in MESH_FORMATS:
        raise GenerateInputError(f"--dest must end in {' or '.join('.' + f for f in MESH_FORMATS)}, got {str(dest)!r}")
    avatar = load_avatar(avatar_path)
    decoder, sha256 = load_decoder(out, storage_options)
    check_avatar(avatar, avatar_path, decoder, sha256, out, trained_config(out, storage_options))
    start = time.perf_counter()
    try:
        mesh = extract_mesh(avatar.planes.to(device), decoder.to(device), resolution, threshold, progress=True)
    except ValueError as exc:  # an empty level set or a bad resolution/threshold: the message gives the range
        raise GenerateInputError(f"cannot mesh {str(avatar_path)!r}: {exc}") from None
    path = export_mesh(mesh, dest)
    preview = write_file(path.with_name(f"{path.stem}-preview.png"), encode_png(mesh_preview(mesh)))
    log.info("meshed %s at %d^3 in %.1f s; preview %s", avatar_path, resolution, time.perf_counter() - start, preview)
    return {"mesh": str(path), "preview": str(preview), "vertices": len(mesh.vertices), "faces": len(mesh.faces),
            "watertight": bool(mesh.is_watertight)}


def density_range(out: str, avatar_path: str | Path, resolution: int,
                  storage_options: dict | None = None) -> tuple[float, float]:
    """Median and peak density of the avatar file's field on the ``resolution``^3 grid of its mesh, e.g. to
    pick an iso-level for :func:`mesh_avatar` when the field never reaches the default one."""
    planes = load_avatar(avatar_path).planes.float()  # (3, C, H, W)
    decoder, _ = load_decoder(out, storage_options)
    grid = density_grid(planes, decoder, resolution)  # (R, R, R)
    return float(np.median(grid)), float(grid.max())


class X0Recorder:
    """``on_x0`` callback of :meth:`GenerationPipeline.generate` keeping at most ``2 * tiles + 1`` x̂0 per stage.

    It does not need to know how many reverse steps there are: it keeps every ``stride``-th call and
    doubles the stride (dropping every other kept x̂0) whenever more than ``2 * tiles`` are kept,
    so memory stays bounded; the last call of each stage (the final sample) is always kept.
    """

    def __init__(self, tiles: int) -> None:
        if isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 1:
            raise GenerateInputError(f"x0 tiles per stage must be a positive integer, got {tiles!r}")
        self.tiles = tiles
        self.kept: dict[str, list[tuple[int, int, torch.Tensor]]] = {}
        """stage -> (call number, reverse step, x̂0 planes on the CPU)."""
        self.calls: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        self.last: dict[str, tuple[int, int, torch.Tensor]] = {}

    def __call__(self, stage: str, step: int, x0: torch.Tensor) -> None:
        call = self.calls.get(stage, 0)
        self.calls[stage] = call + 1
        entry = (call, int(step), x0.detach().to("cpu", torch.float32).clone())  # (3, C, h, h)
        self.last[stage] = entry
        stride = self.strides.setdefault(stage, 1)
        if call % stride:
            return
        kept = self.kept.setdefault(stage, [])
        kept.append(entry)
        if len(kept) > 2 * self.tiles:
            self.strides[stage] = stride * 2
            self.kept[stage] = [e for e in kept if e[0] % (stride * 2) == 0]

    def selection(self) -> list[tuple[str, int, torch.Tensor]]:
        """Per stage, the kept x̂0 nearest to ``tiles - 1`` evenly spaced points of its reverse process, then
        its last one; in call order, as (stage, reverse step, planes)."""
        chosen = []
        for stage, kept in self.kept.items():
            last = self.last[stage]
            entries = [e for e in kept if e[0] != last[0]]
            picks: dict[int, tuple[int, int, torch.Tensor]] = {}
            for k in range(self.tiles - 1 if entries else 0):
                target = k * last[0] / (self.tiles - 1)
                nearest = min(entries, key=lambda e: abs(e[0] - target))
                picks[nearest[0]] = nearest
            ordered = [picks[call] for call in sorted(picks)]
            chosen += [(stage, step, planes) for _, step, planes in [*ordered, last]]
        return chosen


def reverse_process_strip(pipeline: GenerationPipeline, avatar: Avatar, resolution: int, tiles: int = X0_TILES,
                          options: SampleOptions | None = None) -> tuple[np.ndarray, float]:
    """Renders of x̂0 along the reverse process that made ``avatar`` (appendix C.2, Fig. 15), left to right.

    Re-runs the base and upsampler from ``avatar.z`` with the seed and options of its meta,
    recording up to ``tiles`` x̂0 per stage; each is rendered from the frontal turntable camera.
    Returns the strip (uint8) and the largest difference between the re-generated planes and the
    avatar's (0 when the avatar was made this way with these options).
    """
    if avatar.z is None:
        raise GenerateInputError("this avatar has no latent z (e.g. a fitted subject), so there is no reverse "
                                 "process to show; render it without --x0")
    recorder = X0Recorder(tiles)
    seed = int(avatar.meta.get("seed", 0))
    planes = pipeline.generate(avatar.z, seed=seed, options=options or options_for(avatar.meta), on_x0=recorder)
    drift = float((planes.detach().cpu().float() - avatar.planes.float()).abs().max())
    selected = recorder.selection()
    images = [turntable_frames(pipeline.cfg, pipeline.decoder, x0, 1, resolution)[0] for _, _, x0 in selected]
    labels = [f"{stage[:4]} {step + 1}/{recorder.calls[stage]}" for stage, step, _ in selected]
    return x0_strip(images, labels), drift


def load_refiner_for(out: str, decoder_sha256: str | None, storage_options: dict | None = None) -> TrainedRefiner:
    """The committed refiner of ``out``; refused when it was trained on renders of another decoder."""
    refiner = read_refiner(out, storage_options)
    trained_with = refiner.meta.get("decoder_sha256")
    if decoder_sha256 and trained_with != decoder_sha256:
        raise GenerateInputError(f"the refiner under {out} was trained on renders of decoder {str(trained_with)[:12]}, "
                                 f"the decoder of {out} is {decoder_sha256[:12]}; train it again: "
                                 f"`rodin train refiner --out {out} --hr-renders <high-resolution renders root>`")
    return refiner


def render_avatar(out: str, avatar_path: str | Path, dest: str | Path, *, views: int = 24,
                  resolution: int | None = None, x0: bool = False, x0_tiles: int = X0_TILES, refine: bool = False,
                  preset: str | None = None, storage_options: dict | None = None,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """An avatar's turntable (GIF + PNG frames) under ``dest``, with its x̂0 strip (Fig. 15) when ``x0``.

    ``dest`` gets ``{stem}-turntable.gif``, ``{stem}-turntable/frame_0000.png ...`` and, with ``x0``,
    ``{stem}-x0.png``; ``stem`` is the avatar file's stem. With ``refine`` the frames are rendered at
    ``resolution`` (default: the refiner's input side) and refined to ``scale`` times that side by the
    committed refiner of ``out`` (§3.3, Fig. 8); ``{stem}-refine.png`` shows bilinear and refined frames.
    """
    check_preset_name(preset)
    check_counts(views=views, resolution=resolution)
    refiner = None
    if refine:
        _, sha256 = load_decoder(out, storage_options)
        refiner = load_refiner_for(out, sha256, storage_options)
    avatar = load_avatar(avatar_path)
    if x0 and avatar.z is None:
        raise GenerateInputError(f"{str(avatar_path)!r} has no latent z (e.g. a fitted subject), so there is no "
                                 "reverse process to show; render it without --x0")
    pipeline = load_pipeline(out, storage_options, preset, device, require_prior=False) if x0 else None
    if pipeline is not None:
        decoder, sha256, cfg, trained = pipeline.decoder, pipeline.decoder_sha256, pipeline.cfg, pipeline.cfg
    else:
        decoder, sha256 = load_decoder(out, storage_options)
        decoder = decoder.to(device)
        trained = trained_config(out, storage_options)
        cfg = trained if trained is not None else render_config(out, avatar, storage_options)
    check_avatar(avatar, avatar_path, decoder, sha256, out, trained)
    size = resolution or (refiner.input_resolution if refiner is not None else cfg.render.resolution)
    start = time.perf_counter()
    folder, stem = Path(dest), Path(avatar_path).stem
    comparison = None
    if refiner is not None:
        frames, bilinear = refined_turntable(cfg, decoder, avatar.planes, views, size, refiner)
        comparison = write_file(folder / f"{stem}-refine.png", encode_png(comparison_sheet(frames, bilinear)))
    else:
        frames = turntable_frames(cfg, decoder, avatar.planes, views, size, progress=True)
    paths = write_turntable(folder, stem, frames)
    result: dict[str, Any] = {"turntable": str(paths[0]), "frames": [str(p) for p in paths[1:]]}
    if comparison is not None:
        result |= {"refine_comparison": str(comparison), "frame_size": int(frames.shape[1])}
    if pipeline is not None:
        strip, drift = reverse_process_strip(pipeline, avatar, size, x0_tiles)
        result["x0_strip"] = str(write_file(folder / f"{stem}-x0.png", encode_png(strip)))
        result["x0_planes_max_difference"] = drift
        if drift > 1e-3:
            log.warning("the reverse process from %s's z and seed ends %.3g away from its planes (made with other "
                        "options or checkpoints?); the strip shows the re-run", avatar_path, drift)
    log.info("rendered %s: %d views at %d px in %.1f s", avatar_path, views, int(frames.shape[1]),
             time.perf_counter() - start)
    return result
