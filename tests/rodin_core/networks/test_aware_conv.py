"""3D-aware convolution (paper §3.2, Fig. 4b): which rows/columns of the other planes feed a pixel,
and agreement with the tri-plane point sampler's plane conventions."""

import pytest
import torch

from rodin_core.networks.aware_conv import PlaneConv2d, TriplaneAwareConv, aware_context, border_tap_ranges
from rodin_core.triplane.field import sample_triplane
from rodin_core.triplane.planes import PLANE_AXES, pixel_of, project_to_planes

S = 8  # plane size
C = 2  # channels


def _input_gradients(conv: torch.nn.Module, plane: int, row: int, col: int) -> torch.Tensor:
    """|d out[plane, :, row, col] / d input|, summed over batch and channels: (3, S, S)."""
    torch.manual_seed(0)
    planes = torch.randn(2, 3, C, S, S, requires_grad=True)
    conv(planes)[:, plane, :, row, col].sum().backward()
    return planes.grad.abs().sum(dim=(0, 2))


def _band(lo: int, hi: int, along: str) -> torch.Tensor:
    """(S, S) mask of the columns (along="columns") or rows lo..hi inclusive, every pixel of them."""
    mask = torch.zeros(S, S, dtype=torch.bool)
    if along == "columns":
        mask[:, max(lo, 0):hi + 1] = True
    else:
        mask[max(lo, 0):hi + 1, :] = True
    return mask


def test_context_channels_follow_the_plane_table() -> None:
    torch.manual_seed(1)
    planes = torch.randn(2, 3, C, S, S)
    xy, xz, yz = planes[:, 0], planes[:, 1], planes[:, 2]
    ctx = aware_context(planes)
    assert ctx.shape == (2, 3, 3 * C, S, S)
    expected = {
        # XY (row y, col x): XZ pooled over Z (its rows) at column x; YZ pooled over Z (its rows) at row y.
        0: (xy, xz.mean(dim=-2)[..., None, :], yz.mean(dim=-2)[..., :, None]),
        # XZ (row z, col x): XY pooled over Y (its rows) at column x; YZ pooled over Y (its columns) at row z.
        1: (xz, xy.mean(dim=-2)[..., None, :], yz.mean(dim=-1)[..., :, None]),
        # YZ (row z, col y): XY pooled over X (its columns) at column y; XZ pooled over X (its columns) at row z.
        2: (yz, xy.mean(dim=-1)[..., None, :], xz.mean(dim=-1)[..., :, None]),
    }
    for plane, (own, column_ctx, row_ctx) in expected.items():
        assert torch.equal(ctx[:, plane, :C], own)
        torch.testing.assert_close(ctx[:, plane, C:2 * C], column_ctx.expand(-1, -1, S, S))
        torch.testing.assert_close(ctx[:, plane, 2 * C:], row_ctx.expand(-1, -1, S, S))


# For an output pixel (row r, column c) of the key plane: for each other plane, which of its lines
# carry gradient, and which of the pixel's indices (r or c) is the shared world coordinate.
CORRESPONDENCE = {
    0: {1: ("columns", "c"), 2: ("columns", "r")},  # XY(y=r, x=c): XZ columns x; YZ columns y
    1: {0: ("columns", "c"), 2: ("rows", "r")},  # XZ(z=r, x=c): XY columns x; YZ rows z
    2: {0: ("rows", "c"), 1: ("rows", "r")},  # YZ(z=r, y=c): XY rows y; XZ rows z
}


@pytest.mark.parametrize("plane", [0, 1, 2])
@pytest.mark.parametrize(("row", "col"), [(2, 5), (0, 7)])
def test_gradient_reaches_only_lines_sharing_the_pixel_coordinate(plane: int, row: int, col: int) -> None:
    torch.manual_seed(2)
    grads = _input_gradients(TriplaneAwareConv(C, 3, kernel_size=3), plane, row, col)
    own = torch.zeros(S, S, dtype=torch.bool)
    own[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2] = True
    assert torch.equal(grads[plane] > 0, own)
    for other, (along, index) in CORRESPONDENCE[plane].items():
        i = row if index == "r" else col
        assert torch.equal(grads[other] > 0, _band(i - 1, i + 1, along)), (plane, other)


def test_plain_plane_conv_sees_only_its_own_plane() -> None:
    grads = _input_gradients(PlaneConv2d(C, 3, 3, padding=1), 0, 3, S - 1)
    assert grads[0, 2:5, S - 2:].gt(0).all()
    assert grads[1:].eq(0).all()


