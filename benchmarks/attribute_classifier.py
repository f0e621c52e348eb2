"""Train the attribute classifier on a rendered corpus and print its held-out accuracy per attribute (§4.5).

Subjects are labelled from their recipes (:func:`render.attributes.recipe_attributes`); the last
``--holdout`` fraction of subject ids is held out. The classifier trains on the near-frontal views
(within ``--max-angle`` degrees of the face) of the other subjects; each held-out subject is judged
from all its near-frontal views together, and its accuracy is printed next to the base rate (always
answering the training majority class). The classifier is saved with the table as its metrics.

By default the classifier reads the frozen pretrained VGG16 that ships with ``stlpips-pytorch``
(``--backbone vgg16``, views resized to 128 px); ``--backbone cnn`` trains a small CNN from scratch.

Run: ``.venv/bin/python benchmarks/attribute_classifier.py --renders data/tiny [--backbone vgg16|cnn] [--save PREFIX]
[--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from render.attributes import RECIPE_ATTRIBUTES, recipe_attributes
from render.recipe import AvatarRecipe
from rodin_core.datasets.attribute_views import read_frontal_views, read_recipes
from rodin_core.datasets.errors import StageInputError
from rodin_core.datasets.layout import RENDERS_STAGE
from rodin_core.evaluation.attribute_scores import format_scores, score_attributes
from rodin_core.evaluation.attributes import (
    BACKBONES,
    AttributeClassifierConfig,
    AttributeClassifierError,
    save_attribute_classifier,
)
from rodin_core.storage import StorageError, open_store
from rodin_core.training.attributes import (
    AttributeTrainConfig,
    encode_labels,
    train_attribute_classifier,
)

DEFAULT_SAVE = "outputs/benchmarks/attribute-classifier"
DEFAULT_JSON = "outputs/benchmarks/attribute-classifier-report.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", default="data/tiny", help="dataset root holding committed renders")
    parser.add_argument("--holdout", type=float, default=0.2, help="fraction of subjects held out (default 0.2)")
    parser.add_argument("--max-angle", type=float, default=60.0,
                        help="views within this many degrees of the face direction (default 60)")
    parser.add_argument("--epochs", type=int, default=AttributeTrainConfig.epochs, help="training epochs")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--save", default=DEFAULT_SAVE, help=f"classifier path prefix ({DEFAULT_SAVE})")
    parser.add_argument("--json", default=DEFAULT_JSON, help=f"where to write the JSON report ({DEFAULT_JSON})")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--backbone", choices=BACKBONES, default="vgg16",
                        help="vgg16: the frozen pretrained VGG16 of stlpips-pytorch (default); cnn: trained from scratch")
    parser.add_argument("--image-size", type=int, default=None,
                        help="side the views are resized to (default 128 for vgg16, 64 for cnn)")
    return parser.parse_args(argv)


def model_config(args: argparse.Namespace) -> AttributeClassifierConfig:
    """The classifier's shape from the options: backbone, input side, view angle."""
    size = args.image_size or (128 if args.backbone == "vgg16" else AttributeClassifierConfig.image_size)
    try:
        return AttributeClassifierConfig(max_view_angle_deg=args.max_angle, backbone=args.backbone,
                                         image_size=size).validate()
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def to_tensor(views: np.ndarray) -> torch.Tensor:
    """(V, H, W, 3) uint8 -> (V, 3, H, W) uint8."""
    return torch.from_numpy(views).permute(0, 3, 1, 2).contiguous()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not 0.0 < args.holdout < 1.0:
        raise SystemExit(f"error: --holdout must be a fraction in (0, 1), got {args.holdout}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        stage = open_store(args.renders).stage(RENDERS_STAGE)
        labels = {s: recipe_attributes(AvatarRecipe.from_dict(r)) for s, r in read_recipes(stage).items()}
        views = {s: to_tensor(v) for s, v in read_frontal_views(stage, args.max_angle).items()}
    except (StageInputError, StorageError) as exc:
        raise SystemExit(f"error: {' '.join(str(exc).split())}") from None
    subjects = sorted(views)
    held = max(1, math.ceil(args.holdout * len(subjects)))
    if len(subjects) - held < 2:
        raise SystemExit(f"error: {args.renders} holds {len(subjects)} subjects; the classifier needs at least 2 "
                         f"training subjects besides the {held} held out: render more (`rodin render --subjects N`)")
    train_ids, test_ids = subjects[:-held], subjects[-held:]
    images = torch.cat([views[s] for s in train_ids])
    targets = encode_labels([labels[s] for s in train_ids for _ in range(len(views[s]))], RECIPE_ATTRIBUTES)
    print(f"{len(train_ids)} training subjects ({len(images)} views), {len(test_ids)} held out "
          f"(ids {test_ids[0]}..{test_ids[-1]}); views within {args.max_angle:g} degrees of the face")
    try:
        trained = train_attribute_classifier(
            images, targets, RECIPE_ATTRIBUTES, model_config(args),
            AttributeTrainConfig(epochs=args.epochs, seed=args.seed),
            log=lambda epoch, loss: print(f"epoch {epoch + 1}/{args.epochs}: loss {loss:.3f}", flush=True))
    except AttributeClassifierError as exc:
        raise SystemExit(f"error: {exc}") from None
    scores = score_attributes(trained.model, {s: views[s] for s in test_ids}, {s: labels[s] for s in test_ids},
                              {s: labels[s] for s in train_ids})
    print()
    print(format_scores(scores))
    report = {
        "renders": args.renders, "train_subjects": len(train_ids), "train_views": len(images),
        "held_out_subjects": test_ids, "max_angle_deg": args.max_angle, "epochs": args.epochs, "seed": args.seed,
        "backbone": trained.model.cfg.backbone, "image_size": trained.model.cfg.image_size,
        "final_loss": trained.losses[-1], "seconds": round(time.perf_counter() - start, 1),
        "scores": [s.to_dict() for s in scores],
    }
    weights, document = save_attribute_classifier(trained.model, args.save, metrics=report)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nclassifier: {weights} + {document.name}; JSON report: {path}; {report['seconds']} s")
    return report


if __name__ == "__main__":
    main()
