"""Conditioning encoders (paper §3.2): shapes, scale, RGBA compositing, offline weight resolution, errors.

CLIP tests use open_clip's ViT-B-32 architecture with a tiny vision/text config passed as model
overrides (random or locally saved weights); no test touches the network (sockets are disabled).
"""

import socket
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from rodin_core.config import EncoderConfig
from rodin_core.config_dict import ConfigError
from rodin_core.encoders import (
    CLIP_SAFE_WEIGHTS,
    CLIPImageEncoder,
    EncoderUnavailableError,
    ImageEncoder,
    LearnedImageEncoder,
    build_encoder,
    composite_on_white,
)

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1}}
"""ViT-B-32 shrunk through open_clip.create_model's model-config overrides."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("encoder tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def images(batch: int = 2, size: int = 40) -> torch.Tensor:
    return torch.rand(batch, 4, size, size, generator=torch.Generator().manual_seed(0))  # (B, RGBA, H, W)


def transparent_equals_white(encoder: torch.nn.Module) -> None:
    rgba = images()
    rgba[:, 3] = 0.0
    torch.testing.assert_close(encoder(rgba), encoder(torch.ones(2, 3, 40, 40)))


def test_composite_on_white() -> None:
    rgba = torch.tensor([0.2, 0.4, 0.6, 0.5]).view(1, 4, 1, 1)
    torch.testing.assert_close(composite_on_white(rgba).flatten(), torch.tensor([0.6, 0.7, 0.8]))
    with pytest.raises(ValueError, match="RGBA"):
        composite_on_white(torch.zeros(1, 2, 4, 4))


def test_learned_encoder_shape_scale_and_gradients() -> None:
    cfg = EncoderConfig(kind="learned", latent_dim=24, image_size=32, learned_channels=8)
    encoder = build_encoder(cfg)
    assert isinstance(encoder, LearnedImageEncoder) and isinstance(encoder, ImageEncoder) and encoder.trainable
    z = encoder(images())
    assert z.shape == (2, 24)
    torch.testing.assert_close(z.norm(dim=1), torch.full((2,), 24**0.5))
    z.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())
    transparent_equals_white(encoder)


def test_clip_encoder_random_tiny_is_frozen_and_scaled() -> None:
    encoder = CLIPImageEncoder("ViT-B-32", pretrained=None, latent_dim=16, model_overrides=TINY).train()
    assert not encoder.training and not encoder.trainable
    assert not any(p.requires_grad for p in encoder.parameters())
    z = encoder(images())
    assert z.shape == (2, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.full((2,), 4.0))
    transparent_equals_white(encoder)


def test_clip_vit_b32_embeds_to_512() -> None:
    encoder = CLIPImageEncoder("ViT-B-32", pretrained=None, latent_dim=512)
    assert encoder.image_size == 224
    assert encoder(images(1, 64)).shape == (1, 512)


def tiny_weights(path: Path) -> open_clip.model.CLIP:
    torch.manual_seed(1)
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True, **TINY)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


def test_clip_loads_a_local_safetensors_path(tmp_path: Path) -> None:
    reference = tiny_weights(tmp_path / "clip.safetensors")
    encoder = CLIPImageEncoder("ViT-B-32", str(tmp_path / "clip.safetensors"), 16, model_overrides=TINY)
    for key, value in reference.visual.state_dict().items():
        assert torch.equal(encoder.visual.state_dict()[key], value), key


def test_clip_loads_a_tag_from_the_local_hugging_face_cache(tmp_path: Path) -> None:
    """The `openai` tag resolves to the HF cache layout models--org--repo/snapshots/<rev>/file."""
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    reference = tiny_weights(repo / "snapshots" / ("0" * 40) / CLIP_SAFE_WEIGHTS)
    encoder = CLIPImageEncoder("ViT-B-32", "openai", 16, cache_dir=tmp_path, model_overrides=TINY)
    assert torch.equal(encoder.visual.proj, reference.visual.proj)


def test_missing_weights_raise_a_clear_error_without_network(tmp_path: Path) -> None:
    with pytest.raises(EncoderUnavailableError) as info:
        CLIPImageEncoder("ViT-B-32", "openai", 512, cache_dir=tmp_path)
    message = str(info.value)
    for part in ("'openai'", "not in the local Hugging Face cache", "encoder.clip_pretrained", "encoder.kind=learned"):
        assert part in message
    with pytest.raises(EncoderUnavailableError, match="does not exist"):
        CLIPImageEncoder("ViT-B-32", str(tmp_path / "missing.safetensors"), 512)
    with pytest.raises(EncoderUnavailableError, match="neither an existing file nor a pretrained tag"):
        CLIPImageEncoder("ViT-B-32", "no-such-tag", 512)
    (tmp_path / "weights.pt").write_bytes(b"pickle")
    with pytest.raises(EncoderUnavailableError, match="safetensors"):
        CLIPImageEncoder("ViT-B-32", str(tmp_path / "weights.pt"), 512)
    with pytest.raises(EncoderUnavailableError, match="clip_pretrained"):
        build_encoder(EncoderConfig(kind="clip", clip_pretrained="openai"), cache_dir=tmp_path)


def test_latent_dim_must_match_the_clip_embedding() -> None:
    with pytest.raises(ValueError, match="encoder.latent_dim=8"):
        CLIPImageEncoder("ViT-B-32", pretrained=None, latent_dim=8, model_overrides=TINY)


def _portraits(count: int) -> torch.Tensor:
    """Synthetic frontal views (count, 4, 64, 64): a white background (alpha 0) around a head-sized disc whose
    colour, size and height differ per subject, as the corpus's frontals differ mostly in a central region."""
    generator = torch.Generator().manual_seed(3)
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    images = torch.zeros(count, 4, 64, 64)
    for index in range(count):
        colour = torch.rand(3, generator=generator)
        centre = 24.0 + 16.0 * torch.rand(1, generator=generator).item()
        radius = 10.0 + 8.0 * torch.rand(1, generator=generator).item()
        inside = ((rows - centre) ** 2 + (cols - 32.0) ** 2 < radius**2).float()
        images[index, :3] = colour[:, None, None]
        images[index, 3] = inside
    return images


def _mean_cosine(z: torch.Tensor) -> float:
    unit = torch.nn.functional.normalize(z, dim=1)
    cosine = unit @ unit.T
    return float((cosine.sum() - cosine.diagonal().sum()) / (z.shape[0] * (z.shape[0] - 1)))


def test_a_fresh_flattening_encoder_tells_subjects_apart_where_average_pooling_does_not() -> None:
    """Average-pooled features of images that share most of their pixels give nearly parallel z; keeping the
    spatial layout gives a fresh encoder distinguishable embeddings to start training from."""
    images = _portraits(8)
    cosines = {}
    for pooling in ("mean", "flatten"):
        torch.manual_seed(0)
        encoder = LearnedImageEncoder(EncoderConfig(kind="learned", image_size=64, learned_channels=16,
                                                    learned_pooling=pooling))
        with torch.no_grad():
            z = encoder(images)  # (8, 512)
        assert z.shape == (8, 512)
        cosines[pooling] = _mean_cosine(z)
    assert cosines["mean"] > 0.9 and cosines["flatten"] < 0.7, cosines


def test_an_unknown_pooling_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"encoder.learned_pooling='max' is not a pooling; choose one of"):
        EncoderConfig(kind="learned", learned_pooling="max").validate()
