"""Text to avatar (appendix B.5) judged by the attribute classifier: the share of the attributes each prompt names
that its avatar shows.

Each of ``--prompts`` prompts names 1-3 attributes of a recipe drawn by the corpus's own generator
(:func:`render.recipe.sample_recipe`, subject ids no corpus uses), phrased as the caption variants phrase
them (:func:`render.caption_variants.caption_variant`); a caption attribute stands for the classifier's
attributes it names (``hair``: hairstyle and hair colour, ``garment``: garment, its colour, pattern and
pattern colour ...; :data:`render.attributes.RECIPE_ATTRIBUTES` is the vocabulary). Avatars come from
``rodin text``'s library function (:func:`workflows.text_commands.text_to_avatar`), are rendered from the
near-frontal rig views and judged by the trained classifier (``benchmarks/attribute_classifier.py --save``);
per attribute the script prints how often the named class was read back, beside the classifier's held-out
accuracy and base rate (always answering the training majority class) from the classifier's own report.

What a perfect generator could score is bounded by the judge: the ``all named`` row gives the share the
classifier's held-out accuracy predicts for the same named attributes. ``--ceiling`` also judges, for the
classifier's held-out subjects (or the subjects ``--ceiling-subjects`` names, for a classifier trained on
another corpus), their *fitted* tri-planes (what a generator reproducing them exactly would make) and the
avatars generated from their own image latents (what a perfect text prior would reach), both through the
same rendering path, and predicts the share from each accuracy (:func:`held_out_accuracy`).

Needs a dataset root with committed base, upsampler and text prior checkpoints (``rodin train text-prior``)
and the classifier. Run: ``.venv/bin/python benchmarks/text_to_avatar.py --out data/tiny
--classifier outputs/benchmarks/attribute-classifier [--prompts 20] [--n 1] [--guidance G] [--ceiling]
[--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from render.attributes import RECIPE_ATTRIBUTES, recipe_attributes
from render.caption_variants import attribute_phrases, caption_variant
from render.recipe import AvatarRecipe, sample_recipe
from rodin_core.datasets.attribute_views import read_frontal_views, read_recipes
from rodin_core.datasets.decoder import load_decoder
from rodin_core.datasets.layout import RENDERS_STAGE
from rodin_core.datasets.triplanes import iter_planes
from rodin_core.evaluation.attributes import (
    AttributeClassifierError,
    load_attribute_classifier,
)
from rodin_core.evaluation.avatar_attributes import judge_avatar
from rodin_core.generation import SampleOptions, load_avatar
from rodin_core.generation.job import load_pipeline, trained_config
from rodin_core.storage import open_store
from workflows.text_commands import TEXT_ERRORS, text_to_avatar

CLASSIFIER_ATTRIBUTES = {
    "gender": ("gender",), "expression": ("expression",), "hair": ("hairstyle", "hair_colour"),
    "facial_hair": ("facial_hair",), "skin": ("skin_tone",),
    "accessory": ("accessory", "accessory_style", "accessory_colour"),
    "garment": ("garment", "garment_colour", "garment_pattern", "pattern_colour"),
}
"""Caption attribute -> the classifier attributes its phrase names."""
FIRST_ID = 1_000_000
"""Subject ids of the prompt recipes: above any corpus's."""
DEFAULT_JSON = "outputs/benchmarks/text-to-avatar-report.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/tiny", help="dataset root with the trained checkpoints")
    parser.add_argument("--classifier", default="outputs/benchmarks/attribute-classifier",
                        help="attribute classifier path prefix (benchmarks/attribute_classifier.py --save)")
    parser.add_argument("--prompts", type=int, default=20, help="prompts (default 20)")
    parser.add_argument("--n", type=int, default=1, help="avatars per prompt, seeds seed..seed+n-1 (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompts and of the avatars (default 0)")
    parser.add_argument("--guidance", type=float, default=None, help="text prior CFG scale (default: its config's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="reverse steps of the base model and the upsampler (default: each stage's trained setting)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also judge the fitted and the image-conditioned avatars of the classifier's held-out subjects")
    parser.add_argument("--ceiling-subjects", type=int, nargs="+", default=None, metavar="ID",
                        help="subjects of --out judged for --ceiling (default: the classifier's held-out subjects; "
                             "any, for a classifier trained on another corpus)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--json", default=DEFAULT_JSON, help=f"where to write the JSON report ({DEFAULT_JSON})")
    return parser.parse_args(argv)


def make_prompts(count: int, seed: int) -> list[tuple[str, dict[str, str]]]:
    """``count`` prompts naming 1-3 caption attributes each, with the classifier classes they name."""
    rng = np.random.default_rng(seed)
    prompts = []
    for index in range(count):
        recipe = sample_recipe(seed, FIRST_ID + index)
        names = list(attribute_phrases(recipe))
        picks = [str(n) for n in rng.choice(names, size=min(len(names), int(rng.integers(1, 4))), replace=False)]
        labels = recipe_attributes(recipe)
        named = {a: labels[a] for c in picks for a in CLASSIFIER_ATTRIBUTES[c] if labels.get(a) is not None}
        prompts.append((caption_variant(recipe, rng, keep=picks), named))
    return prompts


def classifier_scores(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Attribute -> the held-out score the classifier's report holds (empty when it has none)."""
    return {s["attribute"]: s for s in metrics.get("scores", []) if isinstance(s, dict) and "attribute" in s}


def expected_share(rows: dict[str, list[bool]], accuracy: dict[str, float]) -> float | None:
    """The share of all named attributes a judge of per-attribute ``accuracy`` reads right on perfect avatars.

    Each named attribute counts as often as it was named; None when one has no accuracy or none was named.
    """
    named = [(attribute, len(hits)) for attribute, hits in rows.items() if hits]
    if not named or any(accuracy.get(attribute) is None for attribute, _ in named):
        return None
    return sum(accuracy[attribute] * count for attribute, count in named) / sum(count for _, count in named)


def render_accuracy(scores: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Attribute -> the classifier's held-out accuracy on corpus renders, from :func:`classifier_scores`."""
    return {attribute: score.get("accuracy") for attribute, score in scores.items()}


def held_out_accuracy(out: str, classifier: Any, decoder: Any, cfg: Any, steps: int | None,
                      device: str, subjects: list[int] | None = None) -> dict[str, dict[str, float]]:
    """The judge on perfect and on image-conditioned avatars of subjects it never trained on: ``subjects`` of
    ``out``, by default the classifier's held-out subjects (right when it trained on ``out``'s own renders; a
    classifier trained on another corpus has seen none of ``out``'s subjects, and any may be given).

    ``fitted``: attribute -> share of those subjects whose fitted tri-plane it reads right, i.e. what it makes of
    a generator that reproduced them exactly. ``from_z``: the same for the avatar the base model and the
    upsampler generate (seed 0, ``steps``) from the subject's own image latent, the encoder's z of its frontal
    ground-truth render: what a text prior that returned exactly that z would reach. Both are rendered by
    :func:`judge_avatar`, as the generated avatars are.
    """
    held_out = {int(s) for s in (subjects if subjects is not None else classifier.metrics.get("held_out_subjects", []))}
    if not held_out:
        raise SystemExit("error: the classifier's report names no held-out subjects; retrain it with "
                         "benchmarks/attribute_classifier.py --save, or name them with --ceiling-subjects")
    stage = open_store(out).stage(RENDERS_STAGE)
    recipes = read_recipes(stage)
    pipeline = load_pipeline(out, None, None, device, require_prior=False)
    frontals = read_frontal_views(stage, 0.0, sorted(held_out & set(recipes)))  # id -> (V, H, W, 3), view 0 first
    hits: dict[str, dict[str, list[bool]]] = {"fitted": defaultdict(list), "from_z": defaultdict(list)}
    for subject, planes in iter_planes(out):
        if subject not in frontals:
            continue
        z = pipeline.encode_image(frontals[subject][0])  # (D,)
        generated = pipeline.generate(z, seed=0, options=SampleOptions(steps=steps))  # (3, C, H, H)
        labels = recipe_attributes(AvatarRecipe.from_dict(recipes[subject]))
        for kind, avatar in (("fitted", planes), ("from_z", generated)):
            read = judge_avatar(classifier, avatar.to(device), decoder, cfg)
            for attribute, label in labels.items():
                if label is not None:
                    hits[kind][attribute].append(read.get(attribute) == label)
        print(f"ceiling: judged held-out subject {subject}", flush=True)
    if not hits["fitted"]:
        raise SystemExit(f"error: none of the subjects {sorted(held_out)[:3]}... judged for the ceiling has a fitted "
                         f"tri-plane under {out}; name subjects of {out} with --ceiling-subjects")
    return {kind: {a: sum(h) / len(h) for a, h in by.items()} for kind, by in hits.items()}


CEILING_COLUMNS = {"fitted": "fitted acc", "from_z": "from-z acc"}
"""Column titles of :func:`held_out_accuracy`'s kinds."""


def format_table(rows: dict[str, list[bool]], scores: dict[str, dict[str, Any]],
                 ceilings: dict[str, dict[str, float]] | None = None) -> str:
    """Per attribute: named, recognised share, the classifier's held-out accuracy (on renders, and on the avatars
    of each ``ceilings`` kind) and base rate; then all named, with the shares those accuracies predict."""

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    ceilings = ceilings or {}
    extra = "".join(f"{CEILING_COLUMNS.get(kind, kind):>12}" for kind in ceilings)
    lines = [f"{'attribute':<18}{'named':>6}{'recognised':>12}{'classifier acc':>16}{extra}{'base rate':>11}"]
    for attribute in RECIPE_ATTRIBUTES:
        if attribute in rows:
            hits, score = rows[attribute], scores.get(attribute, {})
            cells = "".join(f"{fmt(accuracy.get(attribute)):>12}" for accuracy in ceilings.values())
            lines.append(f"{attribute:<18}{len(hits):>6}{fmt(sum(hits) / len(hits)):>12}"
                         f"{fmt(score.get('accuracy')):>16}{cells}{fmt(score.get('base_rate')):>11}")
    every = [hit for hits in rows.values() for hit in hits]
    on_renders = expected_share(rows, render_accuracy(scores))
    cells = "".join(f"{fmt(expected_share(rows, accuracy)):>12}" for accuracy in ceilings.values())
    lines.append(f"{'all named':<18}{len(every):>6}{fmt(sum(every) / len(every) if every else None):>12}"
                 f"{fmt(on_renders):>16}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        classifier = load_attribute_classifier(args.classifier).to(args.device)
    except (AttributeClassifierError, OSError) as exc:
        raise SystemExit(f"error: {' '.join(str(exc).split())}; train it: `.venv/bin/python "
                         f"benchmarks/attribute_classifier.py --renders {args.out} --save {args.classifier}`") from None
    cfg = trained_config(args.out)
    if cfg is None:
        raise SystemExit(f"error: no committed checkpoint under {args.out}/checkpoints; train the stages first")
    decoder = load_decoder(args.out)[0].to(args.device)
    rows: dict[str, list[bool]] = defaultdict(list)
    results = []
    with tempfile.TemporaryDirectory(prefix="rodin-text-bench-") as folder:
        for index, (prompt, named) in enumerate(make_prompts(args.prompts, args.seed)):
            try:
                made = text_to_avatar(args.out, prompt, Path(folder) / f"{index:02d}", n=args.n, seed=args.seed,
                                      text_guidance=args.guidance, steps=args.steps, views=1, device=args.device)
            except TEXT_ERRORS as exc:
                raise SystemExit(f"error: {' '.join(str(exc).split())}") from None
            for entry in made["avatars"]:
                read = judge_avatar(classifier, load_avatar(entry["avatar"]).planes.to(args.device), decoder, cfg)
                hits = {a: read.get(a) == c for a, c in named.items()}
                for attribute, hit in hits.items():
                    rows[attribute].append(hit)
                results.append({"prompt": prompt, "seed": entry["seed"], "named": named,
                                "read": {a: read.get(a) for a in named}})
                print(f"{index:2d} seed {entry['seed']}: {sum(hits.values())}/{len(hits)} recognised  {prompt!r}",
                      flush=True)
    scores = classifier_scores(classifier.metrics)
    ceilings = held_out_accuracy(args.out, classifier, decoder, cfg, args.steps, args.device,
                                 args.ceiling_subjects) if args.ceiling else None
    print()
    print(format_table(rows, scores, ceilings))
    report = {"out": args.out, "classifier": args.classifier, "prompts": args.prompts, "n": args.n,
              "seed": args.seed, "guidance": args.guidance, "steps": args.steps,
              "recognised": {a: sum(h) / len(h) for a, h in rows.items()},
              "classifier_scores": scores, "ceilings": ceilings,
              "expected": {"classifier": expected_share(rows, render_accuracy(scores)),
                           **{kind: expected_share(rows, accuracy) for kind, accuracy in (ceilings or {}).items()}},
              "avatars": results, "seconds": round(time.perf_counter() - start, 1)}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON report: {path}; {report['seconds']} s")
    return report


if __name__ == "__main__":
    main()
