"""The whole pipeline under `dvc repro`, on synthetic data, in a temporary git repository."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from cifar.dataset import load_split
from cifar.explain import grad_cam, resolve_layers
from cifar.models import load_trained
from pipeline_repo import SMALL_SYNTHETIC, dvc, make_pipeline_repo, stage
from stages import paths

STAGES = ("download", "lr_find", "train", "evaluate", "figures", "explain")


def test_repro_runs_every_stage(repro):
    _, log, _ = repro
    for name in STAGES:
        assert f"Running stage '{name}'" in log
    assert "See the graph with" not in log, "torch-lr-finder's stray print reached the stage log"


def test_second_repro_runs_nothing(repro):
    root, _, _ = repro
    lock = (root / "dvc.lock").read_text()
    again = dvc(root, "repro")
    assert "Running stage" not in again.stdout + again.stderr
    assert (root / "dvc.lock").read_text() == lock
    assert "up to date" in dvc(root, "status").stdout


def test_train_reports_quality_and_speed_apart_and_the_environment_outside_the_metrics(repro):
    root, _, _ = repro
    metrics = json.loads((root / paths.TRAIN_METRICS).read_text())
    lr_find = json.loads((root / paths.LR_FIND_METRICS).read_text())
    assert metrics["max_lr"] == lr_find["max_lr"]
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_loss"] > 0
    assert metrics["best_test_accuracy"] >= metrics["test_accuracy"]
    assert metrics["test_accuracy"] > 0.5 and metrics["at_chance_level"] is False
    speed = json.loads((root / paths.SPEED_METRICS).read_text())
    assert set(speed) == {"seconds_per_epoch", "first_epoch_seconds", "images_per_second"}
    assert all(value > 0 for value in speed.values())
    # Metrics are numbers worth diffing; strings describing the machine live beside the model.
    for path in (paths.TRAIN_METRICS, paths.SPEED_METRICS, paths.EVALUATE_METRICS, paths.LR_FIND_METRICS):
        assert all(isinstance(v, (int, float)) for v in json.loads((root / path).read_text()).values()), path
    environment = json.loads((root / paths.TRAIN_ENVIRONMENT).read_text())
    assert environment["device"].startswith("cpu") and environment["torch"] and environment["deterministic"] is True


def test_history_and_schedule_have_a_row_per_epoch_and_step(repro):
    root, _, _ = repro
    history = pd.read_csv(root / paths.HISTORY)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr"} <= set(history.columns)
    schedule = pd.read_csv(root / paths.LR_SCHEDULE)
    max_lr = json.loads((root / paths.TRAIN_METRICS).read_text())["max_lr"]
    steps_per_epoch = 384 // 64
    assert len(schedule) == 3 * steps_per_epoch
    assert schedule["lr"].iloc[0] == pytest.approx(max_lr / 100)
    assert schedule["lr"].iloc[steps_per_epoch - 1] == pytest.approx(max_lr)
    assert schedule["lr"].iloc[-1] == pytest.approx(max_lr / 100 / 100)
    assert (schedule["lr"] > 0).all()


def test_lr_finder_curve_and_pictures_are_written(repro):
    root, _, _ = repro
    curve = pd.read_csv(root / paths.LR_FIND_CURVE)
    assert len(curve) == SMALL_SYNTHETIC["lr_find"]["num_iter"] and curve["lr"].is_monotonic_increasing
    figures = (
        paths.LR_FINDER_IMAGE, paths.SAMPLES_IMAGE, paths.LOSS_IMAGE, paths.ACCURACY_IMAGE, paths.LR_SCHEDULE_IMAGE,
        paths.CONFUSION_IMAGE, paths.PER_CLASS_IMAGE, paths.MISCLASSIFIED_IMAGE,
    )
    for figure in figures:
        with Image.open(root / figure) as picture:
            assert picture.format == "PNG" and picture.width > 300
    assert "Total params: 6,573,130" in (root / paths.MODEL_SUMMARY).read_text()


def test_bad_params_stop_the_stage_before_any_work(tmp_path):
    root = make_pipeline_repo(tmp_path / "bad", {"train": {"batch_size": 0}})
    result = stage(root, "download", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: params.yaml: train.batch_size = 0 is not allowed; expected an integer from 1 to 50000, the train split's size"
    )
    assert not (root / "data").exists()


def test_evaluate_accuracy_is_the_fraction_correct_in_the_confusion_csv(repro):
    root, log, _ = repro
    metrics = json.loads((root / paths.EVALUATE_METRICS).read_text())
    confusion = pd.read_csv(root / paths.CONFUSION)
    correct = confusion["actual"] == confusion["predicted"]
    assert len(confusion) == 160
    assert metrics["accuracy"] == pytest.approx(correct.mean())
    assert metrics["misclassified"] == (~correct).sum()
    # Per class: the CSV, the JSON and the confusion rows tell the same story.
    per_class = pd.read_csv(root / paths.PER_CLASS)
    assert per_class["images"].sum() == len(confusion) and per_class["correct"].sum() == correct.sum()
    for row in per_class.itertuples():
        rows = confusion["actual"] == row._1
        assert row.images == rows.sum() and row.correct == (rows & correct).sum()
        assert row.accuracy == pytest.approx(row.correct / row.images)
    train_metrics = json.loads((root / paths.TRAIN_METRICS).read_text())
    assert metrics["accuracy"] == pytest.approx(train_metrics["test_accuracy"])
    if metrics["misclassified"] < 20:
        assert f"only {metrics['misclassified']} misclassified test images" in log


def test_predictions_artifact_matches_the_confusion_csv(repro):
    root, _, _ = repro
    predictions = pd.read_csv(root / paths.PREDICTIONS)
    confusion = pd.read_csv(root / paths.CONFUSION)
    assert list(predictions.columns) == ["index", "label", "predicted", "confidence"]
    assert ((predictions["label"] == predictions["predicted"]) == (confusion["actual"] == confusion["predicted"])).all()
    assert predictions["confidence"].between(0.1, 1).all()


def test_grad_cam_maps_have_the_image_size_vary_and_depend_on_the_class(repro):
    root, _, _ = repro
    trained = load_trained(root / paths.MODEL, torch.device("cpu"))
    test = load_split(root / paths.DATA, "test")
    predictions = pd.read_csv(root / paths.PREDICTIONS)
    # Misclassified images first; a briefly trained model may make few errors, so its least
    # confident correct predictions fill up, explained against the next class instead.
    chosen = predictions.assign(wrong=predictions["label"] != predictions["predicted"])
    chosen = chosen.sort_values(["wrong", "confidence"], ascending=[False, True]).head(6)
    pixels = test.images[chosen["index"].to_numpy()]
    correct_class = chosen["label"].where(chosen["wrong"], (chosen["predicted"] + 1) % 10)
    for name, layer in resolve_layers(trained.model, "custom_resnet", None):
        predicted_maps, correct_maps = grad_cam(trained.model, layer, pixels, [chosen["predicted"], correct_class])
        assert predicted_maps.shape == correct_maps.shape == (6, 32, 32), name
        assert all(m.std() > 0 for m in predicted_maps), f"{name}: a constant Grad-CAM map"
        assert any(not np.allclose(a, b) for a, b in zip(predicted_maps, correct_maps)), name
    assert not any(module._forward_hooks for module in trained.model.modules()), "Grad-CAM hooks were left behind"


def test_explain_writes_both_grids_for_each_default_layer(repro):
    root, _, _ = repro
    written = sorted(p.name for p in (root / paths.GRADCAM_IMAGES).iterdir())
    assert written == ["layer2_correct.png", "layer2_predicted.png", "layer3_correct.png", "layer3_predicted.png"]
    for image in (paths.MISCLASSIFIED_IMAGE, *(f"{paths.GRADCAM_IMAGES}/{n}" for n in written)):
        with Image.open(root / image) as picture:
            assert picture.format == "PNG"


def test_a_bad_layer_name_fails_with_the_valid_names_before_any_work(repro, tmp_path):
    source, _, _ = repro
    root = tmp_path / "copy"
    shutil.copytree(source, root, symlinks=True)
    params = (root / "params.yaml").read_text().replace("layers: null", "layers: [layer2, layer9]")
    (root / "params.yaml").write_text(params)
    before = {p.name: p.stat().st_mtime_ns for p in (root / paths.GRADCAM_IMAGES).iterdir()}
    result = stage(root, "explain", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: explain.layers: 'layer9' is not a feature-map layer of custom_resnet; "
        "valid names: prep, layer1, layer2, layer3, or a module inside them such as 'prep.0'"
    )
    assert {p.name: p.stat().st_mtime_ns for p in (root / paths.GRADCAM_IMAGES).iterdir()} == before


def test_flip_tta_is_reported_as_its_own_metric(repro, tmp_path):
    source, _, _ = repro
    root = tmp_path / "tta"
    shutil.copytree(source, root, symlinks=True)
    ran = dvc(root, "exp", "run", "-S", "evaluate.tta=true")
    assert "Running stage 'evaluate'" in ran.stdout and "Running stage 'train'" not in ran.stdout
    metrics = json.loads((root / paths.EVALUATE_METRICS).read_text())
    assert 0 <= metrics["flip_tta_accuracy"] <= 1
    assert metrics["accuracy"] == json.loads((source / paths.EVALUATE_METRICS).read_text())["accuracy"]
    assert "flip_tta_accuracy" not in json.loads((source / paths.EVALUATE_METRICS).read_text())


def test_dvc_plots_show_finds_every_declared_plot(repro):
    """The fast tier's check of `dvc plots show` (the full tier renders it in a browser)."""
    root, _, _ = repro
    shown = json.loads(dvc(root, "plots", "show", "--json").stdout)["data"]
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    # An entry is a path, or a path with its options.
    entries = [*pipeline["plots"], *(entry for stage in pipeline["stages"].values() for entry in stage.get("plots", []))]
    declared = {entry if isinstance(entry, str) else next(iter(entry)) for entry in entries}
    gradcam = {name for name in shown if name.startswith(paths.GRADCAM_IMAGES + "/")}
    assert set(shown) == (declared - {paths.GRADCAM_IMAGES}) | gradcam and gradcam
    assert all(not any("error" in item for item in rendered) for rendered in shown.values())
