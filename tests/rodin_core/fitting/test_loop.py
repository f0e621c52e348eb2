"""The tri-plane fitting loop: phase A (shared decoder), phase B (frozen decoder), failures (paper §3.1, B.2)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from rodin_core.cameras import make_rig
from rodin_core.config import FitConfig, TriplaneConfig
from rodin_core.datasets.triplane_records import FitResult
from rodin_core.fitting import loop as fitting
from rodin_core.fitting.loop import (
    evaluate_psnr,
    fit_shared_decoder,
    fit_subject,
    init_planes,
    mean_planes,
    occupancy_grid,
    subject_generator,
)
from rodin_core.rendering.rays import camera_rays
from rodin_core.rendering.renderer import RenderSettings, render_image
from rodin_core.triplane.field import DecoderConfig, TriplaneDecoder, freeze_decoder
from rodin_core.triplane.subject import SubjectViews, split_views

SIZE, VIEWS = 24, 8
TRI = TriplaneConfig(channels=4, resolution=16, rescale_min=8,
                     decoder=DecoderConfig(channels=4, hidden=32, layers=3, feature_frequencies=2,
                                           direction_frequencies=1))


def _fit_cfg(**changes: object) -> FitConfig:
    base: dict[str, object] = {
        "steps": 200, "target_psnr": 60.0, "holdout_views": 2, "rays_per_step": 256, "coarse_samples": 12,
        "fine_samples": 12, "lr_planes": 0.3, "rescale_prob": 0.0, "eval_every": 50, "sparsity_weight": 0.0,
        "tv_weight": 0.0, "distortion_weight": 0.0, "background": 1.0, "seed": 0,
    }
    cfg = FitConfig(**(base | changes))
    cfg.validate()
    return cfg


def _rig() -> tuple[torch.Tensor, torch.Tensor]:
    rig = make_rig(VIEWS, SIZE, 30.0, 4.0, -25.0, 50.0)
    return torch.tensor(rig.c2w, dtype=torch.float32), torch.tensor(rig.intrinsics, dtype=torch.float32).expand(VIEWS, 3, 3)


def _random_decoder() -> TriplaneDecoder:
    torch.manual_seed(0)
    decoder = TriplaneDecoder(TRI.decoder)
    with torch.no_grad():
        decoder.density_and_features.bias[0] = 0.0  # a visible (not nearly empty) ground-truth field
    return freeze_decoder(decoder)


def _subject_from_field(subject_id: int, planes: torch.Tensor, decoder: TriplaneDecoder) -> SubjectViews:
    """Straight-alpha RGBA renders of a known tri-plane (3, C, H, W), rendered finely."""
    c2w, ks = _rig()
    settings = RenderSettings(coarse_samples=64, fine_samples=64)
    images = []
    for view in range(VIEWS):
        rgb, alpha = render_image(planes[None], decoder, c2w[view], ks[view], SIZE, SIZE, settings, 1.0)
        a = alpha[..., None]  # (H, W, 1)
        straight = torch.where(a > 1e-4, (rgb - (1.0 - a)) / a.clamp(min=1e-4), torch.zeros_like(rgb))
        images.append(torch.cat([straight.clamp(0.0, 1.0), a], dim=-1))  # (H, W, 4)
    return SubjectViews.from_arrays(subject_id, torch.stack(images), c2w, ks)


def _sphere_subject(subject_id: int, radius: float, tint: tuple[float, float, float]) -> SubjectViews:
    """A tinted, normal-shaded opaque sphere at the origin, 2x2 supersampled: an analytic subject."""
    c2w, ks = _rig()
    big = ks.clone()
    big[:, :2] *= 2.0
    origins, dirs = camera_rays(c2w, big, 2 * SIZE, 2 * SIZE)  # (V, 2H, 2W, 3) each
    b = (origins * dirs).sum(-1)
    disc = b**2 - ((origins**2).sum(-1) - radius**2)
    hit = disc > 0
    t = -b - disc.clamp(min=0).sqrt()
    normal = F.normalize(origins + t[..., None] * dirs, dim=-1)
    rgb = (0.35 + 0.65 * (0.5 + 0.5 * normal)) * torch.tensor(tint)
    rgba = torch.cat([rgb * hit[..., None], hit[..., None].float()], dim=-1)  # (V, 2H, 2W, 4)
    rgba = F.avg_pool2d(rgba.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)  # (V, H, W, 4) premultiplied
    alpha = rgba[..., 3:]
    straight = torch.where(alpha > 0, rgba[..., :3] / alpha.clamp(min=1e-6), torch.zeros_like(alpha))
    return SubjectViews.from_arrays(subject_id, torch.cat([straight.clamp(0, 1), alpha], dim=-1), c2w, ks)


def test_fitting_a_known_triplane_recovers_its_renders() -> None:
    decoder = _random_decoder()
    truth = 4.0 * F.interpolate(torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(1)), size=(16, 16),
                                mode="bilinear", align_corners=False)  # (3, C, 16, 16) smooth field
    subject = _subject_from_field(11, truth, decoder)
    seen: list[tuple[int, float | None]] = []
    result = fit_subject(subject, decoder, TRI, _fit_cfg(target_psnr=31.0),
                         progress=lambda step, loss, p: seen.append((step, p)))
    assert result.error is None and result.subject_id == 11
    start = result.psnr_curve[0][1]
    assert result.psnr_holdout >= 31.0 > start + 5.0
    assert result.steps < 200 and result.steps % 50 == 0  # stopped early, at an evaluation
    assert [s for s, _ in seen] == list(range(1, result.steps + 1))
    assert seen[-1][1] == pytest.approx(result.psnr_holdout)
    assert result.planes.shape == (3, 4, 16, 16) and result.planes.dtype == torch.float32
    assert not result.planes.requires_grad
    held = split_views(VIEWS, 2)[1]
    assert evaluate_psnr(result.planes, decoder, subject, held, TRI, _fit_cfg()) == pytest.approx(result.psnr_holdout)


def test_fit_subject_is_deterministic_per_seed_and_subject() -> None:
    decoder = _random_decoder()
    subject = _sphere_subject(5, 0.7, (0.9, 0.5, 0.3))
    cfg = _fit_cfg(steps=6, eval_every=3, rescale_prob=0.5, sparsity_weight=1e-4, tv_weight=1e-4,
                   distortion_weight=1e-3)
    a, b = fit_subject(subject, decoder, TRI, cfg), fit_subject(subject, decoder, TRI, cfg)
    assert torch.equal(a.planes, b.planes) and a.psnr_curve == b.psnr_curve
    c = fit_subject(subject, decoder, TRI, _fit_cfg(steps=6, eval_every=3, seed=1))
    assert not torch.equal(a.planes, c.planes)
    assert not torch.equal(init_planes(TRI, subject_generator(0, 5)), init_planes(TRI, subject_generator(0, 6)))


def test_numerical_failures_end_in_an_error_result_not_an_exception() -> None:
    decoder = _random_decoder()
    good = _sphere_subject(1, 0.7, (0.9, 0.5, 0.3))
    cfg = _fit_cfg(steps=4, eval_every=2)
    images = good.images.clone()
    images[2, 3, 4, 0] = math.nan
    bad_data = SubjectViews(2, images, good.c2w, good.intrinsics)
    result = fit_subject(bad_data, decoder, TRI, cfg)
    assert result.error is not None and "bad data" in result.error and "NaN" in result.error
    assert result.subject_id == 2 and result.steps == 0

    def poison(step: int, loss: float, psnr: float | None) -> None:
        with torch.no_grad():
            poisoned.colour.bias.fill_(math.nan)

    poisoned = _random_decoder()
    result = fit_subject(good, poisoned, TRI, cfg, progress=poison)
    assert result.error is not None and "non-finite loss" in result.error and "step 2" in result.error
    assert torch.isfinite(result.planes).all()  # the planes of the last good evaluation

    nan_decoder = _random_decoder()
    with torch.no_grad():
        nan_decoder.density_and_features.weight.fill_(math.nan)
    result = fit_subject(good, nan_decoder, TRI, cfg)
    assert result.error is not None and "not finite" in result.error

    ok = fit_subject(good, decoder, TRI, cfg)
    assert ok.error is None and math.isfinite(ok.psnr_holdout) and ok.steps == 4


def test_fit_subject_needs_a_frozen_decoder() -> None:
    decoder = TriplaneDecoder(TRI.decoder)
    with pytest.raises(ValueError, match="freeze_decoder"):
        fit_subject(_sphere_subject(0, 0.6, (1.0, 1.0, 1.0)), decoder, TRI, _fit_cfg())


def test_shared_decoder_lets_a_new_subject_fit_well() -> None:
    shared = [_sphere_subject(0, 0.6, (1.0, 0.4, 0.3)), _sphere_subject(1, 0.8, (0.3, 0.6, 1.0))]
    cfg = _fit_cfg(shared_steps=300, shared_batch=1, lr_decoder=0.005, rescale_prob=0.3, eval_every=100)
    decoder, results = fit_shared_decoder(shared, TRI, cfg)
    assert not decoder.training and not any(p.requires_grad for p in decoder.parameters())
    assert [r.subject_id for r in results] == [0, 1] and all(isinstance(r, FitResult) for r in results)
    assert all(r.error is None and r.steps == 150 and r.psnr_train > 22.0 for r in results)
    assert all(r.psnr_holdout > 18.0 for r in results)
    new = _sphere_subject(2, 0.7, (0.5, 1.0, 0.5))
    mean = mean_planes(results)
    torch.testing.assert_close(mean, (results[0].planes + results[1].planes) / 2)
    result = fit_subject(new, decoder, TRI, _fit_cfg(steps=100, eval_every=50), init=mean)
    assert result.error is None and result.psnr_holdout > 17.0
    assert result.psnr_holdout > result.psnr_curve[0][1] + 2.0


def test_a_plateau_below_the_target_stops_after_patience_evaluations() -> None:
    decoder = _random_decoder()
    subject = _sphere_subject(3, 0.7, (0.9, 0.5, 0.3))
    frozen = _fit_cfg(steps=30, eval_every=3, lr_planes=0.0, target_psnr=99.0)  # the planes cannot move
    assert fit_subject(subject, decoder, TRI, frozen).steps == 30  # patience 0: no plateau stop
    stopped = fit_subject(subject, decoder, TRI, dataclasses.replace(frozen, patience=2))
    assert stopped.steps == 6 and [s for s, _ in stopped.psnr_curve] == [0, 3, 6]
    assert stopped.error is None and stopped.psnr_holdout == pytest.approx(stopped.psnr_curve[0][1], abs=1e-4)
    learning = _fit_cfg(steps=6, eval_every=3, target_psnr=99.0, patience=1)
    curve = fit_subject(subject, decoder, TRI, learning).psnr_curve
    assert [s for s, _ in curve] == [0, 3, 6] and curve[1][1] > curve[0][1] + 0.05  # progress: no stop at 3
    demanding = fit_subject(subject, decoder, TRI, dataclasses.replace(learning, min_improvement=100.0))
    assert demanding.steps == 3 and demanding.psnr_curve == curve[:2]  # the same gain no longer counts


def test_phase_a_batches_of_subjects_move_every_member_each_step_on_a_split_ray_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    shared = [_sphere_subject(s, 0.5 + 0.1 * s, (1.0, 0.4, 0.3)) for s in range(3)]
    cfg = _fit_cfg(shared_steps=4, eval_every=100, occupancy_resolution=0)  # 256 rays per step
    drawn: list[int] = []
    sample = fitting._RayPool.sample
    monkeypatch.setattr(fitting._RayPool, "sample", lambda pool, n, g: drawn.append(n) or sample(pool, n, g))
    # groups of 3 subjects over 4 steps: batch 1 -> [0] [1] [2] [0]; 2 -> [0, 1] [2] [0, 1] [2]; 3 and 5 -> all
    for batch, steps, rays in ((1, [2, 1, 1], [256] * 4), (2, [2, 2, 2], [128, 128, 256, 128, 128, 256]),
                               (3, [4, 4, 4], [85] * 12), (5, [4, 4, 4], [85] * 12)):
        drawn.clear()
        _, results = fit_shared_decoder(shared, TRI, dataclasses.replace(cfg, shared_batch=batch))
        assert [r.steps for r in results] == steps and drawn == rays, batch
        assert all(r.error is None and math.isfinite(r.psnr_train) for r in results)


def test_occupancy_threshold_bounds_the_opacity_a_skipped_cell_hides() -> None:
    cfg = _fit_cfg(occupancy_resolution=32, occupancy_opacity=0.01)
    grid = occupancy_grid(cfg)
    assert 1.0 - math.exp(-grid.sigma_min * 2.0 / 32) == pytest.approx(0.01)  # one cell of side 2/32 crossed
    fog = 0.9 * grid.sigma_min

    def density(points: torch.Tensor) -> torch.Tensor:  # a dense ball of radius 0.5 in a faint fog
        return torch.where(points.norm(dim=-1) < 0.5, torch.tensor(1.0), torch.tensor(fog))

    occupied = grid.update(density)
    assert 0.05 < occupied < 0.15  # the ball and its dilated shell: the fog below the threshold is skipped
    assert not grid.query(torch.tensor([[0.9, 0.0, 0.0], [0.0, -0.8, 0.3]])).any()
    assert grid.query(torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.2, 0.0]])).all()
    strict = occupancy_grid(dataclasses.replace(cfg, occupancy_opacity=0.001))  # threshold below the fog
    assert strict.update(density) == 1.0
