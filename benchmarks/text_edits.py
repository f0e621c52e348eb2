"""Text edits judged by the attribute classifier: does the named attribute change, and only it? (§4.5, B.3)

For each edit of :data:`EDITS` (glasses, blonde hair, a full beard, short hair: phrased with the
caption vocabulary the text tower was trained on, ``render/caption_variants.py``) and each of
``--n`` avatars, the avatar is judged by the trained attribute classifier (its near-frontal
renders, :func:`rodin_core.evaluation.avatar_attributes.render_for_judge`; with ``--mirror`` also
their mirror images), edited with ``z + s·δ`` and the same seed
(:func:`rodin_core.generation.edit.edit_avatar`), and judged again.
Per edit it prints the share of the avatars not showing the target before whose target attribute
flips to it, and the share of the other attributes left unchanged (the attributes that only exist
with the target, e.g. the style of the glasses, are left out). Beside that share it prints the judge's
agreement with itself on the same attributes of the same avatars before the edit, judged from two
halves of their views apart (:func:`rodin_core.evaluation.attributes.judge_halves`): an attribute the
judge reads differently from two halves of one avatar's views cannot be said to stay unchanged, so
this is the ceiling of the unchanged share. A strip per edit, ``edit-<name>.png``
under ``--dest``, shows each avatar's turntable frames before and after. The JSON report also keeps every
judgement (``judged``: each avatar's attributes before, after each edit, and from the two halves
of its views), so that which attributes
an edit changed can be read back.

It needs a dataset root whose base model conditions on a text-capable encoder (``encoder.kind``
avatar_clip or clip) and the latent prior (or ``--avatars`` files), and a classifier saved by
``benchmarks/attribute_classifier.py``.

Run: ``.venv/bin/python benchmarks/text_edits.py --out data/text128 --classifier
outputs/benchmarks/attribute-classifier [--n 8] [--strength 1] [--dest DIR] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rodin_core.encoders import EncoderUnavailableError
from rodin_core.evaluation.attributes import (
    AttributeClassifierError,
    judge,
    judge_halves,
    load_attribute_classifier,
)
from rodin_core.evaluation.avatar_attributes import judge_avatar, render_for_judge
from rodin_core.generation import SampleOptions, load_avatar
from rodin_core.generation.edit import (
    DEFAULT_SOURCE_PROMPT,
    TextEdit,
    edit_avatar,
    edit_text_tower,
)
from rodin_core.generation.job import GENERATION_ERRORS, load_pipeline, turntable_frames
from rodin_core.imaging import contact_sheet, encode_png
from rodin_core.text.directions import text_direction
from rodin_core.text.sentence import PromptError, TextUnavailableError
from rodin_core.text.towers import NoTextSpaceError

DEFAULT_DEST = "outputs/benchmarks/text-edits"
DEFAULT_JSON = "outputs/benchmarks/text-edits-report.json"


@dataclass(frozen=True)
class Edit:
    """One edit: the attribute it should set to ``target``, and how the prompt names it."""

    name: str
    attribute: str
    """An attribute of ``render/attributes.py:RECIPE_ATTRIBUTES``."""
    target: str
    """The class of ``attribute`` the edit asks for."""
    phrase: str
    """The feature as the caption variants name it; the prompt is "a person with <phrase>"."""
    follows: tuple[str, ...] = ()
    """Attributes that only exist with the target (left out of the unchanged count)."""

    @property
    def prompt(self) -> str:
        return f"a person with {self.phrase}"

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-")


EDITS = (
    Edit("glasses", "accessory", "glasses", "glasses", ("accessory_style", "accessory_colour")),
    Edit("blond hair", "hair_colour", "blonde", "blonde hair"),
    Edit("beard", "facial_hair", "beard", "a full beard"),
    Edit("short hair", "hairstyle", "short", "short hair"),
)


@dataclass(frozen=True)
class EditScore:
    """How one edit changed the judged attributes of a set of avatars."""

    edit: str
    avatars: int
    eligible: int
    """Avatars that did not show the target before the edit."""
    flipped: int
    """Eligible avatars that show the target after it."""
    already: int
    """Avatars that showed the target before (not counted in the flip share)."""
    compared: int
    """(avatar, other attribute) pairs compared before and after."""
    unchanged: int
    """Of those, the pairs judged the same after the edit."""
    self_agreed: int | None = None
    """Of the compared pairs, those on which the judge's two halves of the source avatar's views agree
    (:func:`~rodin_core.evaluation.attributes.judge_halves`); None when the halves were not judged."""

    @property
    def flip_share(self) -> float:
        return self.flipped / self.eligible if self.eligible else math.nan

    @property
    def unchanged_share(self) -> float:
        return self.unchanged / self.compared if self.compared else math.nan

    @property
    def self_agreement(self) -> float:
        """The judge's agreement with itself on the compared pairs: the ceiling of :attr:`unchanged_share`."""
        return self.self_agreed / self.compared if self.compared and self.self_agreed is not None else math.nan

    def to_dict(self) -> dict:
        shares = {"flip_share": self.flip_share, "unchanged_share": self.unchanged_share,
                  "self_agreement": self.self_agreement}
        return {**asdict(self), **{k: None if math.isnan(v) else v for k, v in shares.items()}}


