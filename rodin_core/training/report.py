"""What the training flows show of a trained stage: loss curves and a few sampled renders (appendix B.1).

- :func:`loss_curve_png`: the logged loss terms against the step, drawn with PIL.
- :func:`sample_sheet`: tri-planes sampled from a stage's committed checkpoint (its EMA weights)
  rendered from the frontal camera (view 0 of the render rig) through the frozen decoder, beside
  what they are compared with: base (§3.2) — the input frontal view, the fitted tri-plane and the
  sample conditioned on the encoder's z of that view (classifier-free guidance, Eq. 3); upsampler
  (§3.3) — the fitted tri-plane, its base-resolution version and the upsampled one; prior
  (appendix B.4) — base samples conditioned on z drawn from the prior.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn

from rodin_core.cameras import make_rig
from rodin_core.checkpoint import Checkpoint
from rodin_core.config import RodinConfig
from rodin_core.datasets.checkpoints import read_stage_checkpoint
from rodin_core.datasets.decoder import load_decoder
from rodin_core.datasets.layout import STATS_PREFIX
from rodin_core.datasets.triplanes import TriplaneDataset, TriplaneSample
from rodin_core.encoders import build_encoder
from rodin_core.generation.sampling import sample_base, sample_prior, sample_upsampler
from rodin_core.imaging import contact_sheet, to_uint8
from rodin_core.networks.latent_normalizer import LatentNormalizer
from rodin_core.rendering.renderer import RenderSettings, render_image
from rodin_core.stage_specs import model_from_config
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.rescale import downsample_planes
from rodin_core.triplane.stats import PlaneStats

CURVE_SIZE = (720, 360)
"""Width and height of the loss-curve image in pixels."""
CURVE_MARGIN = (56, 16, 16, 40)
"""Left, top, right, bottom margins of the plot area."""
CURVE_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
CURVE_KEYS = ("loss", "mse", "vb")
"""Loss terms drawn when present in the history."""
def loss_curve_png(history: Sequence[dict[str, float]], title: str, keys: Sequence[str] = CURVE_KEYS) -> bytes:
    """A PNG line plot of ``keys`` of the logged metrics against ``step`` (log-scale y when they span > 20x)."""
    keys = [k for k in keys if any(k in h for h in history)]
    if not history or not keys:
        raise ValueError(f"no logged {list(keys) or 'loss'} values to plot; the run logged {len(history)} times")
    steps = [float(h["step"]) for h in history]
    values = [v for h in history for k in keys if k in h and math.isfinite(h[k]) for v in [h[k]]]
    log_scale = min(values) > 0 and max(values) / min(values) > 20
    scale = (lambda v: math.log10(v)) if log_scale else (lambda v: v)
    low, high = scale(min(values)), scale(max(values))
    high = high if high > low else low + 1.0
    first, last = min(steps), max(steps)
    last = last if last > first else first + 1.0
    width, height = CURVE_SIZE
    left, top, right, bottom = CURVE_MARGIN
    canvas = Image.new("RGB", CURVE_SIZE, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()

    def point(step: float, value: float) -> tuple[float, float]:
        x = left + (step - first) / (last - first) * (width - left - right)
        y = top + (high - scale(value)) / (high - low) * (height - top - bottom)
        return x, y

    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    for fraction in (0.0, 0.5, 1.0):
        label = low + fraction * (high - low)
        y = height - bottom - fraction * (height - top - bottom)
        draw.text((2, y - 6), f"{10 ** label:.3g}" if log_scale else f"{label:.3g}", fill=(0, 0, 0), font=font)
        x = left + fraction * (width - left - right)
        draw.text((x - 12, height - bottom + 4), f"{first + fraction * (last - first):.0f}", fill=(0, 0, 0), font=font)
    draw.text((left, height - 14), f"{title}  (x: step{', y: log scale' if log_scale else ''})", fill=(0, 0, 0),
              font=font)
    for index, key in enumerate(keys):
        colour = CURVE_COLOURS[index % len(CURVE_COLOURS)]
        line = [point(float(h["step"]), h[key]) for h in history if key in h and math.isfinite(h[key])]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        for x, y in line:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((width - right - 60, top + 4 + 12 * index), key, fill=colour, font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class TrainedStage:
    """A stage's committed checkpoint, rebuilt: its EMA network, config and statistics."""

    checkpoint: Checkpoint
    cfg: RodinConfig
    ema: nn.Module
    stats: PlaneStats | None

    @classmethod
    def load(cls, out: str, stage_name: str, storage_options: dict | None = None) -> TrainedStage:
        """The committed checkpoint of ``stage_name``, its EMA weights in a network rebuilt from its config."""
        checkpoint, _ = read_stage_checkpoint(out, stage_name, storage_options)
        model = model_from_config(checkpoint.config)
        model.load_state_dict(checkpoint.module_state("ema"))
        extra = checkpoint.extra_tensors
        stats = PlaneStats.from_tensors(extra, STATS_PREFIX) if f"{STATS_PREFIX}mean" in extra else None
        return cls(checkpoint, RodinConfig.from_dict(checkpoint.config["rodin"]), model.eval(), stats)

    def module(self, name: str, module: nn.Module) -> nn.Module:
        """``module`` with the checkpoint's weights of ``name`` loaded (strict), in eval mode."""
        module.load_state_dict(self.checkpoint.module_state(name))
        return module.eval()


