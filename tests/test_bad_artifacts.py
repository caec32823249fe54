"""Bad artifacts and failed writes, built on the fly: each is refused with one line naming
the problem and the fix (or, for leftovers, cleaned up), and the previous outputs stay
byte for byte as they were."""

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

import stages.evaluate
import stages.explain
from cifar.atomic import atomic_path, remove_stale_scratch, write_csv, write_json
from cifar.cli import run_stage
from cifar.config import ModelConfig
from cifar.dataset import Split, save_dataset
from cifar.errors import DataError, OutputError
from cifar.models import build_model, load_trained, save_trained
from cifar.sources import synthetic_split
from generated import CPU
from pipeline_repo import REPO, SMALL_SYNTHETIC, copy_pipeline, default_params, merge, stage, workspace_digests
from stages import paths


def predictions_of(test: Split, wrong: int) -> pd.DataFrame:
    """predictions.csv as evaluate writes it, with the first `wrong` images misclassified."""
    predicted = test.labels.copy()
    predicted[:wrong] = (predicted[:wrong] + 1) % len(test.classes)
    return pd.DataFrame({"index": range(len(test)), "label": test.labels, "predicted": predicted, "confidence": 0.5})


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """What evaluate and explain read, small: params.yaml, a dataset, an untrained model and its
    predictions; and files standing for their previous outputs."""
    root = tmp_path_factory.mktemp("artifacts")
    params = merge(default_params(), SMALL_SYNTHETIC | {"explain": {"images": 4}})
    (root / paths.PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))
    test = synthetic_split(20, seed=1)
    save_dataset({"train": synthetic_split(20, seed=0), "test": test}, root / paths.DATA)
    torch.manual_seed(0)
    save_trained(root / paths.MODEL, build_model(ModelConfig()), ModelConfig(), test.classes)
    write_csv(root / paths.PREDICTIONS, predictions_of(test, wrong=5))
    write_json(root / paths.EVALUATE_METRICS, {"accuracy": 0.5, "loss": 1.5, "misclassified": 10})
    (root / paths.GRADCAM_IMAGES).mkdir(parents=True)
    (root / paths.GRADCAM_IMAGES / "layer3_correct.png").write_bytes(b"previous grid")
    return root


@pytest.fixture
def workspace(artifacts, tmp_path, monkeypatch) -> Path:
    """A copy of the artifacts as the current directory, for a stage's main to run in."""
    root = shutil.copytree(artifacts, tmp_path / "workspace")
    monkeypatch.chdir(root)
    # Stages set process-wide torch flags; later tests must not inherit them.
    deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    yield root
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def outputs(root: Path) -> dict[str, dict[str, str]]:
    """Every file in the folders the stages write, by content."""
    return {folder: workspace_digests(root / folder) for folder in paths.output_folders()}


