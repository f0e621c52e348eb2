"""Per-plane convolution and the 3D-aware convolution (paper §3.2, Fig. 4b).

Every network module works on the tri-plane layout (B, 3, C, H, W) of
:mod:`rodin_core.triplane.planes`; the U-Net rolls in its rolled input (B, C, H, 3W) once and rolls
its output out once. A convolution over the rolled tensor with zero padding at every plane seam is
the same as the same convolution applied to each plane on its own, which is what
:class:`PlaneConv2d` does (the planes folded into the batch): no feature crosses a seam.

The 3D-aware convolution adds the cross-plane path. A pixel of a plane is an axis-aligned line
through the volume; each other plane shares one world axis with it. That other plane is mean-pooled
along its non-shared axis into a vector over the shared axis, and the vector is broadcast back over
the first plane so that pixel (row r, column c) receives the pooled line whose shared coordinate
equals its own. With the axes of ``PLANE_AXES`` (plane p: columns = axis a, rows = axis b):

    output plane   own        column-aligned context          row-aligned context
    0  XY (y, x)   XY         XZ pooled over Z -> X, at x      YZ pooled over Z -> Y, at y
    1  XZ (z, x)   XZ         XY pooled over Y -> X, at x      YZ pooled over Y -> Z, at z
    2  YZ (z, y)   YZ         XY pooled over X -> Y, at y      XZ pooled over X -> Z, at z

The channels are concatenated in this fixed order, [own, column-aligned, row-aligned] (which is
also ascending order of the other plane's index), C -> 3C, and one per-plane padded convolution,
shared by the three planes as a convolution over the rolled tensor would be, maps 3C -> C_out:
Conv2D(y_uv ⊕ y_(.)u ⊕ y_v(.)) of the paper.

That convolution is computed in factorised form, with the same weights and the same output (to float
rounding). A convolution is linear in its input channels, so it splits into one convolution per
channel block. The own block is an ordinary per-plane convolution C -> C_out. A context block is
constant along one axis, so its 2D convolution reduces to a 1D convolution of the pooled line with
the kernel summed along that axis; with zero padding, an output row (or column) within
``kernel_size // 2`` of the border sees only part of the kernel, so those rows use the kernel summed
over the taps that land inside the plane (:func:`border_tap_ranges`). The 2C context channels then
cost two 1D convolutions instead of 2/3 of a 2D convolution over 3C channels: one for the column-aligned
lines and one for the row-aligned lines of all three planes, with the kernels of every tap range
stacked on the output channels; each range's result is broadcast over the rows (or columns) that use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rodin_core.triplane.planes import PLANE_AXES


def _check_planes(x: Tensor, who: str) -> None:
    if x.dim() != 5 or x.shape[1] != len(PLANE_AXES):
        raise ValueError(f"{who} expects planes (B, 3, C, H, W), got shape {tuple(x.shape)}")


class PlaneConv2d(nn.Conv2d):
    """A 2D convolution applied to each plane of (B, n, C, H, W) separately, with shared weights.

    Padding is per plane, so the output of plane p depends on plane p alone.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"PlaneConv2d expects planes (B, n, C, H, W), got shape {tuple(x.shape)}")
        batch, n_planes = x.shape[:2]
        out = super().forward(x.flatten(0, 1))  # (B*n, C_out, H', W')
        return out.unflatten(0, (batch, n_planes))  # (B, n, C_out, H', W')


def _shared_axis_layout(plane: int, other: int) -> tuple[int, bool]:
    """For context from ``other`` into ``plane``: (dim of ``other`` to pool, whether the shared
    axis is a column axis of ``plane``). Dims are -2 (rows) and -1 (columns) of a (..., H, W) map."""
    (shared,) = set(PLANE_AXES[plane]) & set(PLANE_AXES[other])
    pool_dim = -2 if PLANE_AXES[other][0] == shared else -1
    return pool_dim, PLANE_AXES[plane][0] == shared


def aware_context(planes: Tensor) -> Tensor:
    """Own features plus the pooled, broadcast lines of the other planes: (B, 3, C, H, W) -> (B, 3, 3C, H, W).

    Channel blocks of output plane p: [plane p, column-aligned context, row-aligned context]
    (see the module docstring). Planes must be square (H == W), since one plane's rows are
    another's columns.
    """
    _check_planes(planes, "aware_context")
    height, width = planes.shape[-2:]
    if height != width:
        raise ValueError(f"the 3D-aware convolution needs square planes (H == W), got H={height}, W={width}")
    outputs = []
    for plane in range(len(PLANE_AXES)):
        own = planes[:, plane]  # (B, C, S, S)
        context: dict[str, Tensor] = {}
        for other in range(len(PLANE_AXES)):
            if other == plane:
                continue
            pool_dim, is_column = _shared_axis_layout(plane, other)
            line = planes[:, other].mean(dim=pool_dim)  # (B, C, S): a vector over the shared axis
            line = line.unsqueeze(-2) if is_column else line.unsqueeze(-1)  # (B, C, 1, S) or (B, C, S, 1)
            context["column" if is_column else "row"] = line.expand_as(own)  # (B, C, S, S)
        outputs.append(torch.cat([own, context["column"], context["row"]], dim=1))  # (B, 3C, S, S)
    return torch.stack(outputs, dim=1)  # (B, 3, 3C, S, S)