def score_edit(edit: Edit, before: Sequence[Mapping[str, str]], after: Sequence[Mapping[str, str]],
               halves: Sequence[tuple[Mapping[str, str], Mapping[str, str]]] | None = None) -> EditScore:
    """Count the flips to ``edit.target`` and the unchanged other attributes of avatars judged ``before`` and
    ``after`` the edit (one attribute -> class mapping per avatar, in the same order).

    ``halves``: per avatar, the judgements of the two halves of its views before the edit
    (:func:`~rodin_core.evaluation.attributes.judge_halves`); the other attributes on which they agree
    are counted as ``self_agreed``.
    """
    if len(before) != len(after) or (halves is not None and len(halves) != len(before)):
        shown = "" if halves is None else f" and {len(halves)} pairs of halves"
        raise ValueError(f"got {len(before)} judgements before the edit, {len(after)} after{shown}; give one per "
                         "avatar")
    eligible = flipped = already = compared = unchanged = agreed = 0
    for index, (old, new) in enumerate(zip(before, after, strict=True)):
        if old[edit.attribute] == edit.target:
            already += 1
        else:
            eligible += 1
            flipped += new[edit.attribute] == edit.target
        others = [name for name in old if name != edit.attribute and name not in edit.follows]
        compared += len(others)
        unchanged += sum(old[name] == new[name] for name in others)
        if halves is not None:
            even, odd = halves[index]
            agreed += sum(even[name] == odd[name] for name in others)
    return EditScore(edit.name, len(before), eligible, flipped, already, compared, unchanged,
                     None if halves is None else agreed)


def format_scores(scores: Sequence[EditScore]) -> str:
    """A text table: edit, avatars, eligible, flipped, flip share, unchanged share of the other attributes and
    the judge's agreement with itself on them (two halves of the views; ``nan`` when not judged)."""
    header = (f"{'edit':<12}{'avatars':>8}{'eligible':>9}{'flipped':>8}{'flip share':>11}{'others unchanged':>17}"
              f"{'judge self-agreement':>22}")
    lines = [header]
    for s in scores:
        lines.append(f"{s.edit:<12}{s.avatars:>8}{s.eligible:>9}{s.flipped:>8}{s.flip_share:>11.3f}"
                     f"{s.unchanged_share:>17.3f}{s.self_agreement:>22.3f}")
    return "\n".join(lines)


