"""EMA of the weights (appendix B.1): the update rule on a scalar, keys, copy_to."""

import pytest
import torch
from torch import nn

from rodin_core.training.ema import EMA


def scalar_model(value: float) -> nn.Module:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def test_update_follows_the_exponential_moving_average() -> None:
    model = scalar_model(0.0)
    ema = EMA(model, decay=0.9)
    expected = 0.0
    for value in (1.0, 2.0, 3.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
        expected = 0.9 * expected + 0.1 * value
        assert ema.module.weight.item() == pytest.approx(expected)
    assert not ema.module.weight.requires_grad


def test_state_dict_keys_equal_the_models_and_copy_to_loads_them() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    ema = EMA(model, decay=0.5)
    assert list(ema.state_dict()) == list(model.state_dict())
    model(torch.randn(4, 2))  # changes the BatchNorm running statistics: buffers are copied, not averaged
    ema.update(model)
    torch.testing.assert_close(ema.module[1].running_mean, model[1].running_mean)
    other = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    ema.copy_to(other)
    torch.testing.assert_close(other[0].weight, ema.module[0].weight)
    restored = EMA(other, decay=0.5)
    restored.load_state_dict(ema.state_dict())
    torch.testing.assert_close(restored.module[0].bias, ema.module[0].bias)


def test_shadow_stays_in_eval_mode_and_rejects_other_models() -> None:
    ema = EMA(nn.Sequential(nn.Dropout(0.5)), decay=0.9).train()
    assert not ema.module.training
    with pytest.raises(ValueError, match="different parameters"):
        EMA(scalar_model(1.0), 0.9).update(nn.Linear(2, 1))
    with pytest.raises(ValueError, match="decay"):
        EMA(scalar_model(1.0), 1.5)
