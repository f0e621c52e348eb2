"""Shared fixtures of the evaluation tests: the VGG feature extractor, loaded once; a dataset root to evaluate."""

import pytest

from rodin_core.evaluation.features import VGGFeatures
from rodin_core.fitting.shard_job import torch_threads
from rodin_core.stage_specs import STAGE_NAMES

from ...evaluation_data import HOLDOUT, make_reconstruction_root
from ...generation_data import generation_config
from .synthetic import VGG_SIZE


@pytest.fixture(scope="package")
def vgg() -> VGGFeatures:
    return VGGFeatures(image_size=VGG_SIZE, batch_size=8)


@pytest.fixture(scope="package")
def quality_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """:func:`tests.evaluation_data.make_reconstruction_root` with the three stages and the plane statistics:
    training subjects 0 and 1, held-out subjects 2 and 3 (3 without a fitted tri-plane)."""
    with torch_threads(1):
        return make_reconstruction_root(tmp_path_factory.mktemp("quality") / "data", generation_config(*HOLDOUT),
                                        stages=STAGE_NAMES, stats=True)
