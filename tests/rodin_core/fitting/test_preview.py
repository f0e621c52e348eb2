"""compare_views pairs each view's ground truth with the fitted render and scores it."""

import numpy as np
import torch

from rodin_core.cameras import make_rig
from rodin_core.fitting.preview import compare_views
from rodin_core.rendering.renderer import RenderSettings, render_image
from rodin_core.triplane.field import DecoderConfig, TriplaneDecoder
from rodin_core.triplane.subject import SubjectViews


def _subject_rendered_from(planes: torch.Tensor, decoder: TriplaneDecoder, settings: RenderSettings) -> SubjectViews:
    rig = make_rig(3, 12, 40.0, 3.0, -20, 30)
    images = []
    for c2w in rig.c2w:
        rgb, _ = render_image(planes.unsqueeze(0), decoder, torch.tensor(c2w, dtype=torch.float32),
                              torch.tensor(rig.intrinsics, dtype=torch.float32), 12, 12, settings, 1.0)
        images.append(torch.cat([rgb.clamp(0, 1), torch.ones(12, 12, 1)], dim=-1))  # opaque RGBA (H, W, 4)
    return SubjectViews.from_arrays(0, torch.stack(images), rig.c2w, np.repeat(rig.intrinsics[None], 3, 0))


def test_fitted_planes_match_their_own_renders_and_others_do_not():
    torch.manual_seed(0)
    decoder = TriplaneDecoder(DecoderConfig(channels=4, hidden=16)).eval()
    settings = RenderSettings(coarse_samples=8, fine_samples=8, perturb=False)
    planes = torch.randn(3, 4, 8, 8) * 3
    subject = _subject_rendered_from(planes, decoder, settings)
    same = compare_views(subject, planes, decoder, [1, 2], settings, 1.0)
    assert [c.view for c in same] == [1, 2]
    assert all(c.truth.shape == c.fitted.shape == (12, 12, 3) and c.fitted.dtype == np.uint8 for c in same)
    assert all(np.abs(c.truth.astype(int) - c.fitted.astype(int)).max() <= 1 and c.psnr > 40 for c in same)
    other = compare_views(subject, torch.randn(3, 4, 8, 8) * 3, decoder, [1, 2], settings, 1.0)
    assert all(o.psnr < s.psnr - 10 for o, s in zip(other, same))
