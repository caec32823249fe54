"""The whole pipeline under `dvc repro`, on synthetic data, in a temporary git repository."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from cifar.dataset import load_split, split_digest
from cifar.models import load_trained
from cifar.reporting.explain import grad_cam, resolve_layers
from cifar.training.augment import normalize
from dvc_internals import resolved_pipeline
from pipeline_repo import SMALL_SYNTHETIC, dvc, environment, make_pipeline_repo, run, stage
from stages import paths

STAGES = ("download", "lr_find", "train", "evaluate", "figures", "explain")


def test_repro_runs_every_stage(repro):
    _, log = repro
    for name in STAGES:
        assert f"Running stage '{name}'" in log
    assert "See the graph with" not in log, "torch-lr-finder's stray print reached the stage log"


def test_second_repro_runs_nothing(repro):
    root, _ = repro
    lock = (root / "dvc.lock").read_text()
    again = dvc(root, "repro")
    assert "Running stage" not in again.stdout + again.stderr
    assert (root / "dvc.lock").read_text() == lock
    assert "up to date" in dvc(root, "status").stdout


def test_train_reports_quality_and_speed_apart_and_the_environment_outside_the_metrics(repro):
    root, _ = repro
    metrics = json.loads((root / paths.TRAIN_METRICS).read_text())
    lr_find = json.loads((root / paths.LR_FIND_METRICS).read_text())
    # train ran at the pick lr_find handed it, the one its metrics record.
    handed = json.loads((root / paths.MAX_LR_PICK).read_text())
    assert (handed["verdict"], handed["max_lr"]) == ("descent", lr_find["max_lr"]) == ("descent", metrics["max_lr"])
    # and the digest of the curve figures draws
    assert handed["curve_sha256"] == hashlib.sha256((root / paths.LR_FIND_CURVE).read_bytes()).hexdigest()
    # and of the training split it ran on
    assert handed["train_sha256"] == split_digest(root / paths.DATA, "train")
    # The quality metrics are the history's last row and its best epoch.
    history = pd.read_csv(root / paths.HISTORY)
    last, best = history.iloc[-1], history.loc[history["test_accuracy"].idxmax()]
    assert (metrics["test_accuracy"], metrics["test_loss"]) == (last["test_accuracy"], last["test_loss"])
    assert (metrics["train_accuracy"], metrics["train_loss"]) == (last["train_accuracy"], last["train_loss"])
    assert (metrics["best_test_accuracy"], metrics["best_epoch"]) == (best["test_accuracy"], best["epoch"])
    assert metrics["test_accuracy"] > 0.5 and metrics["at_chance_level"] is False
    speed = json.loads((root / paths.SPEED_METRICS).read_text())
    assert speed["first_epoch_seconds"] == history["seconds"].iloc[0]
    assert speed["seconds_per_epoch"] == pytest.approx(history["seconds"].iloc[1:].mean())
    assert speed["images_per_second"] == pytest.approx(
        SMALL_SYNTHETIC["data"]["train_limit"] / speed["seconds_per_epoch"]
    )
    # Metrics are numbers worth diffing; strings describing the machine live beside the model.
    for path in (paths.TRAIN_METRICS, paths.SPEED_METRICS, paths.EVALUATE_METRICS, paths.LR_FIND_METRICS):
        assert all(isinstance(v, (int, float)) for v in json.loads((root / path).read_text()).values()), path
    environment = json.loads((root / paths.TRAIN_ENVIRONMENT).read_text())
    assert environment["device"].startswith("cpu") and environment["torch"] and environment["deterministic"] is True


def test_history_and_schedule_have_a_row_per_epoch_and_step(repro):
    root, _ = repro
    history = pd.read_csv(root / paths.HISTORY)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr"} <= set(history.columns)
    schedule = pd.read_csv(root / paths.LR_SCHEDULE)
    max_lr = json.loads((root / paths.TRAIN_METRICS).read_text())["max_lr"]
    steps_per_epoch = SMALL_SYNTHETIC["data"]["train_limit"] // SMALL_SYNTHETIC["train"]["batch_size"]
    assert len(schedule) == 3 * steps_per_epoch
    assert schedule["lr"].iloc[0] == pytest.approx(max_lr / 100)
    assert schedule["lr"].iloc[steps_per_epoch - 1] == pytest.approx(max_lr)
    assert schedule["lr"].iloc[-1] == pytest.approx(max_lr / 100 / 100)
    assert (schedule["lr"] > 0).all()


def test_lr_finder_curve_and_pictures_are_written(repro):
    root, _ = repro
    curve = pd.read_csv(root / paths.LR_FIND_CURVE)
    assert len(curve) == SMALL_SYNTHETIC["lr_find"]["num_iter"] and curve["lr"].is_monotonic_increasing
    figures = (
        paths.LR_FINDER_IMAGE,
        paths.SAMPLES_IMAGE,
        paths.LOSS_IMAGE,
        paths.ACCURACY_IMAGE,
        paths.LR_SCHEDULE_IMAGE,
        paths.CONFUSION_IMAGE,
        paths.PER_CLASS_IMAGE,
        paths.MISCLASSIFIED_IMAGE,
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
        "error: params.yaml: train.batch_size = 0 is not allowed; expected an integer from 1 to 50000, the train "
        "split's size"
    )
    assert not (root / "data").exists()


def test_evaluate_accuracy_is_the_fraction_correct_in_the_confusion_csv(repro):
    root, log = repro
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
    # The figures stage says when the gallery holds fewer than evaluate.misclassified (20), and only then.
    assert (
        f"only {metrics['misclassified']} misclassified test images, fewer than evaluate.misclassified = 20" in log
    ) == (metrics["misclassified"] < 20)


def class_probabilities(root, split, mirrored=False):
    """The saved model's class probabilities for every image of split, computed here."""
    model = load_trained(root / paths.MODEL, torch.device("cpu")).model
    images = normalize(torch.from_numpy(split.images))
    with torch.no_grad():
        return model(images.flip(3) if mirrored else images).softmax(1)