def edit_strip(before: Sequence[np.ndarray], after: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """One row per avatar: its frames (F, R, R, 3) before, then after the edit -> RGB uint8 sheet.

    The avatar's label goes under its first frame and "before" under the second, so that neither is cut at a
    small frame's edge; with one frame per side the two share the first tile.
    """
    if not before or len(before) != len(after) or len(labels) != len(before):
        raise ValueError(f"need the same positive number of frame sets before ({len(before)}), after ({len(after)}) "
                         f"and labels ({len(labels)})")
    frames = len(before[0])
    tiles, names = [], []
    for old, new, label in zip(before, after, labels, strict=True):
        tiles += [*old, *new]
        first = [label, "before", *[""] * (frames - 2)] if frames > 1 else [f"{label} before"]
        names += [*first, "after", *[""] * (frames - 1)]
    return contact_sheet(tiles, 2 * frames, names)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/tiny", help="dataset root holding the checkpoints and the decoder")
    parser.add_argument("--classifier", default="outputs/benchmarks/attribute-classifier",
                        help="attribute classifier prefix (benchmarks/attribute_classifier.py --save)")
    parser.add_argument("--n", type=int, default=8, help="avatars sampled from the prior, seeds seed..seed+n-1")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--avatars", nargs="+", default=None, metavar="FILE",
                        help="edit these avatar files instead of sampling")
    parser.add_argument("--edits", nargs="+", default=None, choices=[e.name for e in EDITS], metavar="EDIT",
                        help=f"a subset of the edits ({', '.join(e.name for e in EDITS)})")
    parser.add_argument("--strength", type=float, default=1.0, help="s in z' = z + s * delta (default 1)")
    parser.add_argument("--mirror", action="store_true",
                        help="judge every view together with its mirror image (steadier answers)")
    parser.add_argument("--keep", type=float, default=0.0,
                        help="share of the base model's noisiest reverse steps that follow the source's z (default 0)")
    parser.add_argument("--from", dest="source", default=DEFAULT_SOURCE_PROMPT,
                        help=f"source prompt (default {DEFAULT_SOURCE_PROMPT!r})")
    parser.add_argument("--frames", type=int, default=4, help="turntable frames per avatar in the strips (default 4)")
    parser.add_argument("--resolution", type=int, default=None, help="strip frame side (default render.resolution)")
    parser.add_argument("--dest", default=DEFAULT_DEST, help=f"folder of the strips ({DEFAULT_DEST})")
    parser.add_argument("--json", default=DEFAULT_JSON, help=f"where to write the JSON report ({DEFAULT_JSON})")
    parser.add_argument("--steps", type=int, default=None,
                        help="reverse steps of the base model and the upsampler (default: each stage's trained setting)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return parser.parse_args(argv)


ERRORS = (*GENERATION_ERRORS, AttributeClassifierError, PromptError, NoTextSpaceError, TextUnavailableError,
          EncoderUnavailableError)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.n < 1 or args.frames < 1 or not math.isfinite(args.strength) or not 0.0 <= args.keep <= 1.0:
        raise SystemExit(f"error: --n and --frames must be positive, --strength finite and --keep from 0 to 1, got "
                         f"{args.n}, {args.frames}, {args.strength}, {args.keep}")
    torch.set_num_threads(args.threads)
    edits = [e for e in EDITS if args.edits is None or e.name in args.edits]
    start = time.perf_counter()
    try:
        classifier = load_attribute_classifier(args.classifier)
        unknown = [f"{e.attribute}={e.target}" for e in edits if e.target not in classifier.vocabulary.get(e.attribute, ())]
        if unknown:
            raise SystemExit(f"error: the classifier {args.classifier} cannot judge {unknown}; train it on the corpus "
                             "vocabulary (benchmarks/attribute_classifier.py)")
        pipeline = load_pipeline(args.out, device=args.device, require_prior=args.avatars is None)
        tower = edit_text_tower(pipeline.cfg)
        sources = ([load_avatar(path) for path in args.avatars] if args.avatars
                   else pipeline.sample(args.n, seed=args.seed, options=SampleOptions(steps=args.steps)))
        directions = {e.name: text_direction(tower, e.prompt, args.source) for e in edits}
    except ERRORS as exc:
        raise SystemExit(f"error: {' '.join(str(exc).split())}") from None
    cfg, decoder = pipeline.cfg, pipeline.decoder
    size = args.resolution or cfg.render.resolution
    labels = [f"#{i} seed {a.meta.get('seed')}" for i, a in enumerate(sources)]
    views = [render_for_judge(a.planes, decoder, cfg, classifier.cfg.max_view_angle_deg) for a in sources]
    before = [judge(classifier, v, args.mirror) for v in views]
    halves = [judge_halves(classifier, v, args.mirror) for v in views]
    before_frames = [turntable_frames(cfg, decoder, a.planes, args.frames, size) for a in sources]
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    scores, strips, judged = [], {}, {}
    for edit in edits:
        text = TextEdit(edit.prompt, args.source, args.strength, args.keep)
        edited = [edit_avatar(pipeline, a, text, direction=directions[edit.name]) for a in sources]
        after = [judge_avatar(classifier, a.planes, decoder, cfg, args.mirror) for a in edited]
        scores.append(score_edit(edit, before, after, halves))
        judged[edit.name] = after
        frames = [turntable_frames(cfg, decoder, a.planes, args.frames, size) for a in edited]
        strips[edit.name] = dest / f"edit-{edit.slug}.png"
        strips[edit.name].write_bytes(encode_png(edit_strip(before_frames, frames, labels)))
        print(f"{edit.name}: {edit.prompt!r} from {args.source!r}, |delta| {float(directions[edit.name].norm()):.3f}",
              flush=True)
    print()
    print(format_scores(scores))
    report = {"out": args.out, "classifier": args.classifier, "mirror": args.mirror, "avatars": len(sources),
              "strength": args.strength, "keep": args.keep, "steps": args.steps, "source_prompt": args.source,
              "encoder": cfg.encoder.kind,
              "edits": [{**asdict(e), "prompt": e.prompt, "strip": str(strips[e.name]),
                         "direction_norm": float(directions[e.name].norm())} for e in edits],
              "scores": [s.to_dict() for s in scores], "judged": {"before": before, "after": judged,
                                                                     "halves": halves},
              "seconds": round(time.perf_counter() - start, 1)}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nstrips under {dest}; JSON report: {path}; {report['seconds']} s")
    return report


if __name__ == "__main__":
    main()