def border_tap_ranges(size: int, kernel_size: int) -> tuple[list[tuple[int, int]], Tensor]:
    """Kernel taps that land inside a zero-padded axis of ``size`` pixels, per output index.

    Returns the distinct tap ranges ``[lo, hi)`` (the interior's first) and, for every output index
    (size,), the position of its range in that list.
    """
    pad = kernel_size // 2
    ranges: list[tuple[int, int]] = []
    classes = []
    for index in range(size):
        taps = (max(0, pad - index), min(kernel_size, size + pad - index))
        if taps not in ranges:
            ranges.append(taps)
        classes.append(ranges.index(taps))
    return ranges, torch.tensor(classes)


def _line_kernels(weight: Tensor, summed_dim: int, ranges: list[tuple[int, int]]) -> Tensor:
    """``weight`` (C_out, C, k, k) summed over each tap range of ``summed_dim`` (2: kernel rows, 3: kernel
    columns), the ranges stacked on the output channels: (R * C_out, C, k), range-major."""
    return torch.cat([weight.narrow(summed_dim, lo, hi - lo).sum(dim=summed_dim) for lo, hi in ranges])


def _context_sources() -> tuple[list[int], list[int]]:
    """For output planes 0, 1, 2: where their column-aligned and row-aligned pooled lines come from, as indices
    into the six pooled lines ``[plane 0, 1, 2 pooled over rows, plane 0, 1, 2 pooled over columns]``."""
    column, row = [0] * len(PLANE_AXES), [0] * len(PLANE_AXES)
    for plane in range(len(PLANE_AXES)):
        for other in range(len(PLANE_AXES)):
            if other != plane:
                pool_dim, is_column = _shared_axis_layout(plane, other)
                source = other + (0 if pool_dim == -2 else len(PLANE_AXES))
                (column if is_column else row)[plane] = source
    return column, row


_COLUMN_SOURCES, _ROW_SOURCES = _context_sources()


class TriplaneAwareConv(nn.Module):
    """3D-aware convolution (paper §3.2, Fig. 4b): :func:`aware_context` then a per-plane conv 3C -> C_out,
    computed in the factorised form of the module docstring (the weights are those of ``conv``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"TriplaneAwareConv needs an odd kernel_size >= 1, got {kernel_size}")
        self.in_channels = in_channels
        self.conv = PlaneConv2d(3 * in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, planes: Tensor) -> Tensor:
        """(B, 3, C_in, S, S) -> (B, 3, C_out, S, S)."""
        _check_planes(planes, "TriplaneAwareConv")
        if planes.shape[2] != self.in_channels:
            raise ValueError(
                f"TriplaneAwareConv expects {self.in_channels} channels per plane, got shape {tuple(planes.shape)}"
            )
        height, width = planes.shape[-2:]
        if height != width:
            raise ValueError(f"the 3D-aware convolution needs square planes (H == W), got H={height}, W={width}")
        channels, weight = self.in_channels, self.conv.weight  # (C_out, 3C, k, k)
        batch, n_planes, _, size, _ = planes.shape
        out_channels, pad = weight.shape[0], self.conv.padding[0]
        own_weight = weight[:, :channels].contiguous()  # a contiguous copy: the convolution reorders a slice slowly
        out = F.conv2d(planes.flatten(0, 1), own_weight, self.conv.bias, padding=pad)  # (B*3, C_out, S, S)
        out = out.unflatten(0, (batch, n_planes))  # (B, 3, C_out, S, S)
        ranges, classes = border_tap_ranges(size, weight.shape[-1])
        pooled = torch.cat([planes.mean(dim=-2), planes.mean(dim=-1)], dim=1)  # (B, 6, C, S): over rows, columns
        for sources, block, summed_dim, along in ((_COLUMN_SOURCES, 1, 2, -2), (_ROW_SOURCES, 2, 3, -1)):
            lines = pooled[:, sources].flatten(0, 1)  # (B*3, C, S): the pooled line each output plane reads
            kernels = _line_kernels(weight[:, block * channels:(block + 1) * channels], summed_dim, ranges)
            conv = F.conv1d(lines, kernels, padding=pad).unflatten(0, (batch, n_planes))  # (B, 3, R*C_out, S)
            conv = conv.unflatten(2, (len(ranges), out_channels))  # (B, 3, R, C_out, S)
            out = out + _broadcast_rows(conv, classes, along)
        return out  # (B, 3, C_out, S, S)


def _broadcast_rows(lines: Tensor, classes: Tensor, along: int) -> Tensor:
    """Lines (B, 3, R, C_out, S), one per tap range, spread over the plane: (B, 3, C_out, S, S) whose index ``i``
    along ``along`` (-2: rows, -1: columns) holds the line of range ``classes[i]``. Runs of equal ranges (the
    interior, then each border index) are broadcast views joined once."""
    runs: list[tuple[int, int]] = []  # (range, length) along the axis
    for cls in classes.tolist():
        if runs and runs[-1][0] == cls:
            runs[-1] = (cls, runs[-1][1] + 1)
        else:
            runs.append((cls, 1))
    size = lines.shape[-1]
    pieces = []
    for cls, length in runs:
        line = lines[:, :, cls]  # (B, 3, C_out, S)
        if along == -2:  # constant along rows: the line runs along the columns
            pieces.append(line.unsqueeze(-2).expand(*line.shape[:-1], length, size))
        else:
            pieces.append(line.unsqueeze(-1).expand(*line.shape[:-1], size, length))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=along)
