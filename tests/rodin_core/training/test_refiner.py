"""Training the convolutional refiner (paper §3.3, Fig. 8): crops, the loss falling, config checks."""

import pytest
import torch
import torch.nn.functional as F

from rodin_core.config_dict import ConfigError
from rodin_core.datasets.refiner_pairs import RefinerPairs
from rodin_core.networks.perceptual import PerceptualLoss
from rodin_core.networks.refiner import ConvRefiner, RefinerConfig
from rodin_core.training.refiner import (
    RefinerTrainConfig,
    check_patch,
    random_crops,
    refiner_configs,
    refiner_loss,
    train_refiner,
)


def toy_pairs(count: int = 6, side: int = 12, scale: int = 2) -> RefinerPairs:
    """Sharp high-resolution stripes and their 2x2-averaged low-resolution renders (opacity 1, depth 0)."""
    generator = torch.Generator().manual_seed(0)
    high = side * scale
    rows = torch.arange(high)[:, None] + torch.arange(high)[None, :]  # (H, W)
    targets = torch.stack([(((rows + shift) // 2) % 2).float().expand(3, high, high) * torch.rand(3, 1, 1,
                                                                                             generator=generator)
                           for shift in range(count)])  # (N, 3, H, W)
    low = F.avg_pool2d(targets, scale)  # (N, 3, h, w)
    inputs = torch.cat([low, torch.ones(count, 1, side, side), torch.zeros(count, 1, side, side)], dim=1)
    return RefinerPairs(inputs, targets, torch.arange(count), torch.zeros(count, dtype=torch.int64))


def _l1(model: ConvRefiner, pairs: RefinerPairs) -> float:
    with torch.no_grad():
        return float(F.l1_loss(model(pairs.inputs), pairs.targets))


def test_a_few_steps_lower_the_loss_below_bilinear_on_a_toy_pair_set() -> None:
    pairs = toy_pairs()
    torch.manual_seed(0)
    model = ConvRefiner(RefinerConfig(channels=16, blocks=1))
    before = _l1(model, pairs)  # the bilinear baseline: the refiner starts there
    cfg = RefinerTrainConfig(steps=60, batch_size=4, patch=8, lr=3e-3, warmup=5, perceptual_weight=0.0)
    history = train_refiner(model, pairs, cfg, log_every=20)
    assert [h["step"] for h in history] == [20.0, 40.0, 60.0]
    assert "perceptual" not in history[0]
    assert _l1(model, pairs) < 0.7 * before
    assert history[-1]["l1"] < history[0]["l1"]


def test_the_perceptual_term_joins_on_every_nth_step() -> None:
    pairs = toy_pairs(count=2, side=10)
    model = ConvRefiner(RefinerConfig(channels=4, blocks=0))
    cfg = RefinerTrainConfig(steps=4, batch_size=1, patch=10, perceptual_weight=0.5, perceptual_every=2)
    perceptual = PerceptualLoss("stlpips")
    output, target = pairs.inputs.new_zeros(1, 3, 20, 20), pairs.targets[:1]
    total, terms = refiner_loss(output, target, cfg, perceptual)
    assert terms["perceptual"] > 0 and total.item() == pytest.approx(terms["l1"] + 0.5 * terms["perceptual"], rel=1e-6)
    _, terms = refiner_loss(output, target, cfg, perceptual, with_perceptual=False)
    assert set(terms) == {"l1", "loss"}
    seen = []
    train_refiner(model, pairs, cfg, perceptual, log_every=1, on_log=lambda step, terms: seen.append(set(terms)))
    assert ["perceptual" in terms for terms in seen] == [True, False, True, False]


def test_random_crops_cut_matching_places_of_input_and_target() -> None:
    scale, side = 4, 6
    inputs = torch.rand(3, 5, side, side)
    targets = inputs[:, :3].repeat_interleave(scale, 2).repeat_interleave(scale, 3)  # each pixel a 4x4 block
    pairs = RefinerPairs(inputs, targets, torch.arange(3), torch.zeros(3, dtype=torch.int64))
    crops, crop_targets = random_crops(pairs, 16, 4, torch.Generator().manual_seed(1))
    assert crops.shape == (16, 5, 4, 4) and crop_targets.shape == (16, 3, 16, 16)
    assert torch.equal(crops[:, :3].repeat_interleave(scale, 2).repeat_interleave(scale, 3), crop_targets)
    with pytest.raises(ConfigError, match="refiner.patch: 7 is larger than the renders"):
        random_crops(pairs, 1, 7, torch.Generator())


def test_training_refuses_pairs_of_another_scale() -> None:
    with pytest.raises(ValueError, match="the pairs up-sample by 2, the refiner by 4"):
        train_refiner(ConvRefiner(RefinerConfig(scale=4, channels=4, blocks=0)), toy_pairs(),
                      RefinerTrainConfig(steps=1, patch=4, perceptual_weight=0.0))


@pytest.mark.parametrize(("overrides", "message"), [
    (["refiner.net.scale=3"], "unknown refiner key 'refiner.net.scale'; the scale comes from the two corpora"),
    (["refiner.bogus=1"], "unknown refiner key 'refiner.bogus'; valid keys: refiner.steps"),
    (["refiner.net.channels=0"], "bad refiner value: refiner channels must be an integer >= 1, got 0"),
    (["refiner.steps=0"], r"bad value for refiner.steps: 0 is outside the valid range \[1, inf\]"),
    (["refiner.lr=-1"], "bad value for refiner.lr"),
    (["refiner.l1_weight=0", "refiner.perceptual_weight=0"], "are both 0"),
    (["base.steps=3"], "is not of the form refiner.FIELD=VALUE"),
])
def test_bad_refiner_settings_are_one_line_config_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        refiner_configs(overrides)
    assert "\n" not in str(info.value)


def test_refiner_settings_parse_into_both_configs() -> None:
    net, train = refiner_configs(["refiner.net.channels=8", "refiner.steps=12", "refiner.perceptual_weight=0.25"])
    assert (net.channels, net.blocks, net.scale) == (8, RefinerConfig().blocks, 2)
    assert (train.steps, train.perceptual_weight, train.batch_size) == (12, 0.25, RefinerTrainConfig().batch_size)


def test_a_crop_too_small_for_the_perceptual_network_is_refused() -> None:
    with pytest.raises(ConfigError, match="refiner.patch: 4 input pixels make 8-pixel targets.*raise it to 9"):
        check_patch(RefinerTrainConfig(patch=4), 2)
    check_patch(RefinerTrainConfig(patch=4, perceptual_weight=0.0), 2)  # L1 alone takes any crop


def test_refiner_values_are_read_by_the_type_of_their_field() -> None:
    _, train = refiner_configs(["refiner.lr=2e-3", "refiner.perceptual_weight=1"])
    assert train.lr == 0.002 and isinstance(train.perceptual_weight, float)
    with pytest.raises(ConfigError, match="bad value for refiner.steps: 'many' is not a int"):
        refiner_configs(["refiner.steps=many"])
