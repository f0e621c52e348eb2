"""Host-side glue of generation (paper §3.2-3.3, §4.2, appendix B.4): committed checkpoints in, avatars out.

What generation reads under a dataset root (``--out`` / the flow's ``checkpoints``): the committed
stage checkpoints ``checkpoints/{base,upsampler,prior}`` (:mod:`rodin_core.datasets.checkpoints`) and the
frozen decoder ``decoder/decoder`` of the fitting stage. :func:`load_pipeline` rebuilds the
:class:`~rodin_core.generation.GenerationPipeline` from them; :func:`input_digests` names what is
missing and the command that makes it.

What a generation request commits: one shard of the ``generated``
stage per set of parameters and inputs::

    generated/data/gen-<hash>/<attempt>/
        avatar-000.safetensors ...   tri-plane + z + meta of each avatar (rodin_core.generation.avatar)
        turntable-000.gif ...        the avatar's turntable, looping
        frames.parquet               every turntable frame: avatar, view, png (RGB)
        contact-sheet.png            frame 0 (the frontal view) of every avatar, labelled
        generation.json              parameters, inputs' sha256s, each avatar's meta
    generated/manifests/gen-<hash>.json   commit point; subject ids = avatar indices

``<hash>`` is :func:`rodin_core.storage.config_hash` of the resolved parameters and the sha256s
of the checkpoints' weights, their configs and the decoder, so a re-run with the same parameters
finds the shard committed and reuses it.

The turntables are :func:`rodin_core.turntable.render_turntable` frames through the same
deterministic volume renderer as fitting, with the cameras of the render rig (radius and field of
view of ``render``) raised :data:`TURNTABLE_ELEVATION_DEG` above the horizon.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from rodin_core.checkpoint import MODEL_FILE, CheckpointError
from rodin_core.config import ConfigError, RodinConfig
from rodin_core.datasets.checkpoints import (
    committed_config,
    committed_step,
    read_stage_checkpoint,
)
from rodin_core.datasets.decoder import load_decoder
from rodin_core.datasets.errors import StageInputError
from rodin_core.datasets.layout import (
    CHECKPOINTS_STAGE,
    CONTACT_SHEET_FILE,
    DECODER_SHARD,
    DECODER_STAGE,
    DECODER_WEIGHTS,
    FRAMES_FILE,
    GENERATED_STAGE,
    GENERATION_JSON,
)
from rodin_core.encoders import EncoderUnavailableError
from rodin_core.generation import (
    Avatar,
    AvatarFileError,
    GenerationError,
    GenerationPipeline,
    SampleOptions,
    avatar_from_bytes,
    avatar_to_bytes,
)
from rodin_core.generation.pipeline import stage_respacing
from rodin_core.imaging import contact_sheet, encode_png
from rodin_core.networks.refiner_io import RefinerLoadError
from rodin_core.rendering.renderer import RenderSettings
from rodin_core.stage_specs import STAGE_NAMES
from rodin_core.storage import (
    Manifest,
    StageStore,
    StorageError,
    config_hash,
    open_store,
)
from rodin_core.triplane.decoder_io import DecoderLoadError
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.stats import PlaneStatsError
from rodin_core.turntable import render_turntable, save_gif

log = logging.getLogger(__name__)

GENERATED_FORMAT = 1
"""Version of the ``generated`` shard layout; part of every shard's hash."""
FRAMES_SCHEMA = pa.schema([pa.field("avatar", pa.int32(), nullable=False), pa.field("view", pa.int32(), nullable=False),
                           pa.field("png", pa.binary(), nullable=False)])
"""``frames.parquet``: frame ``view`` of avatar ``avatar``'s turntable as an RGB PNG."""
TURNTABLE_ELEVATION_DEG = 10.0
"""Camera height of the turntables above the horizontal plane through the head centre."""
TURNTABLE_FPS = 12.0
SHEET_COLUMNS = 4
"""Avatars per row of the contact sheet."""
MAX_SEED = 2**63 - 1
MAX_AVATARS = 256
"""Most avatars of one request: the flow holds every avatar and its turntable in memory until the commit
(about 30 MB each at the paper's 256^2 tri-planes); sample more with several requests of other seeds."""
MAX_VIEWS = 1024
"""Most turntable frames per avatar."""
MAX_RESOLUTION = 4096
"""Largest side of a rendered frame, in pixels (as ``render.resolution``)."""


class GenerateInputError(ValueError):
    """An input of generation is missing or unusable (file, parameter, dataset); the message says what to do."""


GENERATION_ERRORS = (GenerateInputError, GenerationError, AvatarFileError, StageInputError,
                     CheckpointError, DecoderLoadError, PlaneStatsError, StorageError, ConfigError,
                     EncoderUnavailableError, RefinerLoadError)
"""Failures caused by the inputs, whose message says what to do (the CLI prints them as one line)."""