def test_predictions_artifact_matches_the_confusion_csv_and_the_model(repro):
    root, _ = repro
    predictions = pd.read_csv(root / paths.PREDICTIONS)
    confusion = pd.read_csv(root / paths.CONFUSION)
    test = load_split(root / paths.DATA, "test")
    assert list(predictions.columns) == ["index", "label", "predicted", "confidence"]
    assert predictions["index"].tolist() == list(range(len(test))) and (predictions["label"] == test.labels).all()
    names = np.array(test.classes)
    assert (names[predictions["label"]] == confusion["actual"]).all()
    assert (names[predictions["predicted"]] == confusion["predicted"]).all()
    # Each row is the saved model's answer for that image: its top class and that class's probability.
    confidence, predicted = class_probabilities(root, test).max(dim=1)
    assert (predictions["predicted"].to_numpy() == predicted.numpy()).all()
    np.testing.assert_allclose(predictions["confidence"].to_numpy(), confidence.numpy(), rtol=1e-4)
    # Beside it, its digest in the line sha256sum writes: `sha256sum -c` in their folder checks it.
    digest = root / paths.PREDICTIONS_DIGEST
    checked = subprocess.run(["sha256sum", "--check", "--strict", digest.name], cwd=digest.parent, capture_output=True)
    assert checked.returncode == 0, checked.stderr


def test_grad_cam_maps_have_the_image_size_vary_and_depend_on_the_class(repro):
    root, _ = repro
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
    root, _ = repro
    written = sorted(p.name for p in (root / paths.GRADCAM_IMAGES).iterdir())
    assert written == ["layer2_correct.png", "layer2_predicted.png", "layer3_correct.png", "layer3_predicted.png"]
    for image in (paths.MISCLASSIFIED_IMAGE, *(f"{paths.GRADCAM_IMAGES}/{n}" for n in written)):
        with Image.open(root / image) as picture:
            assert picture.format == "PNG"


