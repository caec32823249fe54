"""The LR range test's verdict on its own curve, its picks and its warnings, and what the
lr_find stage does without a descent."""

import dataclasses
import json
import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from bench import lr_picks
from cifar.config import AugmentConfig, LRFindConfig, TrainConfig
from cifar.errors import TrainingError
from cifar.ingest.sources import synthetic_split
from cifar.training.loader import DeviceLoader
from cifar.training.lr_find import SMOOTH_F, in_last_tenth, loss_falls_at, range_test, read_curve, valley_index
from generated import CPU, cpu_recipe
from pipeline_repo import REPO, copy_of, dvc, stage
from stages import paths


def exponential_lrs(start, end, steps):
    """The LRs torch-lr-finder steps through with step_mode="exp"."""
    return list(start * (end / start) ** (np.arange(steps) / (steps - 1)))


# ResNet18 with GroupNorm, 5,000 images of the JPEG mirror, batch 512, 20 steps from 1e-7 to
# 0.1: the smoothed loss dips 1% and rises. The pick it used to give (3.36e-6) left training at chance.
GROUP_NORM_20 = [
    2.4528,
    2.4526,
    2.4510,
    2.4510,
    2.4491,
    2.4456,
    2.4421,
    2.4355,
    2.4309,
    2.4361,
    2.4546,
    2.4684,
    2.4809,
    2.4911,
    2.5127,
    2.5382,
    2.5447,
    2.5461,
    2.5674,
    2.6118,
]


def test_a_dip_within_the_noise_then_a_rise_is_no_descent():
    test = read_curve(exponential_lrs(1e-7, 0.1, 20), GROUP_NORM_20, LRFindConfig(num_iter=20))
    assert (test.reading.verdict, test.max_lr) == ("rising", None)
    assert test.no_descent == (
        "lr_find found no descent: the loss fell by 0.073 at most, from 2.45 to 2.38 near lr 7.85e-06 (medians of "
        "5 steps), less than 4 times its step-to-step noise of 0.053, then rose to 2.97 near lr 0.0234 "
        "(lr 1e-07 to 0.1 in 20 steps)"
    )
    with pytest.raises(TrainingError, match=r"raise lr_find.num_iter.* or set train.max_lr to a number$"):
        test.require_descent()


# Range tests recorded by bench/lr_picks.py (5,000 images of the JPEG mirror, batch 512, 1e-7 to 0.1).
RECORDED = json.loads((REPO / "docs/lr-finder-curves.json").read_text())


@pytest.mark.parametrize(
    ("model", "steps", "verdict", "max_lr"),
    [("custom_resnet", 20, "descent", 4.83e-3), ("resnet18-gn", 20, "rising", None)],
)
def test_recorded_range_tests_read_as_measured(model, steps, verdict, max_lr):
    curve = next(row for row in RECORDED if (row["model"], row["num_iter"]) == (model, steps))
    test = read_curve(curve["lrs"], curve["losses"], LRFindConfig(num_iter=steps))
    assert test.reading.verdict == verdict
    if max_lr is None:
        assert test.max_lr is None and test.no_descent.startswith(
            "lr_find found no descent: the loss fell by 0.071 at most"
        )
        with pytest.raises(TrainingError):
            test.require_descent()
    else:
        assert test.max_lr == pytest.approx(max_lr, rel=1e-3) and test.no_descent is None
        test.require_descent()


def bench_checkout(root, params):
    """A checkout after a pipeline run of lr_find with these params: params.yaml and the GROUP_NORM_20 curve."""
    (root / "plots").mkdir(parents=True)
    (root / paths.PARAMS).write_text(yaml.safe_dump(dataclasses.asdict(params), sort_keys=False))
    pd.DataFrame({"lr": exponential_lrs(1e-7, 0.1, 20), "loss": GROUP_NORM_20}).to_csv(root / paths.LR_FIND_CURVE)
    return root


def test_the_bench_records_a_pipeline_run_only_with_its_own_settings(tmp_path):
    curves, runs = lr_picks.Store(tmp_path / "curves.json"), lr_picks.Store(tmp_path / "runs.json")
    bench_settings = lr_picks.settings("/data/cifar10.tar.xz", "resnet18-gn", num_iter=20)
    lr_picks.record_run_checkout(bench_checkout(tmp_path / "run", bench_settings), curves, runs)
    [curve] = json.loads((tmp_path / "curves.json").read_text())
    assert (curve["model"], curve["num_iter"], curve["losses"]) == ("resnet18-gn", 20, GROUP_NORM_20)
    assert lr_picks.verdict_and_picks(curve)[0].startswith("rising") and runs.rows == []  # train never ran
    other = bench_checkout(tmp_path / "other", dataclasses.replace(bench_settings, seed=1))
    with pytest.raises(SystemExit, match="does not hold this bench's settings"):
        lr_picks.record_run_checkout(other, curves, runs)
    assert len(json.loads((tmp_path / "curves.json").read_text())) == 1