def avatar_file(index: int) -> str:
    """File name of avatar ``index`` in a ``generated`` shard."""
    return f"avatar-{index:03d}.safetensors"


def gif_file(index: int) -> str:
    """File name of avatar ``index``'s turntable GIF in a ``generated`` shard."""
    return f"turntable-{index:03d}.gif"


def input_digests(out: str, storage_options: dict | None = None, *, stages: tuple[str, ...] = STAGE_NAMES,
                  preset: str | None = None) -> dict[str, str]:
    """What identifies the committed inputs of generation: per stage in ``stages``, the sha256 of its
    weights and the hash of its config; the decoder's weights sha256. Reads manifests only.

    Raises one :class:`GenerateInputError` naming every missing piece and the command that makes it.
    """
    store = open_store(out, storage_options)
    checkpoints, decoder = store.stage(CHECKPOINTS_STAGE), store.stage(DECODER_STAGE)
    problems = []
    if not decoder.is_committed(DECODER_SHARD):
        problems.append(f"no committed decoder under {decoder.uri} (fit the tri-planes first: "
                        f"`rodin fit --renders <renders root> --out {out}`)")
    missing = [name for name in stages if not checkpoints.is_committed(name)]
    if missing:
        command = f"rodin train {missing[0] if len(missing) == 1 else 'all'} --out {out}"
        command += f" --preset {preset}" if preset else ""
        problems.append(f"no committed {', '.join(missing)} checkpoint{'s' if len(missing) > 1 else ''} under "
                        f"{checkpoints.uri} (train {'it' if len(missing) == 1 else 'them'}: `{command}`)")
    if problems:
        raise GenerateInputError(f"cannot generate from {out}: {'; '.join(problems)}")
    digests = {}
    for name in stages:
        manifest = checkpoints.read_manifest(name)
        digests[name] = manifest.file(MODEL_FILE).sha256
        digests[f"{name}_config"] = manifest.config_hash
    digests["decoder"] = decoder.read_manifest(DECODER_SHARD).file(DECODER_WEIGHTS).sha256
    return digests


def trained_config(out: str, storage_options: dict | None = None, preset: str | None = None) -> RodinConfig | None:
    """The config the committed checkpoints were trained with (their JSON only; base first), or None.

    Raises :class:`GenerationError` when ``preset`` is given and a checkpoint was trained with another.
    """
    found = None
    for name in STAGE_NAMES:
        config = committed_config(out, name, storage_options)
        if config is None:
            continue
        cfg = RodinConfig.from_dict(config["rodin"])
        if preset is not None and cfg.preset != preset:
            raise GenerationError(f"the {name} checkpoint under {out}/{CHECKPOINTS_STAGE} was trained with "
                                  f"preset {cfg.preset!r}, not {preset!r}; pass --preset {cfg.preset} (or retrain "
                                  f"with --preset {preset})")
        found = found or cfg
    return found


def load_pipeline(out: str, storage_options: dict | None = None, preset: str | None = None,
                  device: torch.device | str = "cpu", *, require_prior: bool = True) -> GenerationPipeline:
    """The generation pipeline of the checkpoints and decoder committed under ``out``.

    ``preset``: refuse checkpoints trained with another preset. Without ``require_prior`` the
    latent prior is loaded when committed (sampling needs it; inversion and interpolation do not).
    """
    stages = STAGE_NAMES if require_prior else ("base", "upsampler")
    input_digests(out, storage_options, stages=stages, preset=preset)
    start = time.perf_counter()
    checkpoints = {name: read_stage_checkpoint(out, name, storage_options)[0] for name in stages}
    if "prior" not in checkpoints and committed_step(out, "prior", storage_options) is not None:
        checkpoints["prior"] = read_stage_checkpoint(out, "prior", storage_options)[0]
    decoder, sha256 = load_decoder(out, storage_options)
    pipeline = GenerationPipeline.from_checkpoints(checkpoints["base"], checkpoints["upsampler"],
                                                   checkpoints.get("prior"), decoder, preset=preset,
                                                   decoder_sha256=sha256, device=device)
    log.info("loaded the %s checkpoints of %s (steps %s) and decoder %s in %.1f s", pipeline.cfg.preset, out,
             {name: c.step for name, c in checkpoints.items()}, sha256[:12], time.perf_counter() - start)
    return pipeline


CAPS = {"n": (MAX_AVATARS, "avatars", "sample in several requests with other --seed values"),
        "views": (MAX_VIEWS, "turntable frames", "render fewer"),
        "resolution": (MAX_RESOLUTION, "pixels per frame side", "render smaller frames")}
"""Per count of a request: its cap, what it counts and what to do about a larger one."""


