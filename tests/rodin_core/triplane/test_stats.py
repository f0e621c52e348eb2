"""Per-channel plane statistics: streaming values, normalisation round trip, serialisation (§3.2)."""

import uuid

import pytest
import torch

from rodin_core.datasets.plane_stats import read_plane_stats, write_plane_stats
from rodin_core.triplane.stats import PlaneStats, PlaneStatsError, compute_plane_stats


def corpus() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([1.0, 5.0, 0.1])[:, None, None]  # (C, 1, 1): channels of very different scale
    return [torch.randn(3, 3, 4, 4, generator=generator) * scales + i for i in range(5)]  # (3, C, H, W) each


def test_streaming_stats_equal_torch_over_the_concatenated_corpus() -> None:
    planes = corpus()
    stats = compute_plane_stats(iter(planes))
    values = torch.stack(planes).double().transpose(0, 2).reshape(3, -1)  # (C, N*3*H*W)
    assert stats.count == 5
    torch.testing.assert_close(stats.mean, values.mean(dim=1).float())
    torch.testing.assert_close(stats.std, values.std(dim=1, unbiased=False).float())


def test_normalize_gives_zero_mean_unit_std_and_denormalize_inverts_it() -> None:
    planes = torch.stack(corpus())  # (N, 3, C, H, W)
    stats = compute_plane_stats(planes)
    normal = stats.normalize(planes)
    per_channel = normal.transpose(0, 2).reshape(3, -1)  # (C, ...)
    torch.testing.assert_close(per_channel.mean(dim=1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(dim=1, unbiased=False), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(stats.denormalize(normal), planes, atol=1e-5, rtol=1e-5)


def test_constant_channel_is_left_unscaled() -> None:
    planes = torch.randn(3, 2, 4, 4)
    planes[:, 1] = 7.0
    stats = compute_plane_stats([planes])
    assert stats.std[1].item() == 1.0 and stats.mean[1].item() == pytest.approx(7.0)


def test_bytes_and_store_round_trip() -> None:
    stats = compute_plane_stats(corpus())
    again = PlaneStats.from_bytes(stats.to_bytes())
    assert torch.equal(again.mean, stats.mean) and torch.equal(again.std, stats.std) and again.count == 5
    back = PlaneStats.from_tensors(stats.as_tensors())
    assert torch.equal(back.std, stats.std)
    uri = f"memory://rodin-stats-{uuid.uuid4().hex}"
    with pytest.raises(PlaneStatsError, match="no committed plane statistics"):
        read_plane_stats(uri)
    write_plane_stats(uri, stats)
    assert torch.equal(read_plane_stats(uri).mean, stats.mean)


def test_errors_name_the_problem() -> None:
    with pytest.raises(PlaneStatsError, match="no tri-planes"):
        compute_plane_stats([])
    with pytest.raises(PlaneStatsError, match="channels"):
        compute_plane_stats([torch.zeros(3, 2, 4, 4), torch.zeros(3, 3, 4, 4)])
    stats = compute_plane_stats(corpus())
    with pytest.raises(PlaneStatsError, match=r"\(\.\.\., 3, 3, H, W\)"):
        stats.normalize(torch.zeros(1, 3, 5, 4, 4))
    with pytest.raises(PlaneStatsError, match="not readable"):
        PlaneStats.from_bytes(b"garbage")