def test_a_range_that_ends_before_the_loss_moves_is_flat():
    # The same range test's first 8 steps: what a range from 1e-7 to 1.62e-5 in 8 steps records.
    lrs = exponential_lrs(1e-7, 0.1, 20)[:8]
    test = read_curve(lrs, GROUP_NORM_20[:8], LRFindConfig(start_lr=lrs[0], end_lr=lrs[-1], num_iter=8))
    assert (test.reading.verdict, test.max_lr) == ("flat", None)
    assert "the loss fell by 0.07 at most" in test.no_descent and "and never rose clearly either" in test.no_descent


def recorded(raw_losses):
    """The smoothed curve torch-lr-finder records for these per-step losses."""
    return pd.Series(raw_losses, dtype=float).ewm(alpha=SMOOTH_F, adjust=False).mean().tolist()


def test_noise_alone_seldom_reads_as_a_descent():
    rng = np.random.default_rng(0)
    lrs = exponential_lrs(1e-7, 0.1, 50)
    verdicts = [
        read_curve(lrs, recorded(2.3 + 0.05 * rng.standard_normal(50)), LRFindConfig(num_iter=50)).reading.verdict
        for _ in range(400)
    ]
    assert verdicts.count("descent") <= 2 and verdicts.count("flat") >= 390


def test_a_loss_that_does_not_move_at_all_is_flat():
    # LRs too small to change a float32 weight: every step's loss is the same, to the last bit.
    test = read_curve(
        exponential_lrs(1e-12, 1e-10, 20), [2.3] * 20, LRFindConfig(start_lr=1e-12, end_lr=1e-10, num_iter=20)
    )
    assert (test.reading.verdict, test.reading.fall, test.reading.noise, test.max_lr) == ("flat", 0.0, 0.0, None)


def test_a_fall_within_the_first_steps_is_a_descent():
    # A start_lr that already learns: the loss drops at step 3 and stays down.
    raw = np.array([2.3] * 3 + [1.5] * 27) + 0.01 * np.random.default_rng(0).standard_normal(30)
    test = read_curve(
        exponential_lrs(1e-3, 1.0, 30), recorded(raw), LRFindConfig(start_lr=1e-3, end_lr=1.0, num_iter=30)
    )
    assert test.reading.verdict == "descent" and test.reading.fall == pytest.approx(0.8, abs=0.05)


def test_a_loss_that_blows_up_ends_the_curve_there():
    lrs = exponential_lrs(1e-7, 0.1, 32)
    losses = [*recorded(np.linspace(2.3, 1.0, 30)), float("inf"), float("nan")]
    test = read_curve(lrs, losses, LRFindConfig(num_iter=32, pick="min_loss"))
    assert test.lrs == lrs[:30] and test.losses == losses[:30]
    assert test.reading.verdict == "descent" and test.max_lr == lrs[29] and test.min_loss == losses[29]


def test_a_curve_cut_to_two_steps_is_too_short_to_read():
    lrs = exponential_lrs(1e-7, 0.1, 10)
    test = read_curve(lrs, recorded([2.3, 2.2]) + [float("inf")] * 8, LRFindConfig(num_iter=10))
    assert (test.reading.verdict, test.reading.noise) == ("flat", 0.0)
    assert (
        "its step-to-step noise of 0, then diverged at lr 2.15e-06 (above 5 times its lowest) "
        "(lr 1e-07 to 4.64e-07 in 2 steps)" in test.no_descent
    )


@pytest.mark.parametrize(
    ("step_mode", "lrs", "raw", "diverged_at"),
    [
        # Linear steps from 1e-30 to 1000: the second step is already at 52.6, the third diverges.
        ("linear", list(np.linspace(1e-30, 1000, 20))[:3], [5.25, 5.22, 34665.0], "105"),
        # A flat stretch to 0.1, then a blow-up in the last two steps only, which no median of 5 steps sees.
        (
            "exp",
            exponential_lrs(1e-30, 1000, 20),
            [*(4.8 + 0.3 * np.random.default_rng(0).standard_normal(18)), 9.1, 2121.0],
            "1e+03",
        ),
    ],
    ids=["linear-range-diverges-at-its-third-step", "exponential-range-diverges-in-its-last-step"],
)
def test_a_flat_curve_that_diverges_says_where_and_asks_for_steps_below_it(step_mode, lrs, raw, diverged_at):
    config = LRFindConfig(start_lr=1e-30, end_lr=1000.0, num_iter=20, step_mode=step_mode)
    test = read_curve(lrs, recorded(raw), config)
    assert test.reading.verdict == "flat" and f"then diverged at lr {diverged_at} (above 5 times its lowest)" in (
        test.no_descent
    )
    with pytest.raises(TrainingError) as caught:
        test.require_descent()
    assert f"; test more steps just below lr {diverged_at}: set lr_find.start_lr to about " in str(caught.value)
    assert "lower lr_find.start_lr" not in str(caught.value)
    # Linear steps over four decades would leave all but the top one almost without a step.
    assert ("with lr_find.step_mode = 'exp'" in str(caught.value)) == (step_mode == "linear")
    # Linear steps from 1e-7 to 1,000 in 12 had 0.018 advised: that range picked 0.157, where training diverged.
    start, end, steps = advised_range(str(caught.value))
    assert start <= LRFindConfig().start_lr and as_dense_as_the_default(start, end, steps)


