"""The attribute classifier: heads, inputs, judge, strict save and load (paper §4.5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rodin_core.evaluation.attributes import (
    VGG_FEATURES,
    AttributeClassifier,
    AttributeClassifierConfig,
    AttributeClassifierError,
    AttributeLoadError,
    UnknownAttributeError,
    judge,
    judge_halves,
    load_attribute_classifier,
    probabilities,
    save_attribute_classifier,
)

VOCABULARY = {"colour": ("red", "green", "blue"), "shape": ("round", "square"), "size": ("s", "m", "l", "xl")}
SMALL = AttributeClassifierConfig(image_size=16, channels=(4, 8), hidden=8)


def classifier(vocabulary: dict = VOCABULARY, cfg: AttributeClassifierConfig = SMALL) -> AttributeClassifier:
    torch.manual_seed(0)
    return AttributeClassifier(vocabulary, cfg).eval()


def test_one_head_per_attribute_with_its_class_count_and_logit_shapes() -> None:
    model = classifier()
    assert [head.out_features for head in model.heads] == [3, 2, 4]
    logits = model(torch.rand(5, 3, 24, 20))  # resized to 16 x 16 inside
    assert list(logits) == list(VOCABULARY)
    assert {name: tuple(v.shape) for name, v in logits.items()} == {"colour": (5, 3), "shape": (5, 2), "size": (5, 4)}


def test_uint8_images_equal_their_float_version() -> None:
    model = classifier()
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    a, b = probabilities(model, images), probabilities(model, images.float() / 255)
    assert all(torch.allclose(a[k], b[k]) for k in VOCABULARY)
    assert all(torch.allclose(p.sum(-1), torch.ones(3)) for p in a.values())


def favour(model: AttributeClassifier, attribute: str, index: int) -> None:
    """Make ``attribute``'s head answer class ``index`` whatever the image."""
    head = model.heads[list(VOCABULARY).index(attribute)]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-5.0)
        head.bias[index] = 5.0


def test_judge_names_the_classes_the_heads_favour() -> None:
    model = classifier()
    favour(model, "colour", 2)
    favour(model, "shape", 0)
    favour(model, "size", 3)
    assert judge(model, torch.rand(4, 3, 16, 16)) == {"colour": "blue", "shape": "round", "size": "xl"}


