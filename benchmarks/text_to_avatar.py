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

Needs a dataset root with committed base, upsampler and text prior checkpoints (``rodin train text-prior``)
and the classifier. Run: ``.venv/bin/python benchmarks/text_to_avatar.py --out data/tiny
--classifier outputs/benchmarks/attribute-classifier [--prompts 20] [--n 1] [--guidance G] [--json PATH]``.
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
from render.recipe import sample_recipe
from rodin_core.datasets.decoder import load_decoder
from rodin_core.evaluation.attributes import (
    AttributeClassifierError,
    load_attribute_classifier,
)
from rodin_core.evaluation.avatar_attributes import judge_avatar
from rodin_core.generation import load_avatar
from rodin_core.generation.job import trained_config
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


def format_table(rows: dict[str, list[bool]], scores: dict[str, dict[str, Any]]) -> str:
    """Per attribute: named, recognised share, the classifier's held-out accuracy and base rate; then all."""

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = [f"{'attribute':<18}{'named':>6}{'recognised':>12}{'classifier acc':>16}{'base rate':>11}"]
    for attribute in RECIPE_ATTRIBUTES:
        if attribute in rows:
            hits, score = rows[attribute], scores.get(attribute, {})
            lines.append(f"{attribute:<18}{len(hits):>6}{fmt(sum(hits) / len(hits)):>12}"
                         f"{fmt(score.get('accuracy')):>16}{fmt(score.get('base_rate')):>11}")
    every = [hit for hits in rows.values() for hit in hits]
    lines.append(f"{'all named':<18}{len(every):>6}{fmt(sum(every) / len(every) if every else None):>12}")
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
    print()
    print(format_table(rows, scores))
    report = {"out": args.out, "classifier": args.classifier, "prompts": args.prompts, "n": args.n,
              "seed": args.seed, "guidance": args.guidance, "steps": args.steps,
              "recognised": {a: sum(h) / len(h) for a, h in rows.items()},
              "classifier_scores": scores, "avatars": results, "seconds": round(time.perf_counter() - start, 1)}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON report: {path}; {report['seconds']} s")
    return report


if __name__ == "__main__":
    main()