def advised_range(message: str) -> tuple[float, float, int]:
    """The start_lr, end_lr and num_iter an lr_find message advises."""
    found = re.search(
        r"set lr_find\.start_lr to about ([0-9.e+-]+), lr_find\.end_lr to about ([0-9.e+-]+) and "
        r"lr_find\.num_iter to ([0-9]+) or more",
        message,
    )
    assert found, message
    return float(found[1]), float(found[2]), int(found[3])


def as_dense_as_the_default(start: float, end: float, steps: int) -> bool:
    default = LRFindConfig()
    return steps / math.log10(end / start) >= default.num_iter / math.log10(default.end_lr / default.start_lr)


@pytest.mark.parametrize(
    ("step_mode", "lrs", "raw"),
    [
        # Adam from 0.1 to 1000: the loss rose at every step and diverged at the fifth; the advice
        # was to test just below the divergence with start_lr kept at 0.1, which failed alike.
        ("exp", exponential_lrs(0.1, 1000.0, 8)[:6], [5.03, 6.45, 10.3, 12.6, 29.2]),
        # From 100: the advised start, a ten-thousandth of it (0.01), rose from its first step again.
        ("exp", exponential_lrs(100.0, 1000.0, 20)[:5], [5.0, 5.6, 9.0, 30.0]),
        # Linear steps put the second at 5.26 whatever the start: each lower start advised failed alike.
        ("linear", list(np.linspace(1e-7, 100.0, 20))[:4], [2.3, 2.5, 4.0]),
        # SGD from 0.01: the loss rose from its second step on, and "raise lr_find.end_lr" was advised at its most.
        ("exp", exponential_lrs(0.01, 1000.0, 20)[:12], [5.03, 5.024, 5.2, 5.91, 7, 9, 12, 16, 20, 24, 27.96]),
        # Adam from 0.005: a fall within the noise, then a rise; the advice was to raise end_lr, at its most.
        (
            "exp",
            exponential_lrs(0.005, 1000.0, 30)[:15],
            [5.03, 5.0, 5.1, 4.9, 4.84, 4.9, 5.6, 7, 9, 14, 20, 28, 40, 46.6],
        ),
    ],
    ids=["adam-from-0.1", "from-100", "linear-steps", "rises-from-the-second-step", "a-dip-within-the-noise"],
)
def test_a_curve_that_rises_from_its_start_asks_for_a_range_that_starts_where_the_recipe_learns(step_mode, lrs, raw):
    config = LRFindConfig(start_lr=lrs[0], end_lr=1000.0, num_iter=20, step_mode=step_mode)
    test = read_curve(lrs, [*recorded(raw), float("inf")], config)  # torch-lr-finder's last: where it diverged
    with pytest.raises(TrainingError) as caught:
        test.require_descent()
    message = str(caught.value)
    # linear steps skip the LRs below their second: the range from the default start, in exponential steps
    said = "test no LR between 1e-07 and 5.26, where the LRs that learn may lie; " if step_mode == "linear" else ""
    assert (said or "the range starts above the LRs that learn; ") in message, message
    start, end, steps = advised_range(message)
    assert start <= LRFindConfig().start_lr and end <= lrs[-1] * 1.005 and as_dense_as_the_default(start, end, steps)
    assert ("with lr_find.step_mode = 'exp'" in message) == (step_mode == "linear")


def test_too_few_steps_to_read_a_descent_are_named_with_a_number_of_steps():
    """num_iter 5, which params allow: one median of 5 steps was both the start and the lowest, so
    the loss "fell by 0" where each step's own loss halved, and the advice named no number."""
    test = read_curve(exponential_lrs(1e-4, 0.1, 5), recorded([5.03, 4.1, 3.2, 2.6, 2.4]), LRFindConfig(num_iter=5))
    with pytest.raises(TrainingError) as caught:
        test.require_descent()
    assert str(caught.value).startswith("lr_find found no descent: 5 steps, lr 0.0001 to 0.1, are too few to tell")
    start, end, steps = advised_range(str(caught.value))
    assert (start, end) == (1e-4, 0.1) and as_dense_as_the_default(start, end, steps)


