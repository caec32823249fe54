"""bench/gpu_report.py: its runs are valid params and its report says what the runs measured."""

import pytest

from bench.gpu_report import REPO, params_with, report, runs, without_repo
from cifar.config import parse_params


@pytest.mark.parametrize("small", [False, True])
def test_every_run_is_valid_params(small):
    for name, changes in runs(small).items():
        parse_params(params_with({"data.source": "/data/mirror.tar.xz"} | changes), source=name)


def result(accuracy, seconds_per_epoch, sha):
    return {
        "seconds": {"train": 30.0},
        "metrics": {
            "train": {"max_lr": 0.002},
            "evaluate": {"accuracy": accuracy, "flip_tta_accuracy": accuracy + 0.01},
            "speed": {"seconds_per_epoch": seconds_per_epoch, "first_epoch_seconds": 2.0},
            "model_sha256": sha,
        },
    }


def test_the_report_has_a_row_per_run_the_seed_spread_and_the_cost_of_determinism():
    results = {
        "default-seed-0": result(0.90, 0.33, "a"),
        "default-seed-0-again": result(0.90, 0.33, "a"),
        "default-seed-1": result(0.89, 0.33, "b"),
        "default-seed-2": result(0.91, 0.33, "c"),
        "nondeterministic": result(0.90, 0.30, "d"),
    }
    text = report(
        results,
        "| approach | ... |",
        {"device": "GPU", "torch": "2.x", "cuda": "13", "python": "3.12", "data": "m", "small": False, "jobs": 1},
    )
    assert "| default-seed-1 | 0.002 | 0.8900 | 0.9000 | 0.330 | 2.00 | train 30.0 |" in text
    assert "test accuracy 0.9000 ± 0.0100" in text
    assert "model.pt of two seed-0 runs identical" in text
    assert "0.330 vs 0.300 s/epoch (+10.0%)" in text
    assert "| approach | ... |" in text
    assert "not a solo timing" not in text


def test_runs_sharing_the_gpu_and_a_skipped_benchmark_are_said():
    environment = {
        "device": "GPU",
        "torch": "2.x",
        "cuda": "13",
        "python": "3.12",
        "data": "m",
        "small": False,
        "jobs": 5,
    }
    text = report({"default-seed-1": result(0.89, 0.5, "b")}, None, environment)
    assert "5 runs at a time shared the GPU: s/epoch below is not a solo timing." in text
    assert "## Benchmark" not in text


def test_stages_keep_wheels_on_pythonpath_but_not_this_checkout():
    assert without_repo(f"/tmp/site:{REPO}:{REPO}/::/opt/x") == "/tmp/site:/opt/x"
