"""Size and cost of a network: parameters, forward and training FLOPs (for the model cards of §4.1 / appendix B.1).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products as 2 * m * n * k,
convolutions likewise, their backward as the products it computes; element-wise work such as
normalisation, activations and optimiser updates is not counted). PyTorch registers no formula for
the CPU kernels of ``scaled_dot_product_attention`` (forward and backward); they are added here with
PyTorch's own attention formulas so that attention is counted on CPU as on GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import (
    FlopCounterMode,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)


def _cpu_attention_flops(query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int],
                         *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of ``aten._scaled_dot_product_flash_attention_for_cpu`` (the two attention matmuls)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward_flops(grad_out_shape: Sequence[int], query_shape: Sequence[int],
                                  key_shape: Sequence[int], value_shape: Sequence[int], *args: Any,
                                  out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of ``aten._scaled_dot_product_flash_attention_for_cpu_backward`` (PyTorch's attention backward formula)."""
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts the CPU attention kernels, forward and backward."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
               torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward_flops}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def forward_flops(model: nn.Module, example_inputs: Sequence[Any]) -> int:
    """FLOPs of one forward pass ``model(*example_inputs)``, run without gradients."""
    with flop_counter() as counter, torch.no_grad():
        model(*example_inputs)
    return counter.get_total_flops()


def training_flops(model: nn.Module, example_inputs: Sequence[Any],
                   loss: Callable[[Any], Tensor] = lambda output: output.float().square().mean()) -> tuple[int, int]:
    """``(forward, backward)`` FLOPs of one training pass: ``loss(model(*example_inputs)).backward()``.

    The backward pass computes the gradients of the parameters and of the inputs that require them
    (an input that does not, such as a noisy image, costs no input gradient in its first layer).
    The parameters' ``.grad`` are left set to None.
    """
    with flop_counter() as counter:
        output = model(*example_inputs)
        forward = counter.get_total_flops()
        loss(output).backward()
        total = counter.get_total_flops()
    model.zero_grad(set_to_none=True)
    return forward, total - forward


def describe(model: nn.Module, example_inputs: Sequence[Any]) -> str:
    """One line: class name, parameters, and forward FLOPs on ``example_inputs`` (tensor shapes named)."""
    params = count_parameters(model)
    flops = forward_flops(model, example_inputs)
    shapes = ", ".join(str(tuple(x.shape)) for x in example_inputs if isinstance(x, torch.Tensor))
    return f"{type(model).__name__}: {params / 1e6:.2f} M parameters, {flops / 1e9:.3f} GFLOPs per forward on {shapes}"
