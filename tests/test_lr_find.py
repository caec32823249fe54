"""The LR range test's picks and its warnings."""

import numpy as np
import pytest
import torch
from torch import nn

from cifar.config import AugmentConfig, LRFindConfig, TrainConfig
from cifar.loader import DeviceLoader
from cifar.lr_find import range_test, valley_index
from cifar.sources import synthetic_split
from generated import CPU


def u_shaped_curve():
    """Flat, then a steady fall from step 20 to step 70, then a blow-up."""
    return [2.3] * 20 + list(np.linspace(2.3, 0.8, 50)) + list(np.linspace(0.9, 9.0, 30))


def test_valley_is_halfway_along_the_longest_descent():
    assert valley_index(u_shaped_curve()) == 44


def test_valley_ignores_a_noisy_blip_inside_the_descent():
    losses = u_shaped_curve()
    losses[40] = 5.0
    assert 40 <= valley_index(losses) <= 48


def small_range_test(capsys, **config):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    loader = DeviceLoader(synthetic_split(256, seed=0), 32, CPU, augmentation=AugmentConfig(), shuffle=True)
    test = range_test(model, loader, LRFindConfig(**config), TrainConfig(weight_decay=0.0), CPU, "fp32")
    assert capsys.readouterr().out == "", "torch-lr-finder's print reached the stage log"
    return test


def test_a_pick_at_the_end_of_a_short_range_is_warned_about(capsys):
    # The loss is still falling at 0.1: the minimum is the last point of the range.
    test = small_range_test(capsys, start_lr=1e-2, end_lr=0.1, num_iter=20, pick="min_loss")
    assert test.at_range_end and test.max_lr == test.lrs[-1]
    assert any("lies in the last tenth of the range" in warning for warning in test.warnings)


@pytest.mark.parametrize("pick", ["min_loss", "min_loss_div10", "steepest", "valley"])
def test_each_rule_picks_a_learning_rate_inside_the_range(capsys, pick):
    test = small_range_test(capsys, start_lr=1e-6, end_lr=1.0, num_iter=30, pick=pick)
    assert test.lrs[0] / 10 <= test.max_lr <= test.lrs[-1]
    assert test.lr_at_min_loss == test.lrs[test.losses.index(min(test.losses))]
    expected = {
        "min_loss": test.lr_at_min_loss, "min_loss_div10": test.lr_at_min_loss / 10,
        "steepest": test.steepest_lr, "valley": test.valley_lr,
    }[pick]
    assert test.max_lr == pytest.approx(expected)
    if pick == "valley":
        assert not test.past_descent
