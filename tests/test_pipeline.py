"""The whole pipeline under `dvc repro`, on synthetic data, in a temporary git repository."""

import json
import time

import pandas as pd
import pytest
from PIL import Image

from pipeline_repo import SMALL_SYNTHETIC, dvc, make_pipeline_repo, run

STAGES = ("download", "lr_find", "train")


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    root = make_pipeline_repo(tmp_path_factory.mktemp("pipeline"), SMALL_SYNTHETIC)
    started = time.perf_counter()
    first = dvc(root, "repro")
    return root, first.stdout + first.stderr, time.perf_counter() - started


def test_repro_runs_every_stage_within_three_minutes(repro):
    _, log, seconds = repro
    for stage in STAGES:
        assert f"Running stage '{stage}'" in log
    assert seconds < 180, f"dvc repro took {seconds:.0f} s on synthetic data; the budget is 3 minutes"


def test_second_repro_runs_nothing(repro):
    root, _, _ = repro
    lock = (root / "dvc.lock").read_text()
    again = dvc(root, "repro")
    assert "Running stage" not in again.stdout + again.stderr
    assert (root / "dvc.lock").read_text() == lock
    assert "up to date" in dvc(root, "status").stdout


def test_train_metrics_report_accuracy_speed_and_environment(repro):
    root, _, _ = repro
    metrics = json.loads((root / "metrics/train.json").read_text())
    lr_find = json.loads((root / "metrics/lr_find.json").read_text())
    assert metrics["max_lr"] == lr_find["max_lr"]
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_loss"] > 0
    assert metrics["best_test_accuracy"] >= metrics["test_accuracy"]
    assert metrics["seconds_per_epoch"] > 0 and metrics["images_per_second"] > 0
    assert metrics["device"].startswith("cpu") and metrics["torch_version"]
    assert isinstance(metrics["at_chance_level"], bool)


def test_history_and_schedule_have_a_row_per_epoch_and_step(repro):
    root, _, _ = repro
    history = pd.read_csv(root / "plots/history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr"} <= set(history.columns)
    schedule = pd.read_csv(root / "plots/lr_schedule.csv")
    max_lr = json.loads((root / "metrics/train.json").read_text())["max_lr"]
    steps_per_epoch = 320 // 64
    assert len(schedule) == 2 * steps_per_epoch
    assert schedule["lr"].iloc[0] == pytest.approx(max_lr / 100)
    assert schedule["lr"].iloc[steps_per_epoch - 1] == pytest.approx(max_lr)
    assert schedule["lr"].iloc[-1] == pytest.approx(max_lr / 100 / 100)
    assert (schedule["lr"] > 0).all()


def test_lr_finder_curve_and_pictures_are_written(repro):
    root, _, _ = repro
    curve = pd.read_csv(root / "plots/lr_find.csv")
    assert len(curve) == 20 and curve["lr"].is_monotonic_increasing
    for image in ("plots/images/lr_finder.png", "plots/images/samples.png"):
        with Image.open(root / image) as picture:
            assert picture.format == "PNG" and picture.width > 300
    assert "Total params: 6,573,130" in (root / "models/summary.txt").read_text()


def test_bad_params_stop_the_stage_before_any_work(tmp_path):
    root = make_pipeline_repo(tmp_path / "bad", {"train": {"batch_size": 0}})
    result = run(root, "python", "stages/download.py", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: params.yaml: train.batch_size = 0 is not allowed; expected an integer >= 1"
    )
    assert not (root / "data").exists()
