"""benchmarks/attribute_classifier.py end to end on a small renders root with real recipes."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from render.attributes import RECIPE_ATTRIBUTES, recipe_attributes
from render.recipe import sample_recipe
from rodin_core.evaluation.attributes import load_attribute_classifier
from rodin_core.fitting.shard_job import torch_threads

from ..attribute_corpus import make_attribute_renders

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "attribute_classifier.py"


def load_script():
    spec = importlib.util.spec_from_file_location("attribute_classifier", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_trains_saves_and_reports_accuracy_next_to_the_base_rate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_attribute_renders(tmp_path / "data", subjects=10)
    save, report_path = tmp_path / "model" / "judge", tmp_path / "report.json"
    with torch_threads(1):
        report = load_script().main(["--renders", root, "--holdout", "0.3", "--epochs", "2", "--max-angle", "65",
                                     "--save", str(save), "--json", str(report_path)])
    printed = capsys.readouterr().out
    assert "7 training subjects (14 views), 3 held out (ids 7..9); views within 65 degrees of the face" in printed
    assert "epoch 2/2: loss" in printed and printed.count("\n") > len(RECIPE_ATTRIBUTES)
    assert json.loads(report_path.read_text()) == report
    assert report["held_out_subjects"] == [7, 8, 9]
    scores = {s["attribute"]: s for s in report["scores"]}
    assert list(scores) == list(RECIPE_ATTRIBUTES)
    train = [recipe_attributes(sample_recipe(0, s)) for s in range(7)]
    held = [recipe_attributes(sample_recipe(0, s)) for s in (7, 8, 9)]
    for name, score in scores.items():
        counts = Counter(t[name] for t in train if t[name] is not None)
        shown = [h[name] for h in held if h[name] is not None]
        assert score["classes"] == len(RECIPE_ATTRIBUTES[name]) and score["subjects"] == len(shown)
        if shown:
            assert score["majority"] == max(RECIPE_ATTRIBUTES[name], key=lambda c: (counts[c], -RECIPE_ATTRIBUTES[name].index(c)))
            assert score["base_rate"] == pytest.approx(sum(v == score["majority"] for v in shown) / len(shown))
            assert 0.0 <= score["accuracy"] <= 1.0
        else:
            assert score["accuracy"] is None
    loaded = load_attribute_classifier(save)
    assert loaded.vocabulary == RECIPE_ATTRIBUTES and loaded.metrics == report


def test_script_refuses_a_root_without_renders_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"^error: no committed renders shard under .*; render the corpus first") as err:
        load_script().main(["--renders", str(tmp_path / "empty")])
    assert "\n" not in str(err.value)
    root = make_attribute_renders(tmp_path / "data", subjects=2)
    with pytest.raises(SystemExit, match="holds 2 subjects; the classifier needs at least 2 training subjects"):
        load_script().main(["--renders", root])
    with pytest.raises(SystemExit, match=r"--holdout must be a fraction in \(0, 1\), got 1.5"):
        load_script().main(["--renders", root, "--holdout", "1.5"])