def test_a_flat_curve_of_a_range_that_ends_below_the_default_end_advises_the_default_end():
    """1e-9 to 1e-6 (end_lr typed 1e-6 for 1e-1): "raise lr_find.num_iter, lower lr_find.start_lr
    or raise lr_find.end_lr", and 20 steps found no descent again."""
    raw = 4.8 + 0.05 * np.random.default_rng(3).standard_normal(10)
    test = read_curve(
        exponential_lrs(1e-9, 1e-6, 10), recorded(raw), LRFindConfig(start_lr=1e-9, end_lr=1e-6, num_iter=10)
    )
    with pytest.raises(TrainingError) as caught:
        test.require_descent()
    assert ": the range ends below the LRs that learn; set lr_find.start_lr" in str(caught.value)
    start, end, steps = advised_range(str(caught.value))
    assert (start, end) == (1e-7, 0.1) and as_dense_as_the_default(start, end, steps)


def test_a_flat_curve_of_batches_of_one_image_asks_for_larger_batches():
    """train.batch_size 1: a step-to-step noise of 2.1 hid any descent, and following "raise
    lr_find.num_iter" (200) and "raise lr_find.end_lr" (1.0) stopped at the same line."""
    raw = 2.3 + 2.1 * np.random.default_rng(4).standard_normal(20)
    curve = read_curve(exponential_lrs(1e-7, 0.1, 20), recorded(raw), LRFindConfig(num_iter=20))
    with pytest.raises(TrainingError) as caught:
        dataclasses.replace(curve, images_a_step=1).require_descent()
    assert str(caught.value).endswith(
        "; each step's loss is that of 1 image(s), whose noise hides a descent: raise train.batch_size, which lr_find "
        "runs at, to 16 or more, or set train.max_lr to a number"
    )


def test_a_flat_curve_over_the_widest_range_advises_only_what_params_allow():
    """1e-30 to 1000, the bounds params allow: "lower lr_find.start_lr or raise lr_find.end_lr"
    was advised, and params refuses either."""
    raw = 2.3 + 0.05 * np.random.default_rng(2).standard_normal(20)
    widest = LRFindConfig(start_lr=1e-30, end_lr=1000.0, num_iter=20)
    test = read_curve(exponential_lrs(1e-30, 1000.0, 20), recorded(raw), widest)
    with pytest.raises(TrainingError) as caught:
        test.require_descent()
    assert str(caught.value).endswith(
        "; test a longer or wider range (raise lr_find.num_iter) or set train.max_lr to a number"
    )


def test_the_advice_after_a_flat_curve_diverges_starts_below_its_lowest_loss_with_steps_as_dense_as_the_default():
    """1e-29 to 1000 in 16 steps, the lowest loss near lr 3e-6: the advice was to start at 0.1, a
    ten-thousandth of the divergence, and that range rose from its first step and failed alike.
    Advised to start at 3e-8 with num_iter kept at 16 (11 decades), lr_find found no descent again."""
    lrs = exponential_lrs(1e-29, 1000.0, 16)
    raw = [*(2.3 + 0.05 * np.random.default_rng(1).standard_normal(14)), 9.0, 2121.0]
    raw[9:14] = [x - 0.03 for x in raw[9:14]]  # a shallow dip, within the noise
    test = read_curve(lrs, recorded(raw), LRFindConfig(start_lr=1e-29, end_lr=1000.0, num_iter=16))
    with pytest.raises(TrainingError) as caught:
        test.require_descent()
    start, end, steps = advised_range(str(caught.value))
    assert start <= test.reading.lr_at_lowest / 100 * 1.05, (start, test.reading.lr_at_lowest)
    assert as_dense_as_the_default(start, end, steps)


def test_a_loss_that_is_not_finite_from_the_first_step_says_which_lr():
    # An inf loss gives inf gradients, which leave nan weights, hence nan losses, at the next steps.
    with pytest.raises(TrainingError) as caught:
        read_curve(exponential_lrs(1e-7, 0.1, 10), [float("inf")] + [float("nan")] * 9, LRFindConfig(num_iter=10))
    assert str(caught.value) == "lr_find: the loss is inf at the first step (lr 1e-07); lower lr_find.start_lr"


def steady_descent(steps):
    lrs = exponential_lrs(1e-4, 1.0, steps)
    return lrs, recorded(np.linspace(2.3, 1.0, steps))