@pytest.mark.parametrize("point", [(0.3, -0.6, 0.8), (-0.9, 0.1, -0.2)])
def test_lines_carrying_gradient_are_the_other_projections_of_a_point(point: tuple[float, float, float]) -> None:
    """The pixel the sampler reads for a 3D point on plane p receives, through a 1x1 3D-aware conv,
    exactly the lines of the other planes through the point's own projections."""
    # Snap the point to pixel centres so that the bilinear sampler reads one pixel per plane.
    centre = [-1 + (pixel_of(c, S) + 0.5) * 2 / S for c in point]
    xyz = torch.tensor(centre)
    sampler_planes = torch.zeros(1, 3, 1, S, S, requires_grad=True)
    sample_triplane(sampler_planes, xyz.view(1, 1, 3)).sum().backward()
    read = sampler_planes.grad[0, :, 0] > 0  # (3, S, S): the pixel the sampler reads on each plane
    pixels = []
    for plane, (column_coord, row_coord) in enumerate(project_to_planes(xyz)):
        pixel = (pixel_of(float(row_coord), S), pixel_of(float(column_coord), S))
        assert read[plane].nonzero().tolist() == [list(pixel)]
        pixels.append(pixel)

    conv = TriplaneAwareConv(C, 3, kernel_size=1)
    for plane in range(3):
        grads = _input_gradients(conv, plane, *pixels[plane])
        for other in set(range(3)) - {plane}:
            (shared,) = set(PLANE_AXES[plane]) & set(PLANE_AXES[other])
            shared_index = pixel_of(centre[shared], S)
            rows, cols = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
            along_shared = cols if PLANE_AXES[other][0] == shared else rows
            assert torch.equal(grads[other] > 0, along_shared == shared_index), (plane, other)
            assert read[other][along_shared == shared_index].any()  # the line passes the point's pixel


def test_errors_name_the_shape() -> None:
    conv = TriplaneAwareConv(C, 3)
    with pytest.raises(ValueError, match=r"square planes \(H == W\), got H=4, W=6"):
        conv(torch.zeros(1, 3, C, 4, 6))
    with pytest.raises(ValueError, match=r"expects 2 channels per plane, got shape \(1, 3, 5, 4, 4\)"):
        conv(torch.zeros(1, 3, 5, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, 3, C, H, W\), got shape \(1, 2, 2, 4, 4\)"):
        conv(torch.zeros(1, 2, C, 4, 4))
    with pytest.raises(ValueError, match="odd kernel_size"):
        TriplaneAwareConv(C, 3, kernel_size=2)


@pytest.mark.parametrize(("channels", "out_channels", "size", "kernel_size"),
                         [(4, 5, 8, 3), (3, 6, 5, 5), (2, 3, 2, 3), (6, 4, 7, 1), (8, 8, 16, 3)])
def test_factorised_form_equals_the_convolution_of_the_context(channels, out_channels, size, kernel_size):
    torch.manual_seed(size * 10 + kernel_size)
    conv = TriplaneAwareConv(channels, out_channels, kernel_size)
    planes = torch.randn(2, 3, channels, size, size, requires_grad=True)
    reference = conv.conv(aware_context(planes))  # the 3C -> C_out convolution over the concatenated context
    factorised = conv(planes)
    assert factorised.shape == reference.shape == (2, 3, out_channels, size, size)
    assert (factorised - reference).abs().max() <= 2e-6 * reference.abs().max()
    # every border row and column included: the first and last rows differ from the interior ones
    weights = torch.randn_like(reference)
    grad_reference = torch.autograd.grad((reference * weights).sum(), [planes, conv.conv.weight])
    grad_factorised = torch.autograd.grad((factorised * weights).sum(), [planes, conv.conv.weight])
    for left, right in zip(grad_factorised, grad_reference, strict=True):
        assert (left - right).abs().max() <= 2e-5 * right.abs().max()


def test_border_tap_ranges_cover_the_taps_inside_the_plane():
    ranges, classes = border_tap_ranges(5, 3)
    assert [ranges[c] for c in classes.tolist()] == [(1, 3), (0, 3), (0, 3), (0, 3), (0, 2)]
    ranges, classes = border_tap_ranges(2, 5)  # a plane smaller than the kernel
    assert [ranges[c] for c in classes.tolist()] == [(2, 4), (1, 3)]