class FrontalRenderer:
    """Renders tri-planes from the frontal camera (view 0 of the render rig) through the frozen decoder."""

    def __init__(self, decoder: TriplaneDecoder, cfg: RodinConfig) -> None:
        render = cfg.render
        rig = make_rig(render.views, render.resolution, render.fov_deg, render.camera_radius,
                       render.elevation_min_deg, render.elevation_max_deg)
        self.decoder, self.c2w, self.intrinsics, self.size = decoder, rig.c2w[0], rig.intrinsics, render.resolution
        self.settings = RenderSettings(coarse_samples=cfg.fit.coarse_samples, fine_samples=cfg.fit.fine_samples,
                                       perturb=False)
        self.background = cfg.fit.background

    def __call__(self, planes: Tensor) -> np.ndarray:
        """Raw planes (3, C, h, w) at any resolution -> frontal render (H, W, 3) uint8."""
        rgb, _ = render_image(planes.float()[None], self.decoder, self.c2w, self.intrinsics, self.size, self.size,
                              self.settings, self.background)  # (H, W, 3)
        return to_uint8(rgb.clamp(0.0, 1.0))


def first_subjects(out: str, count: int, storage_options: dict | None = None,
                   held_out_from: int | None = None) -> list[TriplaneSample]:
    """The first ``count`` training subjects in shard order (ids from ``held_out_from`` are held out)."""
    samples = TriplaneDataset(out, storage_options, shuffle_buffer=1, held_out_from=held_out_from).iter_epoch(0)
    return [s for _, s in zip(range(count), samples)]


def _frontal_image(sample: TriplaneSample) -> np.ndarray:
    return np.clip(np.rint(sample.frontal.permute(1, 2, 0).numpy() * 255.0), 0, 255).astype(np.uint8)  # (H, W, 4)


@torch.no_grad()
def sample_sheet(stage_name: str, out: str, count: int, seed: int = 0,
                 storage_options: dict | None = None) -> tuple[np.ndarray, str]:
    """A contact sheet of ``count`` samples of the committed ``stage_name`` checkpoint and its caption."""
    trained = TrainedStage.load(out, stage_name, storage_options)
    render = FrontalRenderer(load_decoder(out, storage_options)[0], trained.cfg)
    generator = torch.Generator().manual_seed(seed)
    if stage_name == "base":
        subjects = first_subjects(out, count, storage_options, trained.cfg.corpus.first_held_out)
        if not trained.cfg.base.latent_conditioning:
            planes = sample_base(trained.ema, trained.cfg, trained.stats, n=len(subjects), generator=generator)
            images = [im for s, p in zip(subjects, planes, strict=True) for im in (render(s.planes), render(p))]
            labels = [lb for s in subjects for lb in (f"#{s.subject_id} fitted", "sampled")]
            caption = (f"Base model (EMA) at step {trained.checkpoint.step}, trained without latent conditioning: "
                       f"fitted training tri-planes beside unconditional samples "
                       f"({trained.cfg.base.diffusion.sampling_steps} sampling steps).")
            return contact_sheet(images, 2 * min(2, count), labels), caption
        encoder = build_encoder(trained.cfg.encoder)
        if trained.cfg.encoder.kind == "learned":
            encoder = trained.module("encoder_ema", encoder)
        z = encoder(torch.stack([s.frontal for s in subjects]))  # (n, D)
        planes = sample_base(trained.ema, trained.cfg, trained.stats, z, generator=generator)  # (n, 3, C, h, h)
        images = [im for s, p in zip(subjects, planes, strict=True)
                  for im in (_frontal_image(s), render(s.planes), render(p))]
        labels = [lb for s in subjects for lb in (f"#{s.subject_id} input", "fitted", "sampled")]
        caption = (f"Base model (EMA) at step {trained.checkpoint.step}: per subject, the frontal view the encoder "
                   f"reads, its fitted tri-plane, and a tri-plane sampled with that z (guidance "
                   f"{trained.cfg.base.guidance_scale}, {trained.cfg.base.diffusion.sampling_steps} sampling steps).")
        return contact_sheet(images, 3 * min(2, count), labels), caption
    if stage_name == "upsampler":
        subjects = first_subjects(out, count, storage_options, trained.cfg.corpus.first_held_out)
        planes = torch.stack([s.planes for s in subjects])  # (n, 3, C, H, W)
        low = downsample_planes(planes, trained.cfg.triplane.rescale_min)  # (n, 3, C, h, h)
        high = sample_upsampler(trained.ema, trained.cfg, trained.stats, low, generator=generator)  # (n, 3, C, H, H)
        images = [im for p, q, r in zip(planes, low, high, strict=True) for im in (render(p), render(q), render(r))]
        labels = [lb for s in subjects for lb in (f"#{s.subject_id} fitted", "base res.", "upsampled")]
        caption = (f"Upsampler (EMA) at step {trained.checkpoint.step}: per subject, the fitted tri-plane, its "
                   f"{trained.cfg.triplane.rescale_min}x{trained.cfg.triplane.rescale_min} version and the upsampled "
                   f"{trained.cfg.triplane.resolution}x{trained.cfg.triplane.resolution} sample.")
        return contact_sheet(images, 3 * min(2, count), labels), caption
    norm = trained.module("latent_norm", LatentNormalizer(trained.cfg.encoder.latent_dim))
    z = sample_prior(trained.ema, norm, trained.cfg, count, generator=generator)  # (n, D)
    base = TrainedStage.load(out, "base", storage_options)
    planes = sample_base(base.ema, base.cfg, base.stats, z, generator=generator)  # (n, 3, C, h, h)
    caption = (f"Latent prior (EMA) at step {trained.checkpoint.step}: z drawn from the prior, then tri-planes "
               f"from the base model (step {base.checkpoint.step}) conditioned on them: unconditional generation.")
    return contact_sheet([render(p) for p in planes], min(4, count), [f"sample {i}" for i in range(count)]), caption