def test_steepest_needs_17_steps_and_says_so():
    lrs, losses = steady_descent(17)
    test = read_curve(lrs, losses, LRFindConfig(start_lr=1e-4, end_lr=1.0, num_iter=17, pick="steepest"))
    assert test.max_lr is not None and test.max_lr == test.steepest_lr
    lrs, losses = steady_descent(16)
    with pytest.raises(TrainingError) as caught:
        read_curve(lrs, losses, LRFindConfig(start_lr=1e-4, end_lr=1.0, num_iter=16, pick="steepest"))
    assert str(caught.value) == (
        "lr_find.pick = 'steepest' needs at least 17 recorded steps, but lr_find.num_iter is 16; raise "
        "lr_find.num_iter to 17 or more or use lr_find.pick = 'valley'"
    )
    with pytest.raises(TrainingError) as caught:  # 20 steps asked for, the loss diverged at the 17th
        read_curve([*lrs, 2.0], [*losses, float("inf")], LRFindConfig(num_iter=20, pick="steepest"))
    assert str(caught.value) == (
        "lr_find.pick = 'steepest' needs at least 17 recorded steps, but the range test stopped after 16 "
        "(the loss diverged); lower lr_find.end_lr or use lr_find.pick = 'valley'"
    )
    # The other rules read a curve of any length.
    test = read_curve(lrs, losses, LRFindConfig(start_lr=1e-4, end_lr=1.0, num_iter=16, pick="valley"))
    assert test.max_lr == test.valley_lr and test.steepest_lr is None


def test_steepest_picks_where_the_loss_falls_fastest():
    # The loss drops at step 30: there the smoothed curve falls fastest.
    lrs = exponential_lrs(1e-6, 1.0, 60)
    test = read_curve(
        lrs, recorded([2.3] * 30 + [1.3] * 30), LRFindConfig(start_lr=1e-6, end_lr=1.0, num_iter=60, pick="steepest")
    )
    assert test.max_lr == lrs[30]


def test_min_loss_picks_where_the_loss_no_longer_falls_and_says_so():
    lrs = exponential_lrs(1e-7, 1.0, 100)
    test = read_curve(lrs, recorded(u_shaped_curve()), LRFindConfig(end_lr=1.0, pick="min_loss"))
    assert test.max_lr == test.lr_at_min_loss and test.past_descent and not test.at_range_end
    assert test.warnings == [
        f"the smoothed loss no longer falls at the chosen max_lr {test.max_lr:.3g}: training there sits at the edge "
        f"of divergence; lr_find.pick = 'min_loss_div10' ({test.max_lr / 10:.3g} on this curve) or 'steepest' "
        f"({test.steepest_lr:.3g} on this curve) or 'valley' ({test.valley_lr:.3g} on this curve) picks inside the "
        f"descent"
    ]


def test_min_loss_div10_between_two_steps_of_a_coarse_range_is_judged_by_the_step_before_it():
    """A linear range of 20 steps from 1e-4 to 1: min_loss_div10 picked 0.00527, between the first
    two steps, and was judged by the second, past the lowest: "the edge of divergence", with
    valley advised, which the next warning advised against. Trained there, it learned."""
    lrs = list(np.linspace(1e-4, 1.0, 20))
    smoothed = [5.03, 4.899, 5.767, 7.788, 10.245, 11.514, 11.775, 11.612, 11.158, 11.0, 10.586, 10.297, 9.887]
    smoothed += [9.526, 9.159, 8.826, 8.485, 8.172, 7.86, 7.563]  # as recorded on the small synthetic run
    config = LRFindConfig(start_lr=1e-4, end_lr=1.0, num_iter=20, step_mode="linear", pick="min_loss_div10")
    test = read_curve(lrs, smoothed, config)
    assert lrs[0] < test.max_lr < lrs[1] and not test.past_descent


def test_a_pick_where_the_loss_is_above_its_start_says_so():
    """valley over a linear range picked 0.632, where the smoothed loss was twice its start, with
    no warning, and training diverged."""
    lrs = list(np.linspace(1e-4, 1.0, 20))
    raw = [5.0, 3.0, 2.0, 1.5, 1.4, 1.6, 2.5, 4.0, 6.0, 8.0, 9.0, 9.5, 9.8, 9.9, 9.9, 10.0, 10.0, 10.1, 10.1, 10.2]
    test = read_curve(lrs, recorded(raw), LRFindConfig(start_lr=1e-4, end_lr=1.0, num_iter=20, step_mode="linear"))
    with_a_pick = dataclasses.replace(test, max_lr=lrs[12], past_descent=False, at_range_end=False)
    assert with_a_pick.warnings == [
        f"the smoothed loss at the chosen max_lr {lrs[12]:.3g} ({test.losses[12]:.3g}) is above the range's first "
        f"({test.losses[0]:.3g}): training there may diverge; lr_find.pick = 'valley' ({test.valley_lr:.3g} on this "
        f"curve) picks inside the descent"
    ]


