"""Image features for distribution metrics (paper §4.3): the stlpips VGG16 and CLIP extractors.

CLIP runs open_clip's ViT-B-32 with the tiny model overrides of the encoder tests (random or locally
saved weights); no test touches the network (sockets are disabled).
"""

import math
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rodin_core.encoders import (
    CLIPImageEncoder,
    EncoderUnavailableError,
    scale_to_sphere,
)
from rodin_core.evaluation.features import (
    VGG_FEATURES,
    CLIPFeatures,
    ImageFeatures,
    VGGFeatures,
)

from ..test_encoders import TINY, tiny_weights
from .synthetic import VGG_SIZE, smooth_images

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("feature tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_vgg_features_are_pooled_relu5_3_of_imagenet_normalised_resized_images(vgg: VGGFeatures) -> None:
    images = smooth_images(3, size=48)
    features = vgg(images)
    assert isinstance(vgg, ImageFeatures) and vgg.name == VGG_FEATURES == "vgg16-stlpips" and vgg.dim == 512
    assert features.shape == (3, 512) and features.dtype == torch.float32 and not features.requires_grad
    resized = F.interpolate(images, size=(VGG_SIZE, VGG_SIZE), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        relu5_3 = vgg.net.vgg((resized - IMAGENET_MEAN) / IMAGENET_STD)[4]  # (3, 512, h, w)
    torch.testing.assert_close(features, relu5_3.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)


def test_vgg_features_are_deterministic_frozen_and_batch_invariant(vgg: VGGFeatures) -> None:
    images = smooth_images(6, seed=3).requires_grad_(True)
    features = vgg(images)
    assert torch.equal(features, vgg(images)) and not features.requires_grad
    assert not vgg.net.training and not any(p.requires_grad for p in vgg.net.parameters())
    one_by_one = torch.cat([vgg(image[None]) for image in images])
    torch.testing.assert_close(one_by_one, features, rtol=1e-4, atol=1e-5)
    other = vgg(smooth_images(6, seed=4))
    assert (features - other).norm() > 0.1 * features.norm()


def test_vgg_features_reject_bad_images_and_settings(vgg: VGGFeatures) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \(2, 4, 32, 32\)"):
        vgg(torch.rand(2, 4, 32, 32))
    with pytest.raises(ValueError, match="divide uint8 by 255"):
        vgg(torch.full((1, 3, 32, 32), 255.0))
    with pytest.raises(ValueError, match="image_size must be an integer of at least"):
        VGGFeatures(image_size=8)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        VGGFeatures(image_size=VGG_SIZE, batch_size=0)


def test_clip_features_are_the_unnormalised_image_embeddings(tmp_path: Path) -> None:
    weights = tmp_path / "clip.safetensors"
    tiny_weights(weights)
    extractor = CLIPFeatures("ViT-B-32", str(weights), batch_size=3, model_overrides=TINY)
    assert isinstance(extractor, ImageFeatures)
    assert extractor.name == f"clip:ViT-B-32:{weights}" and extractor.dim == 16
    images = smooth_images(5, size=40)
    features = extractor(images)
    assert features.shape == (5, 16) and features.dtype == torch.float32
    assert not torch.allclose(features.norm(dim=1), torch.full((5,), math.sqrt(16)))
    encoder = CLIPImageEncoder("ViT-B-32", str(weights), 16, model_overrides=TINY)
    torch.testing.assert_close(scale_to_sphere(features), encoder(images))
    torch.testing.assert_close(CLIPFeatures("ViT-B-32", str(weights), 64, model_overrides=TINY)(images), features)


def test_random_clip_features_are_named_as_such() -> None:
    extractor = CLIPFeatures("ViT-B-32", pretrained=None, model_overrides=TINY)
    assert extractor.name == "clip:ViT-B-32:random"
    assert extractor(smooth_images(2, size=32)).shape == (2, 16)


def test_missing_clip_weights_name_the_tag_and_the_path_option(tmp_path: Path) -> None:
    with pytest.raises(EncoderUnavailableError) as info:
        CLIPFeatures("ViT-B-32", "openai", cache_dir=tmp_path)
    message = str(info.value)
    for part in ("pretrained='openai'", "not in the local Hugging Face cache", "pass pretrained= the path",
                 "open_clip_model.safetensors"):
        assert part in message
    assert "encoder.kind" not in message
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(EncoderUnavailableError, match=f"{missing}' does not exist"):
        CLIPFeatures("ViT-B-32", str(missing))