def test_a_bad_layer_name_fails_with_the_valid_names_before_any_work(repro, tmp_path):
    source, _ = repro
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
    source, _ = repro
    root = tmp_path / "tta"
    shutil.copytree(source, root, symlinks=True)
    ran = dvc(root, "exp", "run", "-S", "evaluate.tta=true")
    assert "Running stage 'evaluate'" in ran.stdout and "Running stage 'train'" not in ran.stdout
    metrics = json.loads((root / paths.EVALUATE_METRICS).read_text())
    test = load_split(root / paths.DATA, "test")
    averaged = (class_probabilities(root, test) + class_probabilities(root, test, mirrored=True)) / 2
    assert metrics["flip_tta_accuracy"] == pytest.approx((averaged.argmax(1).numpy() == test.labels).mean())
    assert metrics["accuracy"] == json.loads((source / paths.EVALUATE_METRICS).read_text())["accuracy"]
    assert "flip_tta_accuracy" not in json.loads((source / paths.EVALUATE_METRICS).read_text())


def test_a_failed_trains_outputs_give_way_to_the_recorded_ones_with_dvc_checkout_force(repro, tmp_path):
    """train's and docs/pipeline.md's way back after a run that failed with its outputs kept for
    inspection: DVC has not cached them, and a plain `dvc checkout` leaves them in place."""
    source, _ = repro
    root = tmp_path / "failed"
    shutil.copytree(source, root, symlinks=True)
    recorded = {path: (root / path).read_bytes() for path in (paths.MODEL, paths.TRAIN_METRICS)}
    run_recorded = {name: (root / name).read_bytes() for name in (paths.PARAMS, "dvc.lock")}
    params = yaml.safe_load((root / paths.PARAMS).read_text())
    params["train"]["max_lr"] = 1e-9  # too small to move the weights: the model stays at chance
    (root / paths.PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))
    failed = dvc(root, "repro", check=False)
    assert failed.returncode != 0 and "is not above chance" in failed.stderr, failed.stdout + failed.stderr
    assert "outputs are written for inspection" in failed.stderr and "`dvc checkout --force` puts back" in failed.stderr
    assert (root / paths.MODEL).read_bytes() != recorded[paths.MODEL]
    for name, content in run_recorded.items():  # as `git checkout params.yaml dvc.lock` would
        (root / name).write_bytes(content)
    dvc(root, "checkout", check=False)
    assert (root / paths.MODEL).read_bytes() != recorded[paths.MODEL], "dvc checkout replaced uncached outputs"
    dvc(root, "checkout", "--force")
    assert {path: (root / path).read_bytes() for path in recorded} == recorded
    assert "up to date" in dvc(root, "status").stdout


def test_dvc_plots_show_finds_every_declared_plot(repro):
    """The fast tier's check of `dvc plots show` (the full tier renders it in a browser)."""
    root, _ = repro
    shown = json.loads(dvc(root, "plots", "show", "--json").stdout)["data"]
    pipeline = resolved_pipeline(root)
    # An entry is a path, or a path with its options.
    entries = [
        *pipeline["plots"],
        *(entry for stage in pipeline["stages"].values() for entry in stage.get("plots", [])),
    ]
    declared = {entry if isinstance(entry, str) else next(iter(entry)) for entry in entries}
    gradcam = {name for name in shown if name.startswith(paths.GRADCAM_IMAGES + "/")}
    assert set(shown) == (declared - {paths.GRADCAM_IMAGES}) | gradcam and gradcam
    assert all(not any("error" in item for item in rendered) for rendered in shown.values())


