"""Strict loading of the stage checkpoints: wrong preset, wrong slot, other sections, decoder, statistics, weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rodin_core.generation import GenerationError, GenerationPipeline

from .conftest import Stages, make_decoder, plane_stats


def test_loaded_pipeline_has_the_trained_shapes_and_ema_weights(stages: Stages):
    pipeline = stages.pipeline()
    assert (pipeline.resolution, pipeline.base_resolution, pipeline.latent_dim) == (16, 8, 8)
    assert pipeline.cfg.preset == "tiny" and pipeline.device == torch.device("cpu")
    assert pipeline.decoder_sha256 == "ab" * 32
    for network, checkpoint in ((pipeline.base, stages.base), (pipeline.upsampler, stages.upsampler),
                                (pipeline.prior, stages.prior)):
        state = network.state_dict()
        assert state.keys() == checkpoint.module_state("ema").keys()
        assert all(torch.equal(value, checkpoint.module_state("ema")[key]) for key, value in state.items())
        assert not network.training
    assert all(torch.equal(v, stages.base.module_state("encoder_ema")[k])
               for k, v in pipeline.encoder.state_dict().items())
    torch.testing.assert_close(pipeline.stats.mean, plane_stats(stages.cfg).mean)
    torch.testing.assert_close(pipeline.latent_norm.mean, stages.prior.module_state("latent_norm")["mean"])


def test_a_preset_other_than_the_checkpoints_is_refused(stages: Stages):
    assert stages.pipeline(preset="tiny").cfg.preset == "tiny"
    with pytest.raises(GenerationError, match="trained with preset 'tiny', not 'small'; pass --preset tiny "
                                              r"\(or retrain with --preset small\)"):
        stages.pipeline(preset="small")


def test_a_checkpoint_of_another_preset_is_refused(stages: Stages):
    small = stages.checkpoint("upsampler", preset="small")
    with pytest.raises(GenerationError, match="base checkpoint was trained with preset 'tiny' but the upsampler "
                                              "checkpoint with preset 'small'"):
        GenerationPipeline.from_checkpoints(stages.base, small, stages.prior, stages.decoder)


def test_checkpoints_in_the_wrong_slots_are_refused(stages: Stages):
    with pytest.raises(GenerationError, match="given as the upsampler stage is a 'base' checkpoint"):
        GenerationPipeline.from_checkpoints(stages.base, stages.base, stages.prior, stages.decoder)
    with pytest.raises(GenerationError, match="given as the prior stage is a 'upsampler' checkpoint"):
        GenerationPipeline.from_checkpoints(stages.base, stages.upsampler, stages.upsampler, stages.decoder)
    config_less = dataclasses.replace(stages.base, config={"rodin": stages.base.config["rodin"]})
    with pytest.raises(GenerationError, match="not a stage checkpoint"):
        GenerationPipeline.from_checkpoints(config_less, stages.upsampler, stages.prior, stages.decoder)


def test_stages_of_other_triplane_or_encoder_settings_are_refused(stages: Stages):
    wider = stages.checkpoint("upsampler", "triplane.decoder.hidden=32")
    with pytest.raises(GenerationError, match="another triplane section.*decoder.hidden: 16 vs 32"):
        GenerationPipeline.from_checkpoints(stages.base, wider, stages.prior, stages.decoder)
    bigger_z = stages.checkpoint("prior", "encoder.latent_dim=16")
    with pytest.raises(GenerationError, match="another encoder section.*latent_dim: 8 vs 16"):
        GenerationPipeline.from_checkpoints(stages.base, stages.upsampler, bigger_z, stages.decoder)


def test_a_decoder_of_another_config_is_refused(stages: Stages):
    decoder = dataclasses.replace(stages.cfg.triplane.decoder, hidden=24)
    other = make_decoder(dataclasses.replace(stages.cfg, triplane=dataclasses.replace(stages.cfg.triplane,
                                                                                      decoder=decoder)))
    with pytest.raises(GenerationError, match="decoder does not decode.*hidden: 16 vs 24.*decoder/ of the same"):
        GenerationPipeline.from_checkpoints(stages.base, stages.upsampler, stages.prior, other)


def test_different_plane_statistics_are_refused(stages: Stages):
    shifted = stages.checkpoint("upsampler", stats=plane_stats(stages.cfg, shift=0.1))
    with pytest.raises(GenerationError, match="different plane statistics"):
        GenerationPipeline.from_checkpoints(stages.base, shifted, stages.prior, stages.decoder)
    no_stats = dataclasses.replace(stages.base, tensors={k: v for k, v in stages.base.tensors.items()
                                                         if not k.startswith("extra.")})
    with pytest.raises(GenerationError, match="base checkpoint holds no plane statistics"):
        GenerationPipeline.from_checkpoints(no_stats, stages.upsampler, stages.prior, stages.decoder)


def test_missing_or_misshaped_ema_weights_are_refused(stages: Stages):
    tensors = dict(stages.upsampler.tensors)
    dropped = min(k for k in tensors if k.startswith("ema."))
    del tensors[dropped]
    with pytest.raises(GenerationError, match=f"'ema' weights do not fit.*missing \\['{dropped[4:]}'\\]"):
        GenerationPipeline.from_checkpoints(stages.base, dataclasses.replace(stages.upsampler, tensors=tensors),
                                            stages.prior, stages.decoder)
    reshaped = {**stages.upsampler.tensors, dropped: torch.zeros(2, 2)}
    with pytest.raises(GenerationError, match=f"shapes \\['{dropped[4:]}: checkpoint \\(2, 2\\)"):
        GenerationPipeline.from_checkpoints(stages.base, dataclasses.replace(stages.upsampler, tensors=reshaped),
                                            stages.prior, stages.decoder)
    no_ema = {k: v for k, v in stages.prior.tensors.items() if not k.startswith("ema.")}
    with pytest.raises(GenerationError, match="prior checkpoint holds no 'ema' weights"):
        GenerationPipeline.from_checkpoints(stages.base, stages.upsampler,
                                            dataclasses.replace(stages.prior, tensors=no_ema), stages.decoder)


def test_a_network_config_that_disagrees_with_the_rodin_config_is_refused(stages: Stages):
    config = {**stages.base.config, "network": {**stages.base.config["network"], "model_channels": 16}}
    with pytest.raises(GenerationError, match="network config .* is not the one its RodinConfig builds"):
        GenerationPipeline.from_checkpoints(dataclasses.replace(stages.base, config=config), stages.upsampler,
                                            stages.prior, stages.decoder)


def test_without_a_prior_only_given_latents_work(stages: Stages):
    pipeline = GenerationPipeline.from_checkpoints(stages.base, stages.upsampler, None, stages.decoder)
    assert pipeline.prior is None
    with pytest.raises(GenerationError, match="no latent prior.*rodin train prior"):
        pipeline.sample_latents(1, seed=0)
    planes = pipeline.generate(torch.zeros(8), seed=0)
    assert planes.shape == (3, 4, 16, 16)
