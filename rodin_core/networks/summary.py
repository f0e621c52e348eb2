"""Size and cost of a network: parameters and forward FLOPs (for the model cards of §4.1 / appendix B.1).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products as 2 * m * n * k,
convolutions likewise; element-wise work such as normalisation and activations is not counted).
PyTorch registers no formula for the CPU kernel of ``scaled_dot_product_attention``; it is added
here with PyTorch's own attention formula so that attention is counted on CPU as on GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_attention_flops(query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int],
                         *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of ``aten._scaled_dot_product_flash_attention_for_cpu`` (the two attention matmuls)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def forward_flops(model: nn.Module, example_inputs: Sequence[Any]) -> int:
    """FLOPs of one forward pass ``model(*example_inputs)``, run without gradients."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
        model(*example_inputs)
    return counter.get_total_flops()


def describe(model: nn.Module, example_inputs: Sequence[Any]) -> str:
    """One line: class name, parameters, and forward FLOPs on ``example_inputs`` (tensor shapes named)."""
    params = count_parameters(model)
    flops = forward_flops(model, example_inputs)
    shapes = ", ".join(str(tuple(x.shape)) for x in example_inputs if isinstance(x, torch.Tensor))
    return f"{type(model).__name__}: {params / 1e6:.2f} M parameters, {flops / 1e9:.3f} GFLOPs per forward on {shapes}"
