"""The convolutional refiner (paper §3.3, Fig. 8): shapes at 2x/4x, bilinear start, inputs, config checks, files."""

import json

import pytest
import torch
import torch.nn.functional as F

from rodin_core.networks.refiner import (
    ConvRefiner,
    RefinerConfig,
    bilinear_upsample,
    refiner_inputs,
)
from rodin_core.networks.refiner_io import (
    REFINER_JSON,
    REFINER_WEIGHTS,
    RefinerLoadError,
    TrainedRefiner,
    load_refiner,
    refiner_from_bytes,
    refiner_to_bytes,
    save_refiner,
)

META = {"input_resolution": 12, "camera_radius": 4.0, "background": 1.0, "decoder_sha256": "ab" * 32}


def _inputs(batch: int = 2, side: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 5, side, side, generator=generator)


@pytest.mark.parametrize("scale", [2, 4])
def test_output_is_scale_times_the_input_side(scale: int) -> None:
    model = ConvRefiner(RefinerConfig(scale=scale, channels=8, blocks=1))
    assert model(_inputs(3, 12)).shape == (3, 3, 12 * scale, 12 * scale)
    assert model(torch.rand(1, 5, 7, 10)).shape == (1, 3, 7 * scale, 10 * scale)  # any side, not only squares


@pytest.mark.parametrize("scale", [2, 4])
def test_an_untrained_refiner_is_exactly_bilinear_upsampling(scale: int) -> None:
    torch.manual_seed(1)
    model = ConvRefiner(RefinerConfig(scale=scale, channels=8, blocks=2))
    x = _inputs()
    expected = F.interpolate(x[:, :3], scale_factor=scale, mode="bilinear", align_corners=False)
    assert torch.equal(model(x), expected)
    assert torch.equal(bilinear_upsample(x[:, :3], scale), expected)
    with torch.no_grad():  # the residual branch is live: a non-zero tail changes the output
        model.tail.weight.normal_()
    assert not torch.allclose(model(x), expected)


def test_the_refiner_reads_opacity_and_depth_not_only_colour() -> None:
    torch.manual_seed(2)
    model = ConvRefiner(RefinerConfig(channels=8, blocks=1))
    with torch.no_grad():
        model.tail.weight.normal_()
    x = _inputs()
    for channel in (3, 4):
        changed = x.clone()
        changed[:, channel] += 0.5
        assert not torch.allclose(model(changed), model(x))


def test_refiner_inputs_stack_colour_opacity_and_depth_offset() -> None:
    rgb, opacity = torch.rand(2, 3, 4, 5), torch.tensor([1.0, 0.0]).repeat_interleave(20).reshape(2, 4, 5)
    depth = torch.full((2, 4, 5), 3.5)
    x = refiner_inputs(rgb, opacity, depth, camera_radius=4.0)
    assert x.shape == (2, 5, 4, 5)
    assert torch.equal(x[:, :3], rgb) and torch.equal(x[:, 3], opacity)
    assert torch.allclose(x[0, 4], torch.full((4, 5), -0.5)) and torch.equal(x[1, 4], torch.zeros(4, 5))  # empty: 0
    with pytest.raises(ValueError, match="refiner inputs need rgb"):
        refiner_inputs(rgb, opacity[:, :3], depth, 4.0)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("scale", 3, r"refiner scale must be one of \(2, 4\), got 3"),
    ("scale", 1, r"refiner scale must be one of \(2, 4\), got 1"),
    ("channels", 0, "refiner channels must be an integer >= 1, got 0"),
    ("blocks", -1, "refiner blocks must be an integer >= 0, got -1"),
])
def test_bad_config_values_are_one_line_errors(field: str, value: int, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        RefinerConfig(**{field: value})
    assert "\n" not in str(info.value)


def test_the_forward_refuses_other_inputs_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"the refiner takes \(B, 5, h, w\) from refiner_inputs") as info:
        ConvRefiner(RefinerConfig(channels=4, blocks=0))(torch.rand(1, 3, 8, 8))
    assert "\n" not in str(info.value)


def test_save_and_load_round_trip_with_strict_keys(tmp_path) -> None:
    torch.manual_seed(3)
    model = ConvRefiner(RefinerConfig(scale=4, channels=6, blocks=2))
    with torch.no_grad():
        model.tail.weight.normal_()
    folder = save_refiner(TrainedRefiner(model, dict(META)), tmp_path / "refiner")
    loaded = load_refiner(folder)
    assert loaded.model.cfg == model.cfg and loaded.meta == META and loaded.scale == 4
    assert loaded.input_resolution == 12
    x = _inputs()
    assert torch.equal(loaded.model(x), model(x))
    tensors, text = refiner_to_bytes(TrainedRefiner(model, dict(META)))
    body = json.loads(text)
    body["refiner"]["blocks"] = 3  # a config that builds one more block than the weights hold
    with pytest.raises(RefinerLoadError, match=r"missing \['body\.2\.conv1\.bias'") as info:
        refiner_from_bytes(tensors, json.dumps(body), source="x")
    assert "\n" not in str(info.value)
    body["refiner"]["blocks"] = 2
    body["refiner"]["channels"] = 7
    with pytest.raises(RefinerLoadError, match="shapes"):
        refiner_from_bytes(tensors, json.dumps(body), source="x")
    body["refiner"]["channels"] = 6
    body["refiner"]["width"] = 1
    with pytest.raises(RefinerLoadError, match="invalid 'refiner' section"):
        refiner_from_bytes(tensors, json.dumps(body), source="x")


def test_loading_refuses_missing_or_foreign_files_in_one_line(tmp_path) -> None:
    with pytest.raises(RefinerLoadError, match="no refiner at .* train one with `rodin train refiner`"):
        load_refiner(tmp_path)
    folder = save_refiner(TrainedRefiner(ConvRefiner(RefinerConfig(channels=4, blocks=0)), dict(META)), tmp_path)
    (folder / REFINER_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(RefinerLoadError, match="are not readable safetensors") as info:
        load_refiner(folder)
    assert "\n" not in str(info.value)
    (folder / REFINER_JSON).write_text(json.dumps({"kind": "rodin.triplane_decoder"}))
    with pytest.raises(RefinerLoadError, match="is not a 'rodin.refiner' document"):
        load_refiner(folder)
    with pytest.raises(RefinerLoadError, match="refiner meta lacks"):
        refiner_to_bytes(TrainedRefiner(ConvRefiner(RefinerConfig(channels=4, blocks=0)), {"camera_radius": 4.0}))
