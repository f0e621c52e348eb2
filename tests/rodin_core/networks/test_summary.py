"""Parameter and FLOP counts (torch.utils.flop_counter)."""

import torch
from torch import nn

from rodin_core.networks.blocks import AttentionBlock
from rodin_core.networks.summary import (
    count_parameters,
    describe,
    forward_flops,
    training_flops,
)


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


def test_training_flops_of_a_convolution_count_the_gradients_backward_computes() -> None:
    conv = nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)  # (B, C_in, H, W)
    forward = 2 * (3 * 9) * 5 * (8 * 8) * 2  # 2 * (C_in k^2) * C_out * pixels * batch
    assert training_flops(conv, (x,)) == (forward, forward)  # weight gradient only: x needs none
    assert training_flops(conv, (x.requires_grad_(),)) == (forward, 2 * forward)  # weight and input gradients
    assert conv.weight.grad is None


def test_attention_backward_is_counted_on_cpu() -> None:
    batch, channels, size = 2, 8, 4
    tokens = 3 * size * size
    linears = 2 * batch * tokens * channels * (3 * channels + channels)
    attention = 2 * (2 * batch * tokens * tokens * channels)
    planes = torch.randn(batch, 3, channels, size, size, requires_grad=True)
    forward, backward = training_flops(AttentionBlock(channels, 4), (planes,))
    assert forward == linears + attention
    assert backward == 2 * linears + 5 * attention // 2  # PyTorch's formula: 5 matmuls, the scores recomputed


def test_describe_names_model_size_and_inputs() -> None:
    line = describe(nn.Linear(1000, 1000), (torch.randn(2, 1000),))
    assert line == "Linear: 1.00 M parameters, 0.004 GFLOPs per forward on (2, 1000)"
