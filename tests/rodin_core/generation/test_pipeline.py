"""The generation pipeline (§3.2 Eq. 3, §3.3, §4.5, Fig. 6, Fig. 15, B.4) on tiny random stages: shapes,
determinism in the seed, options, x̂0 hooks, sampling from the prior, inversion and interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rodin_core.cameras import intrinsics_from_fov, look_at
from rodin_core.generation import (
    Avatar,
    GenerationError,
    GenerationPipeline,
    SampleOptions,
    load_avatar,
    save_avatar,
)
from rodin_core.generation.sampling import sample_base

from .conftest import Stages


def latent(seed: int) -> torch.Tensor:
    return torch.randn(8, generator=torch.Generator().manual_seed(seed))  # (D,)


def portrait(seed: int, size: tuple[int, int] = (20, 12)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)  # (H, W, 3)


def test_generate_gives_finite_full_resolution_planes(pipeline: GenerationPipeline):
    planes = pipeline.generate(latent(0), seed=0)
    assert planes.shape == (3, 4, 16, 16) and planes.dtype == torch.float32
    assert torch.isfinite(planes).all()
    assert torch.equal(pipeline.generate(latent(0)[None], seed=0), planes)  # (1, D) is the same latent


def test_same_seed_same_planes_and_other_seed_other_planes(pipeline: GenerationPipeline):
    first = pipeline.generate(latent(0), seed=3)
    assert torch.equal(first, pipeline.generate(latent(0), seed=3))
    assert (first - pipeline.generate(latent(0), seed=4)).abs().max() > 1e-3
    assert (first - pipeline.generate(latent(1), seed=3)).abs().max() > 1e-5  # z conditions the base model


def test_options_change_the_sample(pipeline: GenerationPipeline):
    z = latent(0)
    default = pipeline.generate(z, seed=0)
    trained = pipeline.cfg.base.guidance_scale
    assert torch.equal(default, pipeline.generate(z, seed=0, options=SampleOptions(guidance_scale=trained)))
    for options in (SampleOptions(guidance_scale=trained + 2.0), SampleOptions(sampler="ddim"), SampleOptions(steps=5)):
        other = pipeline.generate(z, seed=0, options=options)
        assert torch.isfinite(other).all() and not torch.equal(other, default), options
    ddim = SampleOptions(sampler="ddim", steps=4)
    assert torch.equal(pipeline.generate(z, seed=0, options=ddim), pipeline.generate(z, seed=0, options=ddim))


def test_base_stage_is_the_guided_base_sampler(pipeline: GenerationPipeline):
    """The base x̂0 of the last DDIM step is the base sample itself (ᾱ = 1 there), which must equal sample_base."""
    seen: dict[str, torch.Tensor] = {}
    options = SampleOptions(sampler="ddim", guidance_scale=2.0)
    pipeline.generate(latent(2), seed=9, options=options, on_x0=lambda stage, step, x0: seen.__setitem__(stage, x0))
    low = sample_base(pipeline.base, pipeline.cfg, pipeline.stats, latent(2)[None], guidance_scale=2.0,
                      generator=torch.Generator().manual_seed(9), sampler="ddim")  # (1, 3, C, h, h)
    torch.testing.assert_close(seen["base"], low[0])


def test_on_x0_sees_every_reverse_step_of_both_stages(pipeline: GenerationPipeline):
    calls: list[tuple[str, int, tuple[int, ...]]] = []
    last: dict[str, torch.Tensor] = {}

    def on_x0(stage: str, step: int, x0: torch.Tensor) -> None:
        calls.append((stage, step, tuple(x0.shape)))
        last[stage] = x0.clone()

    planes = pipeline.generate(latent(0), seed=1, options=SampleOptions(sampler="ddim"), on_x0=on_x0)
    assert calls == [("base", s, (3, 4, 8, 8)) for s in range(3)] + [("upsampler", s, (3, 4, 16, 16)) for s in range(3)]
    torch.testing.assert_close(last["upsampler"], planes)  # DDIM's last step returns x̂0 in raw units
    calls.clear()
    pipeline.generate(latent(0), seed=1, options=SampleOptions(steps=5), on_x0=on_x0)
    assert [c[:2] for c in calls] == [("base", s) for s in range(5)] + [("upsampler", s) for s in range(5)]


def test_bad_latents_options_and_seeds_are_refused(pipeline: GenerationPipeline):
    with pytest.raises(GenerationError, match=r"z must be a latent \(8,\) or \(1, 8\), got \(2, 8\)"):
        pipeline.generate(torch.zeros(2, 8), seed=0)
    with pytest.raises(GenerationError, match="NaN or inf"):
        pipeline.generate(torch.full((8,), float("nan")), seed=0)
    with pytest.raises(GenerationError, match=r"seed must be an integer in \[0, 2\*\*63 - 1\], got -1"):
        pipeline.generate(torch.zeros(8), seed=-1)
    with pytest.raises(GenerationError, match="steps=41 is more than the 40 diffusion steps the base stage was trained"):
        pipeline.generate(torch.zeros(8), seed=0, options=SampleOptions(steps=41))
    with pytest.raises(GenerationError, match=r"unknown sampler 'euler'; choose one of \('ancestral', 'ddim'\)"):
        SampleOptions(sampler="euler")
    with pytest.raises(GenerationError, match="steps must be an integer >= 2"):
        SampleOptions(steps=1)
    with pytest.raises(GenerationError, match="guidance_scale must be a finite number >= 0"):
        SampleOptions(guidance_scale=-1.0)


def test_respacing_follows_sampler_and_steps():
    assert SampleOptions().respacing("50") == "50"
    assert SampleOptions(sampler="ddim").respacing("ddim25") == "ddim25"
    # Without a sampler, new steps keep the stage's own rule: DDIM for a "ddimN" config, ancestral otherwise.
    assert SampleOptions(steps=10).respacing("ddim25") == "ddim10"
    assert SampleOptions(steps=10).respacing("50") == "10"
    assert SampleOptions(sampler="ancestral", steps=10).respacing("ddim25") == "10"
    assert SampleOptions(sampler="ddim", steps=10).respacing("50") == "ddim10"


def test_sample_latents_draws_row_i_with_seed_plus_i(pipeline: GenerationPipeline):
    latents = pipeline.sample_latents(3, seed=10)
    assert latents.shape == (3, 8) and torch.isfinite(latents).all()
    assert torch.equal(latents[2], pipeline.sample_latents(1, seed=12)[0])
    assert not torch.equal(latents[0], latents[1])
    with pytest.raises(GenerationError, match="n must be a positive integer, got 0"):
        pipeline.sample_latents(0, seed=0)


def test_sample_records_how_each_avatar_was_made(pipeline: GenerationPipeline):
    options = SampleOptions(guidance_scale=1.5, sampler="ddim", steps=4)
    avatars = pipeline.sample(2, seed=5, options=options)
    latents = pipeline.sample_latents(2, seed=5)
    for index, avatar in enumerate(avatars):
        assert torch.equal(avatar.z, latents[index])
        assert torch.equal(avatar.planes, pipeline.generate(latents[index], seed=5 + index, options=options))
        assert avatar.meta == {"kind": "sample", "seed": 5 + index, "guidance_scale": 1.5, "sampler": "ddim",
                               "steps": 4, "respacing": {"base": "ddim4", "upsampler": "ddim4"}, "preset": "tiny",
                               "decoder_sha256": "ab" * 32}
    assert not torch.equal(avatars[0].planes, avatars[1].planes)
    again = pipeline.sample(2, seed=5, options=options)
    assert all(torch.equal(a.planes, b.planes) for a, b in zip(avatars, again))


def test_interpolation_endpoints_reproduce_the_avatars(pipeline: GenerationPipeline, tmp_path):
    options = SampleOptions(sampler="ancestral", steps=3)
    a = Avatar(pipeline.generate(latent(0), seed=7, options=options), latent(0), {"kind": "sample", "seed": 7})
    b = Avatar(pipeline.generate(latent(1), seed=7, options=options), latent(1), {"kind": "invert", "seed": 7,
                                                                                  "image": "me.png"})
    a = load_avatar(save_avatar(a, tmp_path / "a.safetensors"))  # endpoints read back from files, as the CLI does
    b = load_avatar(save_avatar(b, tmp_path / "b.safetensors"))
    path = pipeline.interpolate(a, b, [0.0, 0.5, 1.0], seed=7, options=options)
    assert torch.equal(path[0].planes, a.planes) and torch.equal(path[0].z, a.z)
    assert torch.equal(path[2].planes, b.planes) and torch.equal(path[2].z, b.z)
    middle = path[1]
    assert not torch.equal(middle.planes, a.planes) and not torch.equal(middle.planes, b.planes)
    assert middle.meta["kind"] == "interpolate" and middle.meta["t"] == 0.5 and middle.meta["seed"] == 7
    assert middle.meta["sources"] == [{"kind": "sample", "seed": 7}, {"kind": "invert", "seed": 7, "image": "me.png"}]


def test_interpolation_needs_latents_and_weights_in_range(pipeline: GenerationPipeline):
    with_z = Avatar(torch.zeros(3, 4, 16, 16), latent(0), {"kind": "sample"})
    fitted = Avatar(torch.zeros(3, 4, 16, 16), None, {"kind": "fitted"})
    with pytest.raises(GenerationError, match="avatar b \\(fitted\\) has no latent z"):
        pipeline.interpolate(with_z, fitted, [0.5], seed=0)
    with pytest.raises(GenerationError, match=r"avatar a has z of shape \(4,\), this model's latents are \(8,\)"):
        pipeline.interpolate(Avatar(with_z.planes, torch.zeros(4), {}), with_z, [0.5], seed=0)
    with pytest.raises(GenerationError, match=r"weights in \[0, 1\], got \[1.5\]"):
        pipeline.interpolate(with_z, with_z, [1.5], seed=0)


def test_inversion_is_deterministic_in_image_and_seed(pipeline: GenerationPipeline):
    image = portrait(0)
    first = pipeline.invert(image, seed=2, name="me.png")
    again = pipeline.invert(image, seed=2, name="me.png")
    assert torch.equal(first.planes, again.planes) and torch.equal(first.z, again.z)
    assert first.planes.shape == (3, 4, 16, 16) and torch.isfinite(first.planes).all()
    assert torch.equal(first.z, pipeline.encode_image(image))
    assert torch.equal(first.planes, pipeline.generate(first.z, seed=2))
    other_seed = pipeline.invert(image, seed=3)
    assert torch.equal(other_seed.z, first.z) and not torch.equal(other_seed.planes, first.planes)
    assert first.meta["kind"] == "invert" and first.meta["image"] == "me.png" and first.meta["image_size"] == [20, 12]
    assert first.meta["seed"] == 2


def test_encode_image_accepts_any_size_and_format(pipeline: GenerationPipeline):
    image = portrait(1, (33, 33))
    z = pipeline.encode_image(image)
    assert z.shape == (8,) and torch.isfinite(z).all()
    torch.testing.assert_close(z.norm(), torch.tensor(8.0**0.5))  # the encoders put z on the sqrt(D) sphere
    rgba = np.concatenate([image, np.full((33, 33, 1), 255, np.uint8)], axis=-1)
    assert torch.equal(pipeline.encode_image(rgba), z)
    torch.testing.assert_close(pipeline.encode_image(image / 255.0), z, atol=1e-5, rtol=1e-5)
    assert pipeline.encode_image(portrait(1, (3, 200))).shape == (8,)
    assert not torch.allclose(pipeline.encode_image(portrait(2, (33, 33))), z)
    with pytest.raises(GenerationError, match=r"\(H, W, 3\) RGB or \(H, W, 4\) RGBA"):
        pipeline.encode_image(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(GenerationError, match=r"must lie in \[0, 1\]"):
        pipeline.encode_image(np.full((4, 4, 3), 2.0))


def test_without_an_encoder_inversion_says_why(stages: Stages, pipeline: GenerationPipeline):
    bare = GenerationPipeline(pipeline.cfg, stages.decoder, pipeline.base, pipeline.upsampler, None, pipeline.stats,
                              encoder_error="CLIP weights are not cached; set encoder.clip_pretrained")
    with pytest.raises(GenerationError, match="cannot invert portraits: CLIP weights are not cached"):
        bare.invert(portrait(0), seed=0)
    with pytest.raises(GenerationError, match="needs both its network and its latent_norm"):
        GenerationPipeline(pipeline.cfg, stages.decoder, pipeline.base, pipeline.upsampler, None, pipeline.stats,
                           prior=pipeline.prior)


def test_render_draws_one_view_of_an_avatar(pipeline: GenerationPipeline):
    avatar = Avatar(pipeline.generate(latent(0), seed=0), latent(0), {"kind": "sample"})
    c2w, intrinsics = look_at(np.array([0.0, -4.0, 0.0])), intrinsics_from_fov(30.0, 12, 8)
    image = pipeline.render(avatar, c2w, intrinsics, 8, 12)
    assert image.shape == (8, 12, 3) and image.dtype == np.uint8
    assert np.array_equal(image, pipeline.render(avatar.planes, c2w, intrinsics, 8, 12))
    with pytest.raises(GenerationError, match=r"Avatar or raw planes \(3, C, H, W\), got \(1, 3, 4, 16, 16\)"):
        pipeline.render(avatar.planes[None], c2w, intrinsics, 8, 12)