def test_where_no_pick_rule_picks_inside_the_descent_none_is_advised():
    """Each warning named the other rules unchecked, and following one led to the other warning."""
    lrs = list(np.linspace(1e-4, 1.0, 20))
    raw = [5.0, 3.0, 2.0, 1.5, 1.4, 1.6, 2.5, 4.0, 6.0, 8.0, 9.0, 9.5, 9.8, 9.9, 9.9, 10.0, 10.0, 10.1, 10.1, 10.2]
    test = read_curve(lrs, recorded(raw), LRFindConfig(start_lr=1e-4, end_lr=1.0, num_iter=20, step_mode="linear"))
    rising = list(np.linspace(2.0, 5.0, 20))
    nowhere = dataclasses.replace(test, losses=rising, pick="min_loss", max_lr=lrs[7], past_descent=True)
    assert nowhere.warnings[0].endswith(
        "no pick rule picks inside the descent on this curve; test a range from lower LRs: set lr_find.start_lr to "
        "about 1e-07, lr_find.end_lr to about 1 and lr_find.num_iter to 117 or more with lr_find.step_mode = 'exp'"
    )


def test_a_pick_below_the_range_tested_says_so_and_not_that_it_sits_at_the_edge_of_divergence():
    """min_loss_div10 of a range narrower than a decade (0.05 to 0.09) picked 0.005, where nothing
    was recorded, and was called "the edge of divergence", with min_loss_div10 itself advised."""
    lrs = exponential_lrs(0.05, 0.09, 20)
    test = read_curve(lrs, recorded(np.linspace(5.0, 1.6, 20)), LRFindConfig(start_lr=0.05, end_lr=0.09, num_iter=20))
    assert test.max_lr < lrs[0] and not test.past_descent
    assert test.warnings == [
        f"the chosen max_lr {test.max_lr:.3g} lies below the range tested (lr 0.05 to 0.09), where the curve says "
        f"nothing of how training goes; test a range from below it: set lr_find.start_lr to about 1e-07, "
        f"lr_find.end_lr to about 0.09 and lr_find.num_iter to 100 or more"
    ]


@pytest.mark.parametrize(
    ("lr", "start_lr", "end_lr", "step_mode", "in_it"),
    [
        # 1e-7 to 0.1 in exponential steps: the last tenth of six decades starts at 10**-1.6 = 0.0251.
        (0.03, 1e-7, 0.1, "exp", True),
        (0.02, 1e-7, 0.1, "exp", False),
        (1e-5, 1e-7, 0.1, "exp", False),
        # In linear steps from 1 to 11 it starts after 10; on a log scale it would start at 8.6.
        (10.5, 1.0, 11.0, "linear", True),
        (10.0, 1.0, 11.0, "linear", False),
        (9.0, 1.0, 11.0, "linear", False),
    ],
)
def test_the_last_tenth_of_the_range_is_measured_on_its_own_scale(lr, start_lr, end_lr, step_mode, in_it):
    assert in_last_tenth(lr, LRFindConfig(start_lr=start_lr, end_lr=end_lr, step_mode=step_mode)) == in_it


def test_the_loss_falls_at_a_step_when_the_next_one_is_lower():
    lrs = [1e-4, 1e-3, 1e-2, 1e-1]
    assert loss_falls_at(1e-3, lrs, [2.0, 1.9, 1.8, 1.7])
    assert loss_falls_at(1e-2, lrs, [2.0, 1.9, 1.8, 1.7])  # the last step is the next one
    assert loss_falls_at(1e-1, lrs, [2.0, 1.9, 1.8, 1.7])  # the last step: falling into it
    assert not loss_falls_at(1e-1, lrs, [2.0, 1.9, 1.8, 1.85])
    assert not loss_falls_at(1e-3, lrs, [2.0, 1.9, 1.9, 1.7])  # level is not falling
    assert not loss_falls_at(1e-3, lrs, [2.0, 1.9, 2.0, 1.8])
    assert loss_falls_at(1.2e-3, lrs, [2.0, 1.9, 1.8, 1.9])  # the recorded step nearest the LR


def u_shaped_curve():
    """Flat, then a steady fall from step 20 to step 70, then a blow-up."""
    return [2.3] * 20 + list(np.linspace(2.3, 0.8, 50)) + list(np.linspace(0.9, 9.0, 30))


def test_valley_is_halfway_along_the_longest_descent():
    assert valley_index(u_shaped_curve()) == 44


