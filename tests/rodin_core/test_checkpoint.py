"""Checkpoints without pickle: exact round trip of model + EMA + optimizer, strict mismatch errors."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from rodin_core.checkpoint import (
    CHECKPOINT_JSON,
    CheckpointError,
    CheckpointMismatchError,
    download_checkpoint,
    load_checkpoint,
    save_checkpoint,
    upload_checkpoint,
)
from rodin_core.training.ema import EMA
from rodin_core.triplane.stats import PlaneStats

INPUTS = torch.linspace(-1, 1, 24).reshape(8, 3)


def make(width: int = 4, seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, width), nn.LayerNorm(width), nn.Linear(width, 1))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)


def step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    model(INPUTS).pow(2).mean().backward()
    optimizer.step()


def trained(tmp_path: Path) -> tuple[nn.Module, torch.optim.Optimizer, EMA, Path]:
    model, optimizer = make()
    ema = EMA(model, 0.9)
    for _ in range(2):
        step(model, optimizer)
        ema.update(model)
    stats = PlaneStats(torch.tensor([0.5, -1.0]), torch.tensor([2.0, 3.0]), count=7)
    folder = save_checkpoint(tmp_path / "ckpt", modules={"model": model, "ema": ema}, optimizers={"opt": optimizer},
                             step=2, config={"preset": "tiny", "lr": 1e-2}, extra_tensors=stats.as_tensors(),
                             metrics={"loss": 0.25})
    return model, optimizer, ema, folder


def test_round_trip_restores_identical_state_and_the_next_step_is_identical(tmp_path: Path) -> None:
    model, optimizer, ema, folder = trained(tmp_path)
    checkpoint = load_checkpoint(folder)
    assert (checkpoint.step, checkpoint.config, checkpoint.metrics) == (2, {"preset": "tiny", "lr": 1e-2}, {"loss": 0.25})
    assert checkpoint.module_names == ["ema", "model"]
    assert torch.equal(PlaneStats.from_tensors(checkpoint.extra_tensors).std, torch.tensor([2.0, 3.0]))

    model2, optimizer2 = make(seed=1)
    ema2 = EMA(model2, 0.9)
    checkpoint.restore({"model": model2, "ema": ema2}, {"opt": optimizer2})
    for a, b in zip(list(model.state_dict().values()) + list(ema.state_dict().values()),
                    list(model2.state_dict().values()) + list(ema2.state_dict().values()), strict=True):
        assert torch.equal(a, b)
    assert optimizer2.param_groups[0]["betas"] == (0.8, 0.99)
    saved, restored = optimizer.state_dict(), optimizer2.state_dict()
    for index, state in saved["state"].items():
        for key, value in state.items():
            assert torch.equal(value, restored["state"][index][key]), (index, key)
    step(model, optimizer)
    step(model2, optimizer2)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_no_pickle_only_safetensors_and_json(tmp_path: Path) -> None:
    *_, folder = trained(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "model.safetensors", "optimizer.safetensors"]
    body = json.loads((folder / CHECKPOINT_JSON).read_text())
    assert body["format_version"] == 2 and body["step"] == 2


def test_mismatched_keys_and_shapes_raise_with_their_names(tmp_path: Path) -> None:
    *_, folder = trained(tmp_path)
    checkpoint = load_checkpoint(folder)
    wider, wider_opt = make(width=5)
    with pytest.raises(CheckpointMismatchError, match=r"model\.0\.weight: checkpoint \(4, 3\) vs model \(5, 3\)"):
        checkpoint.restore({"model": wider, "ema": EMA(wider, 0.9)}, {"opt": wider_opt})
    extra = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1), nn.Linear(1, 1))
    with pytest.raises(CheckpointMismatchError) as info:
        checkpoint.restore({"model": extra})
    message = str(info.value)
    assert "missing keys" in message and "model.3.weight" in message
    assert "unexpected keys" in message and "ema.*" in message and "optimizer opt" in message
    model, _ = make(seed=3)
    before = model[0].weight.clone()
    with pytest.raises(CheckpointMismatchError):
        checkpoint.restore({"model": model, "encoder": nn.Linear(1, 1)})
    assert torch.equal(model[0].weight, before), "a failed strict restore must not modify the model"
    checkpoint.restore({"model": model}, strict=False)
    assert not torch.equal(model[0].weight, before)


def test_missing_or_incomplete_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")
    *_, folder = trained(tmp_path)
    (folder / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match="optimizer.safetensors"):
        load_checkpoint(folder)
    (folder / CHECKPOINT_JSON).unlink()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="reserved"):
        save_checkpoint(tmp_path / "x", modules={"extra": nn.Linear(1, 1)}, optimizers={}, step=0, config={})


def test_upload_and_download_through_fsspec(tmp_path: Path) -> None:
    model, *_, folder = trained(tmp_path)
    uri = upload_checkpoint(folder, f"memory://rodin-ckpt-{tmp_path.name}/base/step-2")
    local = download_checkpoint(uri, tmp_path / "copy")
    assert torch.equal(load_checkpoint(local).module_state("model")["0.weight"], model[0].weight.detach())


def test_a_checkpoint_of_the_previous_format_is_refused_naming_the_command(tmp_path: Path) -> None:
    *_, folder = trained(tmp_path)
    body = json.loads((folder / CHECKPOINT_JSON).read_text())
    body["format_version"], body["config"] = 1, {"stage": "upsampler", "rodin": {"upsampler": {"model_channels": 8}}}
    (folder / CHECKPOINT_JSON).write_text(json.dumps(body))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(folder)
    message = str(info.value)
    assert "\n" not in message and str(folder) in message and "format_version 1, this rodin reads 2" in message
    assert "`rodin train upsampler --out <dataset root> --fresh`" in message
