"""Shared fixtures of the evaluation tests: the VGG feature extractor, loaded once."""

import pytest

from rodin_core.evaluation.features import VGGFeatures

from .synthetic import VGG_SIZE


@pytest.fixture(scope="package")
def vgg() -> VGGFeatures:
    return VGGFeatures(image_size=VGG_SIZE, batch_size=8)