def red_or_green_by_brightness() -> AttributeClassifier:
    """A classifier whose colour head reads a black view as red (0.9) and a white one as green (0.6)."""
    model = classifier()
    fixed = {0: torch.tensor([0.9, 0.05, 0.05]), 1: torch.tensor([0.2, 0.6, 0.2])}

    def fake_forward(images: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = [fixed[round(float(image.mean()))] for image in images]
        out = {name: torch.zeros(len(images), len(c)) for name, c in VOCABULARY.items()}
        out["colour"] = torch.stack(rows).log()
        return out

    model.forward = fake_forward  # type: ignore[method-assign]
    return model


def test_judge_averages_the_probabilities_of_the_views() -> None:
    model = red_or_green_by_brightness()
    # Two views: one says red with 0.9, the other green with 0.6; averaged, red wins (0.45 + 0.2 vs 0.05 + 0.3).
    views = torch.stack([torch.zeros(3, 16, 16), torch.ones(3, 16, 16)])
    assert judge(model, views)["colour"] == "red"
    assert judge(model, views[1:])["colour"] == "green"


def test_mirror_averages_the_views_with_their_mirror_images() -> None:
    model = classifier()
    # The colour head reads the left half of a view: black on the left -> red (0.9), white on the left -> green (0.7).

    def fake_forward(images: torch.Tensor) -> dict[str, torch.Tensor]:
        left = images[..., : images.shape[-1] // 2].mean(dim=(1, 2, 3))  # (N,)
        rows = [torch.tensor([0.9, 0.05, 0.05]) if value < 0.5 else torch.tensor([0.15, 0.7, 0.15]) for value in left]
        out = {name: torch.zeros(len(images), len(c)) for name, c in VOCABULARY.items()}
        out["colour"] = torch.stack(rows).log()
        return out

    model.forward = fake_forward  # type: ignore[method-assign]
    view = torch.ones(1, 3, 16, 16)
    view[..., :8] = 0.0  # black left half, white right half
    assert judge(model, view)["colour"] == "red"
    assert judge(model, view.flip(-1))["colour"] == "green"
    # With its mirror image, the view's probabilities are averaged with the flipped view's: red 0.525 vs green 0.375.
    assert judge(model, view, mirror=True) == judge(model, torch.cat([view, view.flip(-1)]))
    assert judge(model, view.flip(-1), mirror=True)["colour"] == "red"  # the mirrored pair is the same pair


def test_judge_halves_judges_the_even_and_the_odd_views_apart() -> None:
    model = red_or_green_by_brightness()
    # Even views say red (0.9), odd views green (0.6): each half keeps its own answer; all four together say red.
    views = torch.stack([torch.zeros(3, 16, 16), torch.ones(3, 16, 16)] * 2)  # red, green, red, green
    even, odd = judge_halves(model, views)
    assert (even["colour"], odd["colour"], judge(model, views)["colour"]) == ("red", "green", "red")
    assert even == judge(model, views[0::2]) and odd == judge(model, views[1::2])
    assert judge_halves(model, views, mirror=True) == (even, odd)  # these views are their own mirror images
    with pytest.raises(AttributeClassifierError, match="needs at least 2 views, got 1; render more") as err:
        judge_halves(model, views[:1])
    assert "\n" not in str(err.value)


def test_bad_inputs_and_unknown_names_are_one_line_errors() -> None:
    model = classifier()
    for bad in (torch.rand(3, 16, 16), torch.rand(2, 4, 16, 16), torch.rand(0, 3, 16, 16), torch.rand(1, 3, 4, 4)):
        with pytest.raises(AttributeClassifierError, match=r"non-empty RGB batch \(N, 3, H, W\)") as err:
            model(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(AttributeClassifierError, match=r"values in \[0, 1\], got \[255, 255\]; divide 8-bit"):
        judge(model, torch.full((1, 3, 16, 16), 255.0))
    with pytest.raises(UnknownAttributeError, match="unknown attribute 'hat'; the classifier knows colour, shape, size"):
        model.classes("hat")
    with pytest.raises(UnknownAttributeError, match=r"attribute 'colour' has no class 'pink'; it has \['red'"):
        model.class_index("colour", "pink")
    assert model.class_index("size", "l") == 2
    with pytest.raises(AttributeClassifierError, match="attribute 'shape' has classes \\['round'\\]; it needs at least two"):
        AttributeClassifier({"shape": ("round",)}, SMALL)
    with pytest.raises(AttributeClassifierError, match="vocabulary is empty"):
        AttributeClassifier({}, SMALL)


def test_save_and_load_round_trip_keeps_outputs_vocabulary_and_metrics(tmp_path: Path) -> None:
    model = classifier()
    weights, document = save_attribute_classifier(model, tmp_path / "judge", metrics={"accuracy": {"colour": 0.9}})
    assert (weights.name, document.name) == ("judge.safetensors", "judge.json")
    saved = json.loads(document.read_text())
    assert saved["vocabulary"] == {k: list(v) for k, v in VOCABULARY.items()}
    assert saved["config"] == SMALL.to_dict() | {"channels": [4, 8]}
    loaded = load_attribute_classifier(tmp_path / "judge.json")
    assert not loaded.training and loaded.vocabulary == VOCABULARY and loaded.cfg == SMALL
    assert loaded.metrics == {"accuracy": {"colour": 0.9}}
    images = torch.rand(4, 3, 16, 16)
    expected, got = probabilities(model, images), probabilities(loaded, images)
    assert all(torch.equal(expected[k], got[k]) for k in VOCABULARY)


def test_load_is_strict_about_json_keys_tensor_keys_and_shapes(tmp_path: Path) -> None:
    save_attribute_classifier(classifier(), tmp_path / "judge")
    document = tmp_path / "judge.json"
    good = json.loads(document.read_text())

    document.write_text(json.dumps(good | {"extra": 1}))
    with pytest.raises(AttributeLoadError, match=r"has unknown keys \['extra'\] and lacks keys \[\]"):
        load_attribute_classifier(tmp_path / "judge")
    document.write_text(json.dumps(good | {"config": good["config"] | {"width": 3}}))
    with pytest.raises(AttributeLoadError, match="bad config or vocabulary.*unknown AttributeClassifierConfig keys"):
        load_attribute_classifier(tmp_path / "judge")
    # One more class in the JSON than the saved head has: a shape mismatch, named.
    document.write_text(json.dumps(good | {"vocabulary": good["vocabulary"] | {"shape": ["round", "square", "star"]}}))
    with pytest.raises(AttributeLoadError, match=r"heads.1.weight: stored \(2, 8\), expected \(3, 8\)"):
        load_attribute_classifier(tmp_path / "judge")
    document.write_text(json.dumps(good))
    state = load_file(tmp_path / "judge.safetensors")
    del state["heads.2.bias"]
    save_file(state | {"heads.3.bias": torch.zeros(2)}, tmp_path / "judge.safetensors")
    with pytest.raises(AttributeLoadError, match=r"missing keys \['heads.2.bias'\], unexpected keys \['heads.3.bias'\]"):
        load_attribute_classifier(tmp_path / "judge")
    with pytest.raises(AttributeLoadError, match="attribute classifier file '.*nowhere.safetensors' does not exist"):
        load_attribute_classifier(tmp_path / "nowhere")


def test_the_vgg16_backbone_is_frozen_and_left_out_of_the_file(tmp_path: Path) -> None:
    cfg = AttributeClassifierConfig(image_size=32, hidden=8, backbone="vgg16")
    model = classifier(cfg=cfg)
    images = torch.rand(3, 3, 20, 20)
    features = model.backbone_features(images)
    assert features.shape == (3, VGG_FEATURES) and not features.requires_grad
    logits = model(images)
    assert {k: tuple(v.shape) for k, v in logits.items()} == {"colour": (3, 3), "shape": (3, 2), "size": (3, 4)}
    logits["colour"].sum().backward()  # gradients reach the trainable part only
    assert model.trunk[1].weight.grad is not None
    assert sorted(model.state_dict()) == ["heads.0.bias", "heads.0.weight", "heads.1.bias", "heads.1.weight",
                                          "heads.2.bias", "heads.2.weight", "trunk.0.num_batches_tracked",
                                          "trunk.0.running_mean", "trunk.0.running_var", "trunk.1.bias",
                                          "trunk.1.weight"]
    assert model.trunk[1].in_features == VGG_FEATURES
    save_attribute_classifier(model, tmp_path / "judge")
    loaded = load_attribute_classifier(tmp_path / "judge")
    assert loaded.cfg.backbone == "vgg16"
    expected, got = probabilities(model, images), probabilities(loaded, images)
    assert all(torch.allclose(expected[k], got[k], atol=1e-6) for k in VOCABULARY)


def test_a_file_without_a_backbone_field_reads_as_the_cnn(tmp_path: Path) -> None:
    save_attribute_classifier(classifier(), tmp_path / "judge")
    document = json.loads((tmp_path / "judge.json").read_text())
    del document["config"]["backbone"]
    (tmp_path / "judge.json").write_text(json.dumps(document))
    assert load_attribute_classifier(tmp_path / "judge").cfg.backbone == "cnn"


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match=r"attributes.backbone must be one of \('cnn', 'vgg16'\), got 'resnet'"):
        AttributeClassifierConfig(backbone="resnet").validate()
    with pytest.raises(ValueError, match="attributes.image_size"):
        AttributeClassifierConfig(image_size=4).validate()
    with pytest.raises(ValueError, match="attributes.dropout"):
        AttributeClassifierConfig(dropout=1.0).validate()


def test_judge_avatar_renders_the_near_frontal_rig_views_over_the_background() -> None:
    from rodin_core.config import preset_config
    from rodin_core.evaluation.avatar_attributes import (
        judge_avatar,
        judge_cameras,
        render_for_judge,
    )

    from ...stage_data import decoder_for

    cfg = preset_config("tiny")
    cfg.render.views, cfg.render.resolution = 16, 12
    cfg.fit.coarse_samples, cfg.fit.fine_samples = 4, 0
    c2w, intrinsics = judge_cameras(cfg, 40.0)
    assert len(c2w) == intrinsics.shape[0] == 4  # views 0, 5, 8 and 13 of the 16-view rig
    empty = torch.zeros(3, cfg.triplane.channels, 8, 8)  # no density: the background shows everywhere
    decoder = decoder_for(cfg, density_bias=-20.0)
    frames = render_for_judge(empty, decoder, cfg, 40.0)
    assert frames.shape == (4, 3, 12, 12) and torch.allclose(frames, torch.ones_like(frames), atol=1 / 255)
    model = classifier(cfg=AttributeClassifierConfig(image_size=16, channels=(4, 8), hidden=8, max_view_angle_deg=40.0))
    favour(model, "size", 1)
    assert judge_avatar(model, empty, decoder, cfg)["size"] == "m"