@pytest.mark.parametrize(
    ("library", "stage", "content"),
    [
        ("yaml", "download", ""),
        ("numpy", "evaluate", ""),
        ("zlib", "download", ""),
        ("tqdm", "evaluate", ""),
        ("random", "evaluate", ""),
        ("tqdm", "figures", "raise RuntimeError('needs its input file')"),
        ("torch", "train", "raise SystemExit(0)"),
        ("matplotlib", "lr_find", "syntax error"),
        ("random", "evaluate", None),
    ],
)
def test_a_file_named_like_a_library_is_named_in_one_line(repro, tmp_path, library, stage, content):
    """An empty yaml.py on PYTHONPATH ended download in "module 'yaml' has no attribute
    'MarkedYAMLError'", a numpy.py evaluate in a traceback from pandas' import, a zlib.py
    (the standard library's, built as lib-dynload/zlib*.so) download in one from tarfile's, a
    random.py (loaded before the stage's own hook) evaluate in an ImportError; a tqdm.py, with
    a TQDM_* setting, was reported as a setting tqdm cannot use. One that raised ended the
    stage in its traceback, one that exits 0 ended train with exit 0 and nothing trained;
    PYTHONPATH set to numpy's own folder, an ImportError from its typing, a circular import."""
    root, _ = repro
    if content is None:  # PYTHONPATH=site-packages/numpy, whose numpy.random is not the random module
        folder = os.path.dirname(np.__file__)
        namesake = os.path.join(folder, library, "__init__.py")
    else:
        folder, namesake = tmp_path, tmp_path / f"{library}.py"
        namesake.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", f"stages.{stage}"],
        cwd=root,
        env=environment(root) | {"PYTHONPATH": str(folder), "TQDM_MININTERVAL": "1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(
        f"error: {stage} would import {library!r} from {namesake}, which hides this environment's ("
    )
    assert result.stderr.endswith(
        "); rename or remove it (a file or folder named like a library, on PYTHONPATH or in the working folder)\n"
    )


def test_a_stage_is_named_however_python_is_given_it(repro, tmp_path):
    """`python -mstages.evaluate` (the module joined to -m) ended in "ValueError: '-m' is not
    in list"; a PYTHONPATH entry that is a named pipe kept every stage waiting (importlib's
    metadata, asked by pydantic, opened it as a zip)."""
    root, _ = repro
    os.mkfifo(tmp_path / "pipe")
    result = subprocess.run(
        [sys.executable, "-mstages.evaluate"],
        cwd=root,
        env=environment(root) | {"PYTHONPATH": str(tmp_path / "pipe")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert (result.returncode, result.stderr) == (
        2,
        f"error: the import path entry {tmp_path / 'pipe'} is neither a folder nor a file, and Python waits on "
        "reading it; take it off PYTHONPATH\n",
    )
    bare = subprocess.run(
        [sys.executable, "-B", "-mstages.evaluate"],
        cwd=root,
        env=environment(root) | {"TQDM_NCOLS": "1000000000"},
        capture_output=True,
        text=True,
    )
    assert bare.stderr.startswith("error: tqdm cannot use its environment (TQDM_NCOLS)"), bare.stderr


def test_a_stage_outside_the_projects_environment_says_so_in_one_line(tmp_path):
    """`.venv/bin/dvc repro` from a shell whose `python` lacks the packages: DVC runs that
    `python`, and every stage ends in one line that says how to run it, not a traceback."""
    root = make_pipeline_repo(tmp_path / "pipeline", SMALL_SYNTHETIC)
    bare = tmp_path / "bare"
    venv.create(bare, symlinks=True)  # the standard library only, as a system Python may be
    bare_python = bare / "bin" / "python"
    for name in STAGES:
        result = run(root, str(bare_python), "-m", f"stages.{name}", check=False)
        assert result.returncode == 2, name
        assert result.stderr.startswith(f"error: {bare_python} has no module '") and result.stderr.count("\n") == 1, (
            result.stderr
        )
        assert "source .venv/bin/activate" in result.stderr and "scripts/run.sh" in result.stderr
    environment_without_venv = environment(root) | {"PATH": f"{bare / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    repro = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"], cwd=root, env=environment_without_venv, capture_output=True, text=True
    )
    assert repro.returncode != 0
    assert f"error: {bare_python} has no module " in repro.stderr and "Traceback" not in repro.stdout + repro.stderr
    assert not (root / paths.DATA).exists()
