"""Conditional avatar reconstruction metrics of a trained dataset root: paper appendix C.5, Table 4 (§4.5).

For each subject the checkpoints held out of diffusion training (``corpus.holdout_subjects``), the
frontal view (view 0) is inverted through the trained pipeline (encoder -> base model with CFG ->
upsampler), and the inverted avatar is rendered from the subject's own cameras: its fitting
held-out views, a fixed set of other views and view 0 itself. PSNR / SSIM / LPIPS against the
ground-truth renders (composited on ``fit.background``) are printed per subject and averaged, next
to the same metrics of the subject's fitted tri-plane (the upper bound of what diffusion can
reproduce). Nothing is downloaded: LPIPS uses the ``lpips`` package's AlexNet/VGG when their weights
are cached locally, else the shift-tolerant VGG shipped with stlpips-pytorch, and says which.

Run: ``.venv/bin/python benchmarks/reconstruction_metrics.py --out data/tiny [--json PATH] [--sheet PNG]``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from rodin_core.evaluation.reconstruction import (
    DEFAULT_OTHER_VIEWS,
    SubjectReconstruction,
)
from rodin_core.evaluation.reconstruction_job import (
    ReconstructionInputError,
    ReconstructionReport,
    measure_reconstruction,
)
from rodin_core.generation import SAMPLERS, SampleOptions
from rodin_core.generation.job import GENERATION_ERRORS
from rodin_core.imaging import contact_sheet, encode_png
from rodin_core.metrics import LPIPS_NETWORKS
from rodin_core.networks.perceptual import PerceptualUnavailableError
from rodin_core.triplane.subject import SubjectViews

DEFAULT_JSON = "outputs/benchmarks/reconstruction-metrics.json"
SHEET_VIEWS = 3
"""Held-out views per subject in the comparison sheet."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/tiny", help="dataset root with checkpoints, decoder and tri-planes")
    parser.add_argument("--renders", help="dataset root holding the renders (default: --out)")
    parser.add_argument("--subjects", type=int, nargs="+",
                        help="measure these subject ids instead of the held-out ones (flagged when seen in training)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every inversion (default 0)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=None,
                        help="reverse sampler (default: each stage's, DDIM for a 'ddimN' diffusion.sampling_steps)")
    parser.add_argument("--steps", type=int, help="reverse steps of both stages (default: the trained config's)")
    parser.add_argument("--cfg", type=float, help="classifier-free guidance scale λ (default: base.guidance_scale)")
    parser.add_argument("--other-views", type=int, default=DEFAULT_OTHER_VIEWS,
                        help=f"views of the 'other' group besides the held-out ones (default {DEFAULT_OTHER_VIEWS})")
    parser.add_argument("--lpips", choices=LPIPS_NETWORKS, default="auto", help="LPIPS network (default auto)")
    parser.add_argument("--json", default=DEFAULT_JSON, help=f"where to write the JSON report ({DEFAULT_JSON})")
    parser.add_argument("--sheet", help="also write a PNG: per subject, view 0 then ground truth / inverted / "
                                        "fitted of its first held-out views")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return parser.parse_args()


class SheetRows:
    """Collects, per subject, view 0 and ground truth / inverted / fitted tiles of its first held-out views."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.labels: list[str] = []
        self.columns = 1 + 3 * SHEET_VIEWS

    def __call__(self, result: SubjectReconstruction, subject: SubjectViews) -> None:
        renders, held = result.renders, result.scores["inverted"].get("held_out")
        if held is None or "input" not in renders["truth"]:
            return
        row, labels = [renders["truth"]["input"][0]], [f"#{result.subject_id} input"]
        fitted = renders.get("fitted", {}).get("held_out")
        for index, view in enumerate(held.views[:SHEET_VIEWS]):
            inverted = renders["inverted"]["held_out"][index]
            row += [renders["truth"]["held_out"][index], inverted,
                    fitted[index] if fitted is not None else np.full_like(inverted, 255)]
            labels += [f"v{view} truth", f"inv {held.per_view[index].psnr:.1f}dB",
                       "fitted" if fitted is not None else "no fit"]
        pad = self.columns - len(row)
        self.images += row + [np.full_like(row[0], 255)] * pad
        self.labels += labels + [""] * pad


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    try:
        options = SampleOptions(guidance_scale=args.cfg, sampler=args.sampler, steps=args.steps)
    except GENERATION_ERRORS as exc:
        raise SystemExit(f"error: {exc}") from None
    sheet = SheetRows()
    try:
        report = measure_reconstruction(args.out, args.renders, subjects=args.subjects, seed=args.seed,
                                        options=options, lpips=args.lpips, other_views=args.other_views,
                                        on_subject=sheet if args.sheet else None)
    except (ReconstructionInputError, PerceptualUnavailableError, *GENERATION_ERRORS) as exc:
        raise SystemExit(f"error: {exc}") from None
    print_report(report)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    print(f"JSON report: {path}")
    if args.sheet and sheet.images:
        sheet_path = Path(args.sheet)
        sheet_path.parent.mkdir(parents=True, exist_ok=True)
        sheet_path.write_bytes(encode_png(contact_sheet(sheet.images, sheet.columns, sheet.labels)))
        print(f"comparison sheet: {sheet_path}")


def print_report(report: ReconstructionReport) -> None:
    measured = [r.subject_id for r in report.results]
    seen = [s for s in measured if s not in set(report.held_out)]
    print()
    print(f"Conditional reconstruction (paper appendix C.5, Table 4) of {report.out}: subjects {measured}"
          + (f", of which {seen} were SEEN in training" if seen else ", all held out of diffusion training"))
    print(f"checkpoint steps {report.steps}; seed {report.seed}, sampler {report.options.sampler}, steps "
          f"{report.options.steps or 'trained default'}, CFG scale {report.guidance_scale:g}")
    print(f"LPIPS: {report.lpips_network}, {report.lpips_description}")
    print("inverted: the avatar generated from view 0; fitted: the subject's fitted tri-plane (upper bound). "
          "PSNR (dB) and SSIM: higher is better; LPIPS: lower is better.")
    print()
    print(report.table())
    print(f"\n{len(report.results)} subjects in {report.seconds:.1f} s")


if __name__ == "__main__":
    main()
