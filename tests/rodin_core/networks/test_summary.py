"""Parameter and FLOP counts (torch.utils.flop_counter)."""

import torch
from torch import nn

from rodin_core.networks.blocks import AttentionBlock
from rodin_core.networks.summary import count_parameters, describe, forward_flops


def test_parameter_count_is_the_sum_of_numels() -> None:
    model = nn.Sequential(nn.Linear(3, 5), nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4))
    assert count_parameters(model) == (3 * 5 + 5) + (2 * 4 * 9 + 4) + (4 + 4)
    model[0].requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == (2 * 4 * 9 + 4) + (4 + 4)


def test_flops_of_a_linear_layer() -> None:
    assert forward_flops(nn.Linear(7, 5), (torch.randn(3, 7),)) == 2 * 7 * 5 * 3


def test_attention_is_counted_on_cpu() -> None:
    batch, channels, size = 2, 8, 4
    tokens = 3 * size * size
    linears = 2 * batch * tokens * channels * (3 * channels + channels)  # qkv and output projection
    attention = 2 * (2 * batch * tokens * tokens * channels)  # q k^T and softmax(.) v over all heads
    planes = torch.randn(batch, 3, channels, size, size)
    assert forward_flops(AttentionBlock(channels, 4), (planes,)) == linears + attention


def test_describe_names_model_size_and_inputs() -> None:
    line = describe(nn.Linear(1000, 1000), (torch.randn(2, 1000),))
    assert line == "Linear: 1.00 M parameters, 0.004 GFLOPs per forward on (2, 1000)"