KILLED_MID_WRITE = f"""
import os, signal
from cifar.atomic import atomic_path
with atomic_path({paths.MODEL!r}) as temporary:
    temporary.write_bytes(b"half a model")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_write_killed_midway_leaves_ignored_scratch_that_the_next_stage_run_removes(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    models = Path(paths.MODEL).parent
    models.mkdir()
    Path(paths.MODEL).write_bytes(b"previous model")
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE], env=os.environ | {"PYTHONPATH": str(REPO)})
    assert killed.returncode == -signal.SIGKILL
    assert Path(paths.MODEL).read_bytes() == b"previous model"
    leftover, = (path for path in models.iterdir() if path != Path(paths.MODEL))
    assert leftover.name.startswith(f".{Path(paths.MODEL).name}.partial-")
    assert subprocess.run(["git", "check-ignore", "-q", str(leftover)], cwd=REPO).returncode == 0

    caplog.set_level(logging.INFO)
    run_stage(lambda: None, [models])
    assert not leftover.exists()
    assert caplog.messages == [f"removed {leftover}, left by an interrupted write"]
    assert Path(paths.MODEL).read_bytes() == b"previous model"


def test_the_scratch_of_a_write_in_progress_is_kept(tmp_path):
    with atomic_path(tmp_path / "model.pt") as temporary:
        temporary.write_bytes(b"in progress")
        assert remove_stale_scratch([tmp_path]) == []
    assert (tmp_path / "model.pt").read_bytes() == b"in progress"


def onto_a_full_disk(monkeypatch, owner, writer: str, path_argument: int) -> None:
    """Make owner.writer write to /dev/full, where every write fails as on a full disk."""
    real = getattr(owner, writer)

    def write(*arguments, **options):
        Path(arguments[path_argument]).symlink_to("/dev/full")
        return real(*arguments, **options)

    monkeypatch.setattr(owner, writer, write)


def save_model(parameters: int) -> None:
    save_trained(paths.MODEL, nn.Linear(parameters, 1), ModelConfig(), ("a", "b"))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    ("target", "owner", "writer", "path_argument", "write", "detail"),
    [
        # torch reports the same failure in two ways, depending on the file's size.
        (paths.MODEL, torch, "save", 1, lambda: save_model(10), " (torch: basic_ios::clear: iostream error)"),
        (paths.MODEL, torch, "save", 1, lambda: save_model(10_000), " (torch: [enforce fail at inline_container.cc:"),
        (paths.EVALUATE_METRICS, Path, "write_text", 0, lambda: write_json(paths.EVALUATE_METRICS, {"loss": 1.0}), ""),
    ],
)
def test_a_full_disk_fails_in_one_line_and_keeps_the_previous_output(
    tmp_path, monkeypatch, target, owner, writer, path_argument, write, detail
):
    monkeypatch.chdir(tmp_path)
    Path(target).parent.mkdir()
    Path(target).write_bytes(b"previous")
    onto_a_full_disk(monkeypatch, owner, writer, path_argument)
    with pytest.raises(OutputError) as refused:
        write()
    message = str(refused.value)
    assert message.startswith(f"disk full while writing {target}{detail}") and message.endswith("; free space and re-run")
    assert "\n" not in message
    assert [path.name for path in Path(target).parent.iterdir()] == [Path(target).name]
    assert Path(target).read_bytes() == b"previous"


def test_write_json_refuses_nan_and_infinity_and_keeps_the_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"loss": 1.5})
    for value in (float("nan"), float("inf")):
        with pytest.raises(OutputError) as refused:
            write_json(target, {"loss": value})
        assert str(refused.value) == (
            f"{target}: not written, as JSON cannot store the NaN or infinity in {{'loss': {value}}}; the stage "
            f"computed a broken number: re-run it once its cause (a diverged model, bad data) is fixed"
        )
    assert target.read_text() == '{\n  "loss": 1.5\n}\n'
    assert list(tmp_path.iterdir()) == [target]


def with_fc_weight(value: float) -> None:
    """Set every weight of the saved model's classifier to value."""
    payload = torch.load(paths.MODEL, weights_only=True)
    payload["state_dict"]["fc.weight"].fill_(value)
    torch.save(payload, paths.MODEL)


@pytest.mark.parametrize(
    ("weight", "message"),
    [
        (float("nan"), f"{paths.MODEL}: the weights hold NaN or infinity (first in fc.weight); "
                       "the run that saved them diverged: re-create it with `dvc repro train`"),
        # Finite, but too large for the logits: the loss is not finite.
        (1e38, f"{paths.MODEL}: the test loss on {paths.DATA} is nan, as the model's outputs are not finite; "
               "re-create it with `dvc repro train`"),
    ],
)
def test_evaluate_refuses_non_finite_weights_or_loss_and_keeps_its_previous_outputs(workspace, weight, message):
    with_fc_weight(weight)
    before = outputs(workspace)
    with pytest.raises(DataError) as refused:
        stages.evaluate.main()
    assert str(refused.value) == message
    assert outputs(workspace) == before


def write_python_object(path):
    torch.save({"model": ModelConfig(), "classes": ["a", "b"], "state_dict": {}}, path)


def write_unknown_model(path):
    torch.save({"model": {"name": "vgg", "norm": "batch"}, "classes": ["a", "b"], "state_dict": {}}, path)


def write_another_models_weights(path):
    save_trained(path, nn.Linear(2, 2), ModelConfig(), ("a", "b"))


