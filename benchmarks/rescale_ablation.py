"""Random rescaling ablation: paper Fig. 3 at tiny scale (paper §3.1, Fig. 3; appendix B.2).

Rodin down-samples the tri-plane to a random size in [64, 256] and up-samples it back during
fitting, so that the shared decoder renders the planes at every resolution the hierarchical
diffusion produces; without it, the 64x64 variant of a fitted 256x256 tri-plane renders badly
(Fig. 3b vs 3c). This script fits the same subjects twice, each arm end to end:

* WITH rescaling: ``fit.rescale_prob`` of the preset, in phase A (the shared decoder) and phase B;
* WITHOUT: ``fit.rescale_prob = 0`` in both phases;

and prints, for the held-out views of every subject, the PSNR of its planes at full resolution
and after ``rescale_planes(planes, triplane.rescale_min)`` (the lowest diffusion resolution), and
the drop between the two, per arm: the ``fit.shared_subjects`` subjects fitted with the decoder in
phase A (Fig. 3's setting) and ``--subjects`` more fitted in phase B with that decoder frozen.
Phase A is cached like ``fit_speed.py``'s. Run: ``.venv/bin/python benchmarks/rescale_ablation.py --renders DIR``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from fit_speed import DEFAULT_CACHE, load_subjects, phase_a, print_progress
from torch import Tensor

from rodin_core.config import RodinConfig, apply_overrides, preset_config
from rodin_core.datasets.decoder import load_decoder
from rodin_core.datasets.renders import iter_subjects, renders_index
from rodin_core.datasets.triplanes import iter_planes
from rodin_core.fitting.loop import evaluate_psnr, fit_subject
from rodin_core.storage import open_store
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.subject import SubjectViews, split_views


def full_and_rescaled(planes: Tensor, decoder: TriplaneDecoder, subject: SubjectViews, cfg: RodinConfig
                      ) -> tuple[float, float]:
    """Held-out PSNR of ``planes`` (3, C, H, W) as they are and after ``rescale_planes`` to
    ``triplane.rescale_min`` (the Fig. 3 measurement)."""
    _, held = split_views(subject.n_views, cfg.fit.holdout_views)
    full = evaluate_psnr(planes, decoder, subject, held, cfg.triplane, cfg.fit)
    return full, evaluate_psnr(planes, decoder, subject, held, cfg.triplane, cfg.fit, plane_size=cfg.triplane.rescale_min)


def committed_drops(uri: str, cfg: RodinConfig, renders_uri: str | None = None) -> None:
    """Print the held-out PSNR at full resolution and after rescaling of every tri-plane the
    ``fit-triplanes`` flow committed under ``uri`` (the corpus-wide WITH arm), and their median."""
    decoder, _ = load_decoder(uri)
    planes = dict(iter_planes(uri))
    renders = open_store(renders_uri or uri).stage("renders")
    low = cfg.triplane.rescale_min
    rows = []
    for subject in iter_subjects(renders, sorted(planes), renders_index(renders)):
        full, rescaled = full_and_rescaled(planes[subject.subject_id], decoder, subject, cfg)
        rows.append((full, rescaled))
        print(f"committed subject {subject.subject_id:3d}: {full:6.2f} dB at {cfg.triplane.resolution}, "
              f"{rescaled:6.2f} dB at {low}, drop {full - rescaled:5.2f} dB", flush=True)
    drops = [full - rescaled for full, rescaled in rows]
    print(f"committed tri-planes of {uri} ({len(rows)} subjects): median {statistics.median(r[0] for r in rows):.2f} dB "
          f"at {cfg.triplane.resolution}, {statistics.median(r[1] for r in rows):.2f} dB at {low}; drop median "
          f"{statistics.median(drops):.2f} dB, mean {statistics.mean(drops):.2f}, max {max(drops):.2f}; "
          f"{sum(d <= 2.0 for d in drops)} of {len(drops)} within 2 dB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", default="data/tiny", help="dataset root URI holding the renders stage")
    parser.add_argument("--preset", default="tiny", help="config preset (default tiny)")
    parser.add_argument("--subjects", type=int, default=2, help="phase-B subjects fitted in each arm (default 2)")
    parser.add_argument("--cache", default=DEFAULT_CACHE, help=f"phase-A decoder cache folder ({DEFAULT_CACHE})")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--committed", default=None, metavar="URI",
                        help="only report the drop of every tri-plane the fit flow committed under this dataset root")
    parser.add_argument("--decoder-from", default=None, metavar="URI",
                        help="WITH arm: the decoder the fit-triplanes flow committed under this dataset root")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = preset_config(args.preset)
    if args.committed is not None:
        committed_drops(args.committed, base, args.renders)
        return
    if base.fit.rescale_prob == 0:
        raise SystemExit(f"preset {args.preset} fits without rescaling (fit.rescale_prob=0); nothing to compare")
    shared = base.fit.shared_subjects
    subjects = load_subjects(args.renders, shared + args.subjects)
    tri = base.triplane
    low = tri.rescale_min
    arms = [("with rescaling", base.fit.rescale_prob), ("without rescaling", 0.0)]
    rows: list[tuple[str, str, float, float]] = []
    for name, prob in arms:
        cfg = apply_overrides(preset_config(args.preset), [f"fit.rescale_prob={prob}"])
        arm = f"{name} (p={prob:g})"
        decoder, shared_planes = phase_a(subjects[:shared], cfg, Path(args.cache),
                                         args.decoder_from if prob == base.fit.rescale_prob else None, args.renders)
        fitted = [("A", subject, shared_planes[subject.subject_id]) for subject in subjects[:shared]]
        for subject in subjects[shared:]:
            print(f"{arm}: phase B, subject {subject.subject_id}", flush=True)
            result = fit_subject(subject, decoder, tri, cfg.fit, progress=print_progress(f"p={prob:g}"))
            if result.error is not None:
                raise RuntimeError(f"{arm}: {result.error}")
            fitted.append(("B", subject, result.planes))
        for phase, subject, planes in fitted:
            full, rescaled = full_and_rescaled(planes, decoder, subject, cfg)
            rows.append((arm, f"{subject.subject_id} ({phase})", full, rescaled))
    print()
    print(f"Fig. 3 ablation, preset {args.preset}: held-out PSNR of planes at {tri.resolution}x{tri.resolution} and "
          f"after rescale_planes(planes, {low}) (triplane.rescale_min); phase A on subjects "
          f"{[s.subject_id for s in subjects[:shared]]} per arm")
    print(f"{'arm':<28} {'subject (phase)':>15} {f'@{tri.resolution}':>9} {f'@{low}':>9} {'drop':>8}")
    for arm, subject, full, rescaled in rows:
        print(f"{arm:<28} {subject:>15} {full:6.2f} dB {rescaled:6.2f} dB {full - rescaled:5.2f} dB")
    for name, prob in arms:
        arm = f"{name} (p={prob:g})"
        mine = [r for r in rows if r[0] == arm]
        print(f"{arm:<28} mean over {len(mine)}: {statistics.mean(r[2] for r in mine):.2f} dB at {tri.resolution}, "
              f"{statistics.mean(r[3] for r in mine):.2f} dB at {low}, "
              f"drop {statistics.mean(r[2] - r[3] for r in mine):.2f} dB")


if __name__ == "__main__":
    main()
