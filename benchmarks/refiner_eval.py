"""The convolutional refiner against bilinear up-sampling on held-out subjects (paper §3.3, Fig. 8).

Reads the refiner committed under ``--out`` (``rodin train refiner``), renders the fitted tri-planes
of the subjects it never trained on (its ``held_out_subjects``, or ``--subjects``) from the cameras
of the high-resolution corpus ``--hr-renders`` at the refiner's input side, and scores the refined
and the bilinear up-sampled images against those high-resolution renders: PSNR and LPIPS per pair,
averaged. LPIPS uses the ``lpips`` package when its weights are cached, else the shift-tolerant VGG
of stlpips-pytorch (the network of the refiner's perceptual loss), and says which.

Run: ``.venv/bin/python benchmarks/refiner_eval.py --out data/tiny --hr-renders data/tiny-hr [--json PATH]
[--sheet PNG] [--turntable PNG --avatar-subject ID]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from rodin_core.config import load_config
from rodin_core.datasets.decoder import load_decoder
from rodin_core.datasets.errors import StageInputError
from rodin_core.datasets.refiner_pairs import concat_pairs, iter_pairs
from rodin_core.datasets.refiner_store import read_refiner
from rodin_core.datasets.triplanes import iter_planes
from rodin_core.evaluation.refiner import refiner_sheet, score_refiner
from rodin_core.generation.job import render_settings
from rodin_core.generation.refine import refined_turntable
from rodin_core.imaging import contact_sheet, encode_png
from rodin_core.metrics import LPIPS, LPIPS_NETWORKS
from rodin_core.networks.refiner_io import RefinerLoadError

DEFAULT_JSON = "outputs/benchmarks/refiner-eval.json"
SHEET_PAIRS = 2
"""Pairs per subject in the comparison sheet."""
TURNTABLE_FRAMES = 4


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/tiny", help="dataset root with the refiner, decoder and tri-planes")
    parser.add_argument("--hr-renders", required=True, help="dataset root of the same subjects at 2x or 4x")
    parser.add_argument("--renders", help="dataset root of the renders the tri-planes were fitted to (default --out)")
    parser.add_argument("--preset", default="tiny", help="preset of the corpus (default tiny)")
    parser.add_argument("--subjects", type=int, nargs="+", help="subject ids (default: the refiner's held-out ones)")
    parser.add_argument("--pairs-cache", help="local folder of cached renders of the fitted planes")
    parser.add_argument("--lpips", choices=LPIPS_NETWORKS, default="auto", help="LPIPS network (default auto)")
    parser.add_argument("--json", default=DEFAULT_JSON, help=f"where to write the JSON report ({DEFAULT_JSON})")
    parser.add_argument("--sheet", help="also write a PNG: fitted render, bilinear, refined, ground truth per pair")
    parser.add_argument("--turntable", help="also write a PNG of turntable frames of --avatar-subject, bilinear "
                                            "above refined")
    parser.add_argument("--avatar-subject", type=int, help="fitted subject of --turntable (default: first measured)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.preset)
    try:
        refiner = read_refiner(args.out)
        decoder, sha256 = load_decoder(args.out)
        if refiner.meta["decoder_sha256"] != sha256:
            raise StageInputError(f"the refiner under {args.out} was trained for another decoder; train it again")
        planes = dict(iter_planes(args.out))
        subjects = args.subjects or refiner.meta["held_out_subjects"]
        missing = [s for s in subjects if s not in planes]
        if missing:
            raise StageInputError(f"subjects {missing} have no fitted tri-plane under {args.out}")
        seen = sorted(set(subjects) & set(refiner.meta["train_subjects"]))
        pairs = concat_pairs(list(iter_pairs(cfg, args.renders or args.out, args.hr_renders,
                                             {s: planes[s] for s in subjects}, decoder, render_settings(cfg),
                                             progress=True, cache=args.pairs_cache)))
    except (StageInputError, RefinerLoadError) as err:
        print(f"refiner_eval: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    scores = score_refiner(refiner.model, pairs, LPIPS(args.lpips))
    print(f"refiner x{refiner.scale} ({refiner.input_resolution} -> {refiner.input_resolution * refiner.scale} px), "
          f"subjects {subjects}{' (seen in training: ' + str(seen) + ')' if seen else ''}, {scores.pairs} pairs, "
          f"LPIPS network {scores.lpips_network}")
    print(scores.table())
    report = {"subjects": subjects, "seen_in_training": seen, "scale": refiner.scale,
              "input_resolution": refiner.input_resolution, "train": refiner.meta["train"],
              "train_subjects": refiner.meta["train_subjects"], "scores": scores.__dict__}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    if args.sheet:
        keep = torch.cat([torch.nonzero(pairs.subjects == s).flatten()[:SHEET_PAIRS] for s in subjects])
        shown = type(pairs)(pairs.inputs[keep], pairs.targets[keep], pairs.subjects[keep], pairs.views[keep])
        Path(args.sheet).write_bytes(encode_png(refiner_sheet(refiner.model, shown)))
        print(f"wrote {args.sheet}")
    if args.turntable:
        subject = subjects[0] if args.avatar_subject is None else args.avatar_subject
        refined, bilinear = refined_turntable(cfg, decoder, planes[subject], TURNTABLE_FRAMES,
                                              refiner.input_resolution, refiner)
        labels = [f"#{subject} frame {k}: bilinear" for k in range(TURNTABLE_FRAMES)]
        labels += [f"#{subject} frame {k}: refined" for k in range(TURNTABLE_FRAMES)]
        sheet = contact_sheet([*bilinear, *refined], TURNTABLE_FRAMES, labels)
        Path(args.turntable).write_bytes(encode_png(np.ascontiguousarray(sheet)))
        print(f"wrote {args.turntable}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
