"""Torch camera rays agree with rodin_core.cameras.pixel_rays; slab intersection with the tri-plane cube."""

import numpy as np
import pytest
import torch

from rodin_core import cameras
from rodin_core.rendering.rays import camera_rays, ray_box_intersect, rays_for_pixels


def _rig():
    rig = cameras.make_rig(5, 12, 35.0, 3.0, -20.0, 40.0)
    return rig, torch.tensor(rig.c2w, dtype=torch.float32), torch.tensor(rig.intrinsics, dtype=torch.float32)


def test_camera_rays_match_numpy_pixel_rays():
    rig, c2w, K = _rig()
    height, width = 10, 12
    origins, dirs = camera_rays(c2w, K.expand(5, 3, 3), height, width)
    assert origins.shape == dirs.shape == (5, height, width, 3) and dirs.dtype == torch.float32
    for v in range(5):
        ref_o, ref_d = cameras.pixel_rays(rig.c2w[v], rig.intrinsics, width, height)
        assert np.allclose(origins[v].numpy(), ref_o, atol=1e-5)
        assert np.allclose(dirs[v].numpy(), ref_d, atol=1e-5)


def test_rays_for_pixels_match_full_images():
    _, c2w, K = _rig()
    origins, dirs = camera_rays(c2w, K.expand(5, 3, 3), 12, 12)
    views, rows, cols = torch.tensor([0, 3, 4, 4]), torch.tensor([0, 5, 11, 2]), torch.tensor([7, 0, 11, 9])
    o, d = rays_for_pixels(c2w[views], K.expand(4, 3, 3), rows, cols)
    assert torch.allclose(o, origins[views, rows, cols], atol=1e-6)
    assert torch.allclose(d, dirs[views, rows, cols], atol=1e-6)


def test_frontal_centre_ray_hits_the_origin():
    _, c2w, K = _rig()
    # fractional pixel 5.5 + 0.5 = 6: the principal point of a 12 x 12 image
    o, d = rays_for_pixels(c2w[:1], K[None], torch.tensor([5.5]), torch.tensor([5.5]))
    assert torch.allclose(d[0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)  # view 0 looks along +Y
    assert torch.allclose(o[0] + 3.0 * d[0], torch.zeros(3), atol=1e-5)


def test_ray_through_centre_along_x():
    near, far, hit = ray_box_intersect(torch.tensor([[-3.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]))
    assert hit.tolist() == [True]
    assert near.item() == pytest.approx(2.0) and far.item() == pytest.approx(4.0)


def test_misses_and_inside_origins():
    origins = torch.tensor([[-3.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.2, 0.1, 0.0], [-3.0, 0.5, 0.5]])
    dirs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    near, far, hit = ray_box_intersect(origins, dirs, bound=1.0)
    assert hit.tolist() == [False, False, True, True]  # passes above; box behind; starts inside; off-centre
    assert near[:2].tolist() == [0.0, 0.0] and far[:2].tolist() == [0.0, 0.0]
    assert near[2].item() == 0.0 and far[2].item() == pytest.approx(1.0)
    assert (near[3].item(), far[3].item()) == pytest.approx((2.0, 4.0))
    near, far, hit = ray_box_intersect(origins[:1] * 2, dirs[:1], bound=5.0)
    assert hit.item() and (near.item(), far.item()) == pytest.approx((1.0, 11.0))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="c2w must be"):
        camera_rays(torch.eye(4), torch.eye(3), 4, 4)
    with pytest.raises(ValueError, match="bound must be positive, got -1"):
        ray_box_intersect(torch.zeros(1, 3), torch.ones(1, 3), bound=-1.0)