@pytest.mark.parametrize(
    ("write_model", "why"),
    [
        (write_unknown_model, "(unknown model 'vgg')"),
        (write_python_object, "(damaged, or holding Python objects, which are never loaded as they could run code)"),
        (Path.touch, "(unreadable or truncated: EOFError)"),
        (write_another_models_weights, "(Error(s) in loading state_dict for CustomResNet: Missing key(s) in state_dict:"),
    ],
)
def test_a_file_that_is_no_trained_model_is_refused_in_one_line_never_suggesting_unsafe_loading(tmp_path, write_model, why):
    path = tmp_path / "model.pt"
    write_model(path)
    with pytest.raises(DataError) as refused:
        load_trained(path, CPU)
    message = str(refused.value)
    assert message.startswith(f"{path}: not a model saved by the train stage {why}")
    assert message.endswith("; re-create it with `dvc repro train`")
    assert "\n" not in message and "weights_only" not in message


def with_first(column: str, value):
    """The CSV text of the predictions with the first row's column set to value."""
    def damage(frame: pd.DataFrame) -> str:
        frame = frame.astype({column: object})
        frame.loc[0, column] = value
        return frame.to_csv(index=False)
    return damage


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda frame: "", "unreadable (No columns to parse from file)"),
        (lambda frame: frame.drop(columns="predicted").to_csv(index=False), "no column predicted"),
        (lambda frame: frame.iloc[:-1].to_csv(index=False), "19 rows for a test split of 20 images"),
        (with_first("index", 25), "column index holds 1..25, beyond the 20 test images (0..19)"),
        (with_first("label", 10), "column label holds 0..10, beyond the 10 classes (0..9)"),
        (with_first("predicted", -1), "column predicted holds -1..9, beyond the 10 classes (0..9)"),
        (with_first("label", 1.5), "column label holds non-integers"),
        (with_first("confidence", "high"), "column confidence holds non-numbers"),
    ],
)
def test_explain_refuses_bad_predictions_in_one_line_and_keeps_its_previous_grids(workspace, damage, problem):
    Path(paths.PREDICTIONS).write_text(damage(pd.read_csv(paths.PREDICTIONS)))
    before = outputs(workspace)
    with pytest.raises(DataError) as refused:
        stages.explain.main()
    assert str(refused.value) == f"{paths.PREDICTIONS}: {problem}; re-create it with `dvc repro evaluate`"
    assert outputs(workspace) == before


def test_with_no_misclassified_images_explain_says_so_and_explains_the_least_confident_correct_ones(workspace, caplog):
    write_csv(paths.PREDICTIONS, predictions_of(synthetic_split(20, seed=1), wrong=0))
    caplog.set_level(logging.INFO)
    stages.explain.main()
    assert caplog.messages == [
        "no misclassified test images: explaining the 4 least confident correct predictions instead",
        f"wrote Grad-CAM grids of 4 least confident correct predictions at layer2, layer3 to {paths.GRADCAM_IMAGES}",
    ]
    # Their predicted class is the correct one: one grid per layer, none left of the previous run.
    assert sorted(path.name for path in Path(paths.GRADCAM_IMAGES).iterdir()) == ["layer2_correct.png", "layer3_correct.png"]


def name_an_unknown_model():
    write_unknown_model(paths.MODEL)


def index_beyond_the_test_split():
    Path(paths.PREDICTIONS).write_text(with_first("index", 20)(pd.read_csv(paths.PREDICTIONS)))


@pytest.mark.parametrize(
    ("damage", "failing_stage", "message"),
    [
        (name_an_unknown_model, "evaluate",
         f"{paths.MODEL}: not a model saved by the train stage (unknown model 'vgg'); re-create it with `dvc repro train`"),
        (index_beyond_the_test_split, "explain",
         f"{paths.PREDICTIONS}: column index holds 1..20, beyond the 20 test images (0..19); "
         "re-create it with `dvc repro evaluate`"),
    ],
)
def test_a_stage_given_a_bad_artifact_exits_2_with_one_line_on_stderr(workspace, damage, failing_stage, message):
    copy_pipeline(workspace)
    damage()
    before = outputs(workspace)
    result = stage(workspace, failing_stage, check=False)
    assert (result.returncode, result.stderr.splitlines()) == (2, [f"error: {message}"])
    assert outputs(workspace) == before