def test_valley_is_the_middle_step_of_a_descent_with_one():
    assert valley_index([3.0, 2.0, 1.0, 0.5, 0.2, 5.0]) == 2
    assert valley_index([3.0, 3.0, 2.0, 1.0, 0.5, 0.2, 5.0]) == 3


def test_valley_ignores_a_noisy_blip_inside_the_descent():
    losses = u_shaped_curve()
    losses[40] = 5.0
    assert 40 <= valley_index(losses) <= 48


def longest_falling_chain_by_every_pair(losses: list[float]) -> int:
    """valley_index's rule spelled out over every pair of steps, to hold the fast one to."""
    length = [1] * len(losses)
    for later in range(len(losses)):
        for earlier in range(later):
            if losses[later] < losses[earlier]:
                length[later] = max(length[later], length[earlier] + 1)
    end = int(np.argmax(length))
    start = end - length[end] + 1
    return start + (end - start) // 2


def test_valley_is_the_pairwise_rules_on_noisy_and_tied_curves():
    rng = np.random.default_rng(0)
    for trial in range(200):
        losses = rng.normal(2, 1, int(rng.integers(1, 60)))
        losses = list(np.round(losses, 1) if trial % 2 else losses)  # rounded: equal losses, which do not fall
        assert valley_index(losses) == longest_falling_chain_by_every_pair(losses), losses


READ_A_MILLION_STEPS = """
import numpy as np
from cifar.config import LRFindConfig
from cifar.training.lr_find import read_curve
steps = 1_000_000
wave = 2.3 - 1.5 * np.sin(np.linspace(0, 2.5, steps))  # falls, then rises
test = read_curve(np.geomspace(1e-7, 0.1, steps).tolist(), wave.tolist(), LRFindConfig(pick="valley"))
print(test.reading.verdict)
"""


def test_a_curve_of_a_million_steps_is_read():
    """lr_find.num_iter: 100000 (1% of its cap) left lr_find, train and figures each reading the
    curve for 800 s: the valley rule compared every pair of steps."""
    # The timeout fails a regression here instead of stalling the suite.
    read = subprocess.run(
        [sys.executable, "-c", READ_A_MILLION_STEPS], cwd=REPO, timeout=300, capture_output=True, text=True
    )
    assert (read.returncode, read.stdout) == (0, "descent\n"), read.stderr


def small_range_test(capsys, **config):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )
    loader = DeviceLoader(synthetic_split(256, seed=0), 32, CPU, augmentation=AugmentConfig(), shuffle=True)
    test = range_test(cpu_recipe(lr_find=LRFindConfig(**config), train=TrainConfig(weight_decay=0.0)), model, loader)
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
        "min_loss": test.lr_at_min_loss,
        "min_loss_div10": test.lr_at_min_loss / 10,
        "steepest": test.steepest_lr,
        "valley": test.valley_lr,
    }[pick]
    assert test.max_lr == pytest.approx(expected) and test.pick == pick
    assert test.min_loss == min(test.losses)
    if pick == "valley":
        assert test.max_lr == test.valley_lr and not test.past_descent


@pytest.mark.parametrize(("step_mode", "spaced"), [("exp", np.geomspace), ("linear", np.linspace)])
def test_the_range_test_steps_num_iter_times_from_start_lr_to_end_lr(capsys, step_mode, spaced):
    test = small_range_test(capsys, start_lr=1e-4, end_lr=1e-2, num_iter=12, step_mode=step_mode)
    assert test.lrs == pytest.approx(spaced(1e-4, 1e-2, 12))


class RecordingModel(nn.Module):
    """small_range_test's model, recording the dtype of its outputs and the weights of each step."""

    def __init__(self, logit_scale=1.0):
        super().__init__()
        self.linear, self.logit_scale = nn.Linear(3 * 32 * 32, 10), logit_scale
        self.output_dtypes, self.weights = set(), []

    def forward(self, images):
        self.weights.append(self.linear.weight.detach().clone())
        logits = self.linear(images.flatten(1)) * self.logit_scale
        self.output_dtypes.add(logits.dtype)
        return logits


def bf16_range_test(model, capsys, optimizer="adam"):
    loader = DeviceLoader(synthetic_split(64, seed=0), 16, CPU, shuffle=True)
    config = LRFindConfig(start_lr=1e-6, end_lr=1e-3, num_iter=3)
    recipe = dataclasses.replace(
        cpu_recipe(lr_find=config, train=TrainConfig(weight_decay=0.0, optimizer=optimizer)), precision="bf16"
    )
    range_test(recipe, model, loader)
    assert capsys.readouterr().out == ""


def test_a_bf16_range_test_runs_the_model_in_bfloat16_as_training_does(capsys):
    torch.manual_seed(0)
    model = RecordingModel()
    bf16_range_test(model, capsys)
    assert model.output_dtypes == {torch.bfloat16}