@dataclass(frozen=True)
class GenerateRequest:
    """What to generate: ``n`` avatars from seed ``seed`` (avatar i from seed + i) and how to show them."""

    n: int = 4
    guidance_scale: float | None = None
    """Classifier-free guidance scale λ of the base model (Eq. 3); None: ``base.guidance_scale``."""
    sampler: str | None = None
    """``ancestral`` or ``ddim`` (η = 0); None: each stage's configured rule (:class:`SampleOptions`)."""
    steps: int | None = None
    """Respaced reverse steps of the base and upsampler; None: each stage's ``diffusion.sampling_steps``."""
    seed: int = 0
    views: int = 24
    """Turntable frames per avatar."""
    resolution: int | None = None
    """Side of the rendered frames in pixels; None: ``render.resolution`` of the checkpoints' config."""

    def validate(self) -> GenerateRequest:
        """Check the counts and the seed here, the sampling options in :class:`SampleOptions`; returns self."""
        for name, (most, noun, remedy) in CAPS.items():
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise GenerateInputError(f"{name} must be a positive integer, got {value!r}")
            if value is not None and value > most:
                raise GenerateInputError(f"{name}={value} is more than the {most} {noun} one request may hold; "
                                         f"{remedy}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED - self.n:
            raise GenerateInputError(f"seed must be an integer in [0, 2**63 - 1 - n], got {self.seed!r}")
        self.options()
        return self

    def options(self) -> SampleOptions:
        """The pipeline's sampling options of this request (they check themselves)."""
        return SampleOptions(guidance_scale=self.guidance_scale, sampler=self.sampler, steps=self.steps)


@dataclass(frozen=True)
class GenerationPlan:
    """Where the outputs of a request go, and whether they are committed already."""

    shard_id: str
    digest: str
    """Config hash of ``parameters`` and ``inputs``: the shard's manifest ``config_hash``."""
    parameters: dict[str, Any]
    """The request with its defaults resolved from the checkpoints' config, and the turntable settings."""
    inputs: dict[str, str]
    """:func:`input_digests` of the checkpoints root."""
    checkpoints: str
    outputs: str
    committed: str | None
    """Attempt id of the committed shard of these parameters and inputs, or None."""

    @property
    def stage_uri(self) -> str:
        return f"{self.outputs}/{GENERATED_STAGE}"


def plan_generation(checkpoints: str, outputs: str, request: GenerateRequest, preset: str | None = None,
                    storage_options: dict | None = None) -> GenerationPlan:
    """Check the request and the committed inputs (manifests and configs only) and name the shard."""
    request.validate()
    inputs = input_digests(checkpoints, storage_options, preset=preset)
    cfg = trained_config(checkpoints, storage_options, preset)
    if cfg is None:  # a checkpoint vanished between the two reads
        raise GenerateInputError(f"the checkpoints under {checkpoints}/{CHECKPOINTS_STAGE} disappeared "
                                 "while planning; run again once training has committed them")
    for stage in ("base", "upsampler"):
        stage_respacing(cfg, stage, request.options())
    parameters = {**asdict(request), "preset": cfg.preset,
                  "guidance_scale": float(cfg.base.guidance_scale if request.guidance_scale is None
                                          else request.guidance_scale),
                  "resolution": request.resolution or cfg.render.resolution,
                  "elevation_deg": TURNTABLE_ELEVATION_DEG, "fps": TURNTABLE_FPS, "format": GENERATED_FORMAT}
    digest = config_hash({"parameters": parameters, "inputs": inputs})
    shard_id = f"gen-{digest}"
    stage = generated_stage(outputs, storage_options)
    committed = stage.read_manifest(shard_id).attempt_id if stage.is_committed(shard_id) else None
    return GenerationPlan(shard_id, digest, parameters, inputs, checkpoints, outputs, committed)


def render_settings(cfg: RodinConfig) -> RenderSettings:
    """The deterministic renderer settings of fitting's evaluation renders."""
    return RenderSettings(coarse_samples=cfg.fit.coarse_samples, fine_samples=cfg.fit.fine_samples, perturb=False)


def turntable_frames(cfg: RodinConfig, decoder: TriplaneDecoder, planes: torch.Tensor, views: int, resolution: int,
                     progress: bool = False) -> np.ndarray:
    """``views`` frames around raw planes (3, C, H, W), frame 0 frontal -> uint8 (views, R, R, 3)."""
    device = next(decoder.parameters()).device
    with torch.no_grad():
        return render_turntable(planes.to(device, torch.float32), decoder, views, resolution, render_settings(cfg),
                                cfg.fit.background, progress, TURNTABLE_ELEVATION_DEG, cfg.render.camera_radius,
                                cfg.render.fov_deg)


def gif_bytes(frames: np.ndarray, fps: float = TURNTABLE_FPS) -> bytes:
    """uint8 frames (N, H, W, 3) as the bytes of a looping GIF (:func:`rodin_core.turntable.save_gif`)."""
    with tempfile.TemporaryDirectory(prefix="rodin-gif-") as folder:
        return save_gif(frames, Path(folder) / "turntable.gif", fps).read_bytes()


def avatar_sheet(avatars: list[Avatar], turntables: list[np.ndarray]) -> np.ndarray:
    """Frame 0 (the frontal view) of every avatar, labelled with its index and seed -> RGB uint8."""
    labels = [f"#{index} seed {avatar.meta.get('seed')}" for index, avatar in enumerate(avatars)]
    return contact_sheet([frames[0] for frames in turntables], min(SHEET_COLUMNS, len(avatars)), labels)


def commit_generated(plan: GenerationPlan, avatars: list[Avatar], turntables: list[np.ndarray], sheet: np.ndarray,
                     storage_options: dict | None = None, seconds: dict[str, float] | None = None) -> Manifest:
    """Write the avatars, their turntables and the contact sheet as shard ``plan.shard_id`` and commit it.

    A failure is recorded under ``generated/failures/`` and raised again.
    """
    stage = generated_stage(plan.outputs, storage_options)
    writer = stage.begin(plan.shard_id)
    try:
        rows: dict[str, list] = {"avatar": [], "view": [], "png": []}
        for index, (avatar, frames) in enumerate(zip(avatars, turntables, strict=True)):
            writer.write_bytes(avatar_file(index), avatar_to_bytes(avatar))
            writer.write_bytes(gif_file(index), gif_bytes(frames))
            for view, frame in enumerate(frames):
                rows["avatar"].append(index)
                rows["view"].append(view)
                rows["png"].append(encode_png(frame))
        writer.write_table(FRAMES_FILE, pa.table(rows, schema=FRAMES_SCHEMA))
        writer.write_bytes(CONTACT_SHEET_FILE, encode_png(sheet))
        description = {"parameters": plan.parameters, "inputs": plan.inputs, "checkpoints": plan.checkpoints,
                       "avatars": [avatar.meta for avatar in avatars]}
        writer.write_bytes(GENERATION_JSON, json.dumps(description, indent=2, sort_keys=True).encode("utf-8"))
        return writer.commit(list(range(len(avatars))), plan.digest,
                             extra={"parameters": plan.parameters, "checkpoints": plan.checkpoints,
                                    "seconds": seconds or {}})
    except Exception as exc:
        stage.record_failure(plan.shard_id, writer.attempt_id, exc, {"parameters": plan.parameters})
        raise


def generated_uri(plan: GenerationPlan, manifest: Manifest, name: str) -> str:
    """URI of file ``name`` of the committed shard."""
    return f"{plan.stage_uri}/{manifest.file(name).path}"


def generated_stage(outputs: str, storage_options: dict | None = None) -> StageStore:
    """The ``generated`` stage of the dataset root ``outputs``."""
    return open_store(outputs, storage_options).stage(GENERATED_STAGE)


def export_generated(outputs: str, shard_id: str, dest: str | Path, storage_options: dict | None = None) -> list[Path]:
    """Copy a committed ``generated`` shard to the local folder ``dest`` (verified reads); returns the files.

    ``dest``: ``contact-sheet.png``, ``generation.json`` and per avatar ``avatar-000.safetensors``,
    ``avatar-000-turntable.gif`` and ``avatar-000-turntable/frame_0000.png ...``.
    """
    stage = generated_stage(outputs, storage_options)
    manifest = stage.read_manifest(shard_id)
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in (CONTACT_SHEET_FILE, GENERATION_JSON):
        written.append(write_file(folder / name, stage.read_bytes(shard_id, name)))
    frames = stage.read_table(shard_id, FRAMES_FILE).to_pydict()
    for index in manifest.subject_ids:
        stem = Path(avatar_file(index)).stem
        written.append(write_file(folder / avatar_file(index), stage.read_bytes(shard_id, avatar_file(index))))
        written.append(write_file(folder / f"{stem}-turntable.gif", stage.read_bytes(shard_id, gif_file(index))))
        for avatar, view, png in zip(frames["avatar"], frames["view"], frames["png"], strict=True):
            if avatar == index:
                written.append(write_file(folder / f"{stem}-turntable" / f"frame_{view:04d}.png", png))
    return written


def read_generated_avatars(outputs: str, shard_id: str, storage_options: dict | None = None) -> list[Avatar]:
    """The avatars of a committed ``generated`` shard, in index order."""
    stage = generated_stage(outputs, storage_options)
    return [avatar_from_bytes(stage.read_bytes(shard_id, avatar_file(i)), source=f"{stage.uri}/{shard_id}/"
                              f"{avatar_file(i)}") for i in stage.read_manifest(shard_id).subject_ids]


def write_file(path: Path, data: bytes) -> Path:
    """Write ``data`` to the local file ``path``, creating its folder; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
