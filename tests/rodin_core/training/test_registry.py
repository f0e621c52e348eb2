"""Building a training stage by name (paper §3.2, §3.3, appendix B.4)."""

from __future__ import annotations

import pytest

from rodin_core.training.registry import build_stage

from ...stage_data import plane_stats, small_config


def test_build_stage_names_what_is_missing():
    cfg = small_config()
    with pytest.raises(ValueError, match="PlaneStats"):
        build_stage("base", cfg, None)
    with pytest.raises(ValueError, match="latents"):
        build_stage("prior", cfg, None)
    with pytest.raises(ValueError, match="decoder="):  # the perceptual term of Eq. 4 renders through the decoder
        build_stage("upsampler", small_config("upsampler.perceptual_weight=1"), plane_stats(cfg))
