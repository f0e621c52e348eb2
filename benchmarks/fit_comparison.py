"""Ground truth against fitted tri-planes on held-out views: ``docs/fitting-gt-vs-fitted.png`` (paper §3.1, B.2).

For a few subjects, every held-out view (never trained on) is shown twice, the rendered ground
truth composited on the fitting background (``fit.background``) above the fitted tri-plane's
rendering over the same background, each fitted tile labelled with its PSNR. Subjects come from
both fitting phases of appendix B.2: the first ``--shared`` were fitted jointly with the decoder
in phase A (cached like ``fit_speed.py``'s), the next ``--new`` are fitted now by phase B with
that decoder frozen. Tiles are enlarged ``--zoom`` times (nearest neighbour) for legibility.
Run: ``.venv/bin/python benchmarks/fit_comparison.py --renders DIR``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from fit_speed import DEFAULT_CACHE, load_subjects, phase_a, print_progress
from PIL import Image
from torch import Tensor

from rodin_core.config import preset_config
from rodin_core.fitting.loop import fit_subject
from rodin_core.fitting.preview import compare_views
from rodin_core.imaging import contact_sheet
from rodin_core.rendering.renderer import RenderSettings
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.subject import SubjectViews, split_views

OUTPUT = "docs/fitting-gt-vs-fitted.png"


def zoomed(pixels: np.ndarray, zoom: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (H * zoom, W * zoom, 3), nearest-neighbour enlarged."""
    return pixels.repeat(zoom, axis=0).repeat(zoom, axis=1)


def subject_rows(subject: SubjectViews, tag: str, planes: Tensor, decoder: TriplaneDecoder, settings: RenderSettings,
                 background: float, holdout: int, zoom: int) -> tuple[list[np.ndarray], list[str]]:
    """Tiles and labels of one subject: ground-truth row then fitted row over its held-out views."""
    _, held = split_views(subject.n_views, holdout)
    comparisons = compare_views(subject, planes, decoder, held, settings, background)
    for c in comparisons:
        print(f"subject {subject.subject_id} ({tag}) view {c.view}: {c.psnr:.2f} dB", flush=True)
    tiles = [zoomed(c.truth, zoom) for c in comparisons] + [zoomed(c.fitted, zoom) for c in comparisons]
    labels = [f"s{subject.subject_id} v{c.view} GT" for c in comparisons]
    return tiles, labels + [f"{tag} {c.psnr:.1f} dB" for c in comparisons]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", default="data/tiny", help="dataset root URI holding the renders stage")
    parser.add_argument("--preset", default="tiny", help="config preset (default tiny)")
    parser.add_argument("--shared", type=int, default=2, help="phase-A subjects shown (default 2)")
    parser.add_argument("--new", type=int, default=1, help="subjects fitted by phase B and shown (default 1)")
    parser.add_argument("--zoom", type=int, default=2, help="tile enlargement (default 2)")
    parser.add_argument("--cache", default=DEFAULT_CACHE, help=f"phase-A decoder cache folder ({DEFAULT_CACHE})")
    parser.add_argument("--out", default=OUTPUT, help=f"PNG written (default {OUTPUT})")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset_config(args.preset)
    fit = cfg.fit
    if not 0 <= args.shared <= fit.shared_subjects:
        raise SystemExit(f"--shared must be in [0, {fit.shared_subjects}] (fit.shared_subjects), got {args.shared}")
    subjects = load_subjects(args.renders, fit.shared_subjects + args.new)
    decoder, shared_planes = phase_a(subjects[:fit.shared_subjects], cfg, Path(args.cache))
    chosen = [(s, "phase A", shared_planes[s.subject_id]) for s in subjects[:args.shared]]
    for subject in subjects[fit.shared_subjects:]:
        print(f"phase B: fitting subject {subject.subject_id}", flush=True)
        result = fit_subject(subject, decoder, cfg.triplane, fit, progress=print_progress("phase B"))
        if result.error is not None:
            raise RuntimeError(result.error)
        chosen.append((subject, "phase B", result.planes))
    settings = RenderSettings(coarse_samples=fit.coarse_samples, fine_samples=fit.fine_samples, perturb=False)
    tiles: list[np.ndarray] = []
    labels: list[str] = []
    for subject, tag, planes in chosen:
        subject_tiles, subject_labels = subject_rows(subject, tag, planes, decoder, settings, fit.background,
                                                     fit.holdout_views, args.zoom)
        tiles += subject_tiles
        labels += subject_labels
    grey = round(fit.background * 255)
    columns = len(split_views(subjects[0].n_views, fit.holdout_views)[1])
    sheet = contact_sheet(tiles, columns=columns, labels=labels, background=(grey, grey, grey))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out)
    print(f"wrote {out}: {len(chosen)} subjects x {columns} held-out views, ground truth over fitted "
          f"({sheet.shape[1]}x{sheet.shape[0]} px)")


if __name__ == "__main__":
    main()