def test_a_bf16_range_test_takes_every_step_as_training_does(capsys):
    # A loss near 1e34: finite, but not once multiplied by a loss scaler's 65,536, which would
    # skip the step. bf16 has float32's range: training scales no loss, nor may the range test.
    torch.manual_seed(0)
    model = RecordingModel(logit_scale=1e34)
    bf16_range_test(model, capsys, optimizer="sgd")
    assert len(model.weights) >= 2 and not torch.equal(model.weights[0], model.weights[1])


def without_descent(repro, tmp_path, max_lr):
    """A copy of the pipeline run whose range test steps through LRs too small to move the
    model (a flat curve), with train.max_lr as given."""
    root = copy_of(repro, tmp_path / "flat")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["lr_find"] |= {"start_lr": 1e-9, "end_lr": 2e-9, "num_iter": 10}
    params["train"]["max_lr"] = max_lr
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def test_without_a_descent_lr_find_stops_the_pipeline_before_train(repro, tmp_path):
    root = without_descent(repro, tmp_path, "find")
    lock, model = (root / "dvc.lock").read_text(), (root / paths.MODEL).read_bytes()
    result = dvc(root, "repro", check=False)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: lr_find found no descent: the loss fell by"), log
    assert "or set train.max_lr to a number" in errors[0]
    assert errors[0].endswith("not recorded as done (`dvc checkout --force` puts back the recorded ones)")
    assert "Running stage 'train'" not in log and (root / paths.MODEL).read_bytes() == model
    assert (root / "dvc.lock").read_text() == lock, "the failed lr_find was recorded as done"
    recorded = json.loads((root / paths.LR_FIND_METRICS).read_text())
    assert (recorded["descent"], recorded["rising"]) == (False, False) and "max_lr" not in recorded
    handed = json.loads((root / paths.MAX_LR_PICK).read_text())
    assert (handed["verdict"], handed["max_lr"]) == ("flat", None)
    refused = stage(root, "train", check=False)
    assert refused.returncode != 0 and (root / paths.MODEL).read_bytes() == model
    assert "the range test found no descent (its loss stayed flat), so there is no max_lr" in refused.stderr
    # figures ended in a TypeError (no pick to check the schedule against); the model it would
    # draw the curves of was trained with the range test's previous params.
    images = {path: (root / path).read_bytes() for path in (paths.LR_FINDER_IMAGE, paths.LOSS_IMAGE)}
    drawn = stage(root, "figures", check=False)
    assert drawn.returncode == 2 and drawn.stderr.strip().splitlines()[-1] == (
        f"error: {paths.MODEL}: train ran with lr_find.start_lr = 1e-07, but {paths.PARAMS} now says 1e-09; "
        "re-create it with `dvc repro train`"
    ), drawn.stderr
    assert images == {path: (root / path).read_bytes() for path in images}


def test_without_a_descent_a_fixed_max_lr_only_warns(repro, tmp_path):
    root = without_descent(repro, tmp_path, "find")
    # The max_lr the run's train stage ran at: figures checks the schedule it drew against it.
    trained_at = float(pd.read_csv(root / paths.LR_SCHEDULE)["lr"].max())
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["max_lr"] = trained_at
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = stage(root, "lr_find")
    assert "WARNING: lr_find found no descent" in result.stderr
    assert f"train runs at its fixed train.max_lr {trained_at:.3g}" in result.stderr
    assert json.loads((root / paths.LR_FIND_METRICS).read_text())["descent"] is False
    # figures draws the curve with nothing chosen (lr_find.json has no max_lr then), beside the
    # curves of a model trained with these params.
    stage(root, "train")
    stage(root, "figures")


def test_a_new_train_max_lr_reruns_lr_find(repro, tmp_path):
    """Whether a curve without a descent stops the pipeline depends on train.max_lr."""
    root = copy_of(repro, tmp_path / "fixed")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["max_lr"] = 0.002
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "train.max_lr" in json.dumps(json.loads(dvc(root, "status", "lr_find", "--json").stdout).get("lr_find"))


def test_a_pick_at_the_last_step_of_a_curve_still_falling_is_not_past_the_descent():
    """min_loss on a curve that had not turned picked its last step, and was warned both that the
    loss may not have turned and that it "no longer falls" there."""
    lrs = [1e-7 * 10 ** (6 * step / 39) for step in range(40)]
    losses = [2.3 - 0.4 * step / 39 for step in range(40)]
    assert loss_falls_at(lrs[-1], lrs, losses)
    assert not loss_falls_at(lrs[-1], lrs, [*losses[:-1], losses[-2] + 0.1])
