"""The LR range test's verdict on its own curve, its picks and its warnings, and what the
lr_find stage does without a descent."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from bench import lr_picks
from cifar.config import AugmentConfig, LRFindConfig, TrainConfig
from cifar.errors import TrainingError
from cifar.loader import DeviceLoader
from cifar.lr_find import SMOOTH_F, range_test, read_curve, valley_index
from cifar.sources import synthetic_split
from generated import CPU
from pipeline_repo import REPO, copy_of, dvc, stage
from stages import paths


def exponential_lrs(start, end, steps):
    """The LRs torch-lr-finder steps through with step_mode="exp"."""
    return list(start * (end / start) ** (np.arange(steps) / (steps - 1)))


# ResNet18 with GroupNorm, 5,000 images of the JPEG mirror, batch 512, 20 steps from 1e-7 to
# 0.1: the smoothed loss dips 1% and rises. The pick it used to give (3.36e-6) left training at chance.
GROUP_NORM_20 = [
    2.4528, 2.4526, 2.4510, 2.4510, 2.4491, 2.4456, 2.4421, 2.4355, 2.4309, 2.4361,
    2.4546, 2.4684, 2.4809, 2.4911, 2.5127, 2.5382, 2.5447, 2.5461, 2.5674, 2.6118,
]


def test_a_dip_within_the_noise_then_a_rise_is_no_descent():
    test = read_curve(exponential_lrs(1e-7, 0.1, 20), GROUP_NORM_20, LRFindConfig(num_iter=20))
    assert (test.reading.verdict, test.max_lr) == ("rising", None)
    assert test.no_descent == (
        "lr_find found no descent: the loss fell by 0.073 at most, from 2.45 to 2.38 near lr 7.85e-06 (medians of "
        "5 steps), less than 4 times its step-to-step noise of 0.053, then rose to 2.97 near lr 0.0234 "
        "(lr 1e-07 to 0.1 in 20 steps)"
    )
    with pytest.raises(TrainingError, match="raise lr_find.num_iter.* or set train.max_lr to a number$"):
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
        assert test.max_lr is None and test.no_descent.startswith("lr_find found no descent: the loss fell by 0.071 at most")
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


def test_noise_alone_seldom_reads_as_a_descent():
    rng = np.random.default_rng(0)
    lrs = exponential_lrs(1e-7, 0.1, 50)
    verdicts = [
        read_curve(lrs, pd.Series(2.3 + 0.05 * rng.standard_normal(50)).ewm(alpha=SMOOTH_F, adjust=False).mean().tolist(),
                   LRFindConfig(num_iter=50)).reading.verdict
        for _ in range(400)
    ]
    assert verdicts.count("descent") <= 2 and verdicts.count("flat") >= 390


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
        assert test.max_lr == test.valley_lr and not test.past_descent


def without_descent(repro, tmp_path, max_lr):
    """A copy of the pipeline run whose range test steps through LRs too small to move the
    model (a flat curve), with train.max_lr as given."""
    root = copy_of(repro, tmp_path / "flat")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["lr_find"] |= {"start_lr": 1e-9, "end_lr": 2e-9, "num_iter": 6}
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
    assert "Running stage 'train'" not in log and (root / paths.MODEL).read_bytes() == model
    assert (root / "dvc.lock").read_text() == lock, "the failed lr_find was recorded as done"
    recorded = json.loads((root / paths.LR_FIND_METRICS).read_text())
    assert (recorded["descent"], recorded["rising"]) == (False, False) and "max_lr" not in recorded
    refused = stage(root, "train", check=False)
    assert refused.returncode != 0 and (root / paths.MODEL).read_bytes() == model
    assert "the range test found no descent (its loss stayed flat), so there is no max_lr" in refused.stderr


def test_without_a_descent_a_fixed_max_lr_only_warns(repro, tmp_path):
    root = without_descent(repro, tmp_path, 0.002)
    result = stage(root, "lr_find")
    assert "WARNING: lr_find found no descent" in result.stderr
    assert "train runs at its fixed train.max_lr 0.002" in result.stderr
    assert json.loads((root / paths.LR_FIND_METRICS).read_text())["descent"] is False
    # figures draws the curve with nothing chosen (lr_find.json has no max_lr then).
    stage(root, "figures")


def test_a_new_train_max_lr_reruns_lr_find(repro, tmp_path):
    """Whether a curve without a descent stops the pipeline depends on train.max_lr."""
    root = copy_of(repro, tmp_path / "fixed")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["max_lr"] = 0.002
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "train.max_lr" in json.dumps(json.loads(dvc(root, "status", "lr_find", "--json").stdout).get("lr_find"))
