"""Bad artifacts and failed writes, built on the fly: each is refused with one line naming
the problem and the fix (or, for leftovers, cleaned up), and the previous outputs stay
byte for byte as they were."""

import contextlib
import errno
import functools
import hashlib
import importlib
import io
import json
import logging
import os
import pwd
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import tracemalloc
import types
import weakref
import zipfile
from dataclasses import asdict
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

import cifar.cli
import stages.evaluate
import stages.explain
import stages.figures
import stages.lr_find
import stages.train
from cifar import config
from cifar.atomic import (
    SCRATCH_MARK,
    STOP_SIGNALS,
    atomic_path,
    remove_stale_scratch,
    replaced_together,
    save_figure,
    sha256sum_lines,
    signal_name,
    text_digest,
    write_json,
    write_text,
)
from cifar.cli import Stopped, install_stop_handlers, keep_state_at_start, run_stage
from cifar.config import ModelConfig, load_params
from cifar.dataset import Split, load_split, save_dataset, split_digest
from cifar.errors import ConfigError, DataError, OutputError, one_line, short_repr
from cifar.ingest.sources import synthetic_split
from cifar.models import build_model, load_trained, save_trained
from cifar.params_file import declared_values
from cifar.reporting.plots import misclassified_figure
from cifar.reporting.predictions import first_misclassified, load_predictions
from cifar.training import engine
from cifar.training.checkpoint import read_checkpoint
from cifar.training.lr_find import read_curve
from generated import CPU, deflate_records, save_as_train_would
from pipeline_repo import (
    REPO,
    SMALL_SYNTHETIC,
    copy_pipeline,
    default_params,
    dvc,
    environment,
    make_pipeline_repo,
    merge,
    stage,
    stage_with_peak_memory,
    workspace_digests,
)
from stages import dvcignore, paths


def predictions_of(test: Split, wrong: int) -> pd.DataFrame:
    """predictions.csv as evaluate writes it, with the first `wrong` images misclassified."""
    predicted = test.labels.copy()
    predicted[:wrong] = (predicted[:wrong] + 1) % len(test.classes)
    return pd.DataFrame({"index": range(len(test)), "label": test.labels, "predicted": predicted, "confidence": 0.5})


def write_predictions(root: Path, frame: pd.DataFrame) -> None:
    """predictions.csv under `root` and its digests, as evaluate writes them beside the test
    split under `root`: also how a test stands for an edit whose digest was recomputed, to
    reach the checks past the digest."""
    table = frame.to_csv(index=False)
    made_of = {paths.PREDICTIONS: text_digest(table), f"{paths.DATA}/test.npz": split_digest(root / paths.DATA, "test")}
    (root / paths.PREDICTIONS).write_text(table)
    (root / paths.PREDICTIONS_DIGEST).write_text(sha256sum_lines(made_of, Path(paths.PREDICTIONS_DIGEST).parent))


def test_predictions_in_another_row_order_are_read_in_test_split_order(tmp_path):
    """Rows reversed, each true: the gallery and explain showed the last misclassified test
    images as the first, with exit 0."""
    save_dataset({"test": TEST_SPLIT}, tmp_path / paths.DATA)
    write_predictions(tmp_path, predictions_of(TEST_SPLIT, wrong=5).iloc[::-1])
    data = tmp_path / paths.DATA
    predictions = load_predictions(
        tmp_path / paths.PREDICTIONS, tmp_path / paths.PREDICTIONS_DIGEST, load_split(data, "test"), data
    )
    assert predictions["index"].tolist() == list(range(len(TEST_SPLIT)))
    assert first_misclassified(predictions, 3)["index"].tolist() == [0, 1, 2]


# The test split of the artifacts below.
TEST_SPLIT = synthetic_split(20, seed=1)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """What evaluate and explain read, small: params.yaml, a dataset, an untrained model and its
    predictions; and files standing for their previous outputs."""
    root = tmp_path_factory.mktemp("artifacts")
    params = merge(default_params(), SMALL_SYNTHETIC | {"explain": {"images": 4}})
    (root / paths.PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))
    test = TEST_SPLIT
    save_dataset({"train": synthetic_split(20, seed=0), "test": test}, root / paths.DATA)
    torch.manual_seed(0)
    save_trained(root / paths.MODEL, build_model(ModelConfig()), ModelConfig(), test.classes)
    write_predictions(root, predictions_of(test, wrong=5))
    write_json(root / paths.EVALUATE_METRICS, {"accuracy": 0.5, "loss": 1.5, "misclassified": 10})
    (root / paths.GRADCAM_IMAGES).mkdir(parents=True)
    (root / paths.GRADCAM_IMAGES / "layer3_correct.png").write_bytes(b"previous grid")
    return root


@pytest.fixture
def torch_flags():
    """Stages set process-wide torch flags; later tests must not inherit them."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


@pytest.fixture
def workspace(artifacts, tmp_path, monkeypatch, torch_flags) -> Path:
    """A copy of the artifacts as the current directory, for a stage's main to run in."""
    root = shutil.copytree(artifacts, tmp_path / "workspace")
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def pipeline_run(repro, tmp_path, monkeypatch, torch_flags) -> Path:
    """A copy of a whole pipeline run (every stage's inputs and outputs) as the current directory."""
    source, _ = repro
    root = shutil.copytree(source, tmp_path / "run", ignore=shutil.ignore_patterns(".git", ".dvc", "dvc_plots"))
    monkeypatch.chdir(root)
    return root


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
    (leftover,) = (path for path in models.iterdir() if path != Path(paths.MODEL))
    assert leftover.name.startswith(f".{Path(paths.MODEL).name}.partial-")
    assert subprocess.run(["git", "check-ignore", "-q", str(leftover)], cwd=REPO).returncode == 0

    caplog.set_level(logging.INFO)
    run_stage(lambda: None, [models])
    assert not leftover.exists()
    assert caplog.messages == [f"removed {leftover}, left by an interrupted write"]
    assert Path(paths.MODEL).read_bytes() == b"previous model"


KILLED_WHILE_RENAMING = f"""
import os, shutil, signal, sys
from pathlib import Path
from cifar.atomic import atomic_path, replaced_together, write_text

calls, kill_at = 0, int(sys.argv[1])


def killing(real):
    def call(*arguments, **options):
        global calls
        calls += 1
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*arguments, **options)
    return call


def killing_after_the_finished_mark(real):
    def call(path, *arguments, **options):
        real(path, *arguments, **options)
        if Path(path).name == ".finished":
            os.kill(os.getpid(), signal.SIGKILL)
    return call


os.replace, shutil.rmtree = killing(os.replace), killing(shutil.rmtree)
os.unlink = killing_after_the_finished_mark(os.unlink)
with replaced_together():
    with atomic_path({paths.DATA!r}) as folder:
        folder.mkdir()
        (folder / "train.npz").write_text("new split")
    write_text({paths.TRAIN_METRICS!r}, "new metrics")
"""


def killed_while_renaming(root: Path, kill_at: int, previous_data: bool = True) -> tuple[Path, Path]:
    """A data folder and a metrics file under `root`, replaced together by a process killed at
    its `kill_at`th rename or removal of a folder (at 0, once it removed its finished mark);
    their paths."""
    data, metrics = root / paths.DATA, root / paths.TRAIN_METRICS
    data.parent.mkdir(parents=True)
    if previous_data:
        data.mkdir()
        (data / "train.npz").write_text("previous split")
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text("previous metrics")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_RENAMING, str(kill_at)],
        cwd=root,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    assert killed.returncode == -signal.SIGKILL
    return data, metrics


# The writes' calls: the data folder moved aside (1), the new one in (2), the same for the
# metrics (3, 4), then their scratch folders removed (5, 6), after the mark that all are in.
@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 5, 6])
def test_outputs_killed_while_renamed_into_place_are_all_old_or_all_new_after_the_next_sweep(tmp_path, kill_at, caplog):
    """download killed between its two renames left no data folder, and the next stage run
    deleted the previous copy with the scratch folder."""
    data, metrics = killed_while_renaming(tmp_path, kill_at)
    caplog.set_level(logging.INFO)
    assert remove_stale_scratch([data.parent, metrics.parent])
    age = "previous" if kill_at <= 4 else "new"
    assert workspace_digests(tmp_path) == {
        f"{paths.DATA}/train.npz": hashlib.sha256(f"{age} split".encode()).hexdigest(),
        paths.TRAIN_METRICS: hashlib.sha256(f"{age} metrics".encode()).hexdigest(),
    }
    moved_aside = {1: [], 2: [data], 3: [data], 4: [data, metrics]}
    assert [message for message in caplog.messages if message.startswith("put back ")] == [
        f"put back {output}, the previous output, which an interrupted write had moved aside"
        for output in moved_aside.get(kill_at, [])
    ]


@pytest.mark.parametrize(("together", "stop_at"), [(True, 1), (True, 2), (True, 3), (True, 4), (False, 2)])
def test_ctrl_c_while_outputs_are_renamed_into_place_leaves_the_previous_ones(tmp_path, monkeypatch, together, stop_at):
    """A stop signal among evaluate's renames (SIGTERM, SIGINT, SIGHUP) was held until every new
    output was in, and the stage then ended in its line that no file was written, exit 143:
    the caller took the stage for not done, and nothing put the previous outputs back."""
    data, metrics = tmp_path / paths.DATA, tmp_path / paths.TRAIN_METRICS
    data.mkdir(parents=True)
    (data / "train.npz").write_text("previous split")
    metrics.parent.mkdir(parents=True)
    metrics.write_text("previous metrics")
    renames, real_replace = [], os.replace

    def interrupted_replace(*arguments):
        real_replace(*arguments)
        renames.append(arguments)
        if len(renames) == stop_at:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt), replaced_together() if together else contextlib.nullcontext():
        with atomic_path(data) as folder:
            folder.mkdir()
            (folder / "train.npz").write_text("new split")
        write_text(metrics, "new metrics")
    assert ((data / "train.npz").read_text(), metrics.read_text()) == ("previous split", "previous metrics")
    assert not [path for path in tmp_path.rglob("*") if SCRATCH_MARK in path.name]


def test_a_new_output_where_there_was_none_is_taken_out_if_its_writer_died_before_the_others(tmp_path, caplog):
    """evaluate killed with its new metrics file in place, where there had been none,
    and the tables not yet: the next run kept the new metrics beside the previous tables, and
    figures drew from the mix."""
    data, metrics = killed_while_renaming(tmp_path, 2, previous_data=False)  # data in, metrics not yet
    caplog.set_level(logging.INFO)
    remove_stale_scratch([data.parent, metrics.parent])
    assert workspace_digests(tmp_path) == {paths.TRAIN_METRICS: hashlib.sha256(b"previous metrics").hexdigest()}
    assert f"took out {data}, which an interrupted write had put in where there was none" in caplog.messages


def test_an_output_checked_out_after_its_writer_died_is_left_as_it_is(tmp_path, caplog):
    """evaluate killed mid-rename on one branch; after `git checkout` of another and `dvc
    checkout`, the next stage run put the killed run's previous metrics over the checked-out
    ones, with exit 0."""
    data, metrics = killed_while_renaming(tmp_path, 3)  # the data folder replaced, the metrics not yet
    shutil.rmtree(data)
    data.mkdir()
    (data / "train.npz").write_text("checked-out split")
    caplog.set_level(logging.INFO)
    remove_stale_scratch([data.parent, metrics.parent])
    assert workspace_digests(tmp_path) == {
        f"{paths.DATA}/train.npz": hashlib.sha256(b"checked-out split").hexdigest(),
        paths.TRAIN_METRICS: hashlib.sha256(b"previous metrics").hexdigest(),
    }
    assert [path for path in tmp_path.rglob("*") if SCRATCH_MARK in path.name] == []
    assert (
        f"left {data} as it is: it changed after an interrupted write had moved the previous one aside"
        in caplog.messages
    )


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a tmpfs, which lists the newest entries first")
def test_a_write_killed_as_it_removes_its_finished_mark_is_all_new(tmp_path):
    """On a tmpfs, rmtree deleted the finished mark before the previous output beside it: a
    kill in between left that output unmarked, and the next sweep put it back over a run whose
    renames had all completed."""
    root = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        data, metrics = killed_while_renaming(root, 0)
        remove_stale_scratch([data.parent, metrics.parent])
        assert workspace_digests(root) == {
            f"{paths.DATA}/train.npz": hashlib.sha256(b"new split").hexdigest(),
            paths.TRAIN_METRICS: hashlib.sha256(b"new metrics").hexdigest(),
        }
    finally:
        shutil.rmtree(root)


def test_a_scratch_folder_no_process_holds_is_swept_whatever_its_pid(tmp_path):
    """A writer killed as PID 1 of a container left scratch named for PID 1, alive on the host
    (and, zombies, a writer whose parent had not reaped it): the sweep kept it for a write in
    progress, and the killed run's outputs stayed beside the previous ones."""
    scratch = tmp_path / f".model.pt{SCRATCH_MARK}1-abcdefgh"
    scratch.mkdir()
    (scratch / "model.pt.previous").write_text("previous model")
    assert remove_stale_scratch([tmp_path]) == [scratch]
    assert (tmp_path / "model.pt").read_text() == "previous model"


def test_the_scratch_of_another_processs_write_in_progress_is_kept(tmp_path):
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITING_UNTIL_STDIN_CLOSES, str(tmp_path / "model.pt")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    try:
        assert writer.stdout.readline() == b"writing\n"
        assert remove_stale_scratch([tmp_path]) == []
    finally:
        writer.stdin.close()
        assert writer.wait() == 0
    assert (tmp_path / "model.pt").read_bytes() == b"in progress"


WRITING_UNTIL_STDIN_CLOSES = """
import sys
from cifar.atomic import atomic_path
with atomic_path(sys.argv[1]) as temporary:
    temporary.write_bytes(b"in progress")
    print("writing", flush=True)
    sys.stdin.read()
"""


def test_a_full_disk_at_the_finished_mark_is_named_as_such(tmp_path, monkeypatch):
    """metrics/ out of inodes at the mark: `.evaluate.json.partial-…/.finished: No space left
    on device; check that it exists and that you may read and write it`."""
    targets = [tmp_path / "a.json", tmp_path / "b.json"]
    for target in targets:
        target.write_text("old")
    real_touch = Path.touch

    def out_of_inodes(path, *arguments, **options):
        if path.name == ".finished":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_touch(path, *arguments, **options)

    monkeypatch.setattr(Path, "touch", out_of_inodes)
    with pytest.raises(OutputError) as refused, replaced_together():
        for target in targets:
            write_text(target, "new")
    assert str(refused.value) == (
        f"disk full while writing {targets[0]}: no space or no inodes left there (`df -h` and `df -i` show which); "
        f"free some, and re-run"
    )
    assert [target.read_text() for target in targets] == ["old", "old"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_stage_whose_stderr_is_full_runs_on(pipeline_run):
    """`python -m stages.lr_find 2>/dev/full` (its log file's disk full) stopped at the range
    test's first progress bar with exit code 2, where evaluate and figures ran on."""
    written = Path(paths.MAX_LR_PICK).stat().st_mtime_ns
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "stages.lr_find"], cwd=pipeline_run, env=environment(pipeline_run), stderr=full
        )
    assert result.returncode == 0
    assert Path(paths.MAX_LR_PICK).stat().st_mtime_ns != written


@pytest.mark.parametrize(
    "make", [os.mkfifo, lambda path: os.symlink("/dev/zero", path)], ids=["named-pipe", "link-to-dev-zero"]
)
def test_a_scratch_record_that_is_no_regular_file_is_passed_over_unread(tmp_path, make):
    """A named pipe as a dead scratch folder's `.renamed-in` record blocked every stage's
    start-up sweep for good; a link to /dev/zero filled its memory."""
    scratch = tmp_path / f".evaluate.json{SCRATCH_MARK}99999999-abcdefgh"
    scratch.mkdir()
    make(scratch / "evaluate.json.renamed-in")
    (tmp_path / "evaluate.json").write_text("current")
    sweeping = f"from cifar.atomic import remove_stale_scratch; remove_stale_scratch([{str(tmp_path)!r}])"
    # The timeout fails a regression here instead of stalling the suite.
    result = subprocess.run(
        [sys.executable, "-c", sweeping], env=os.environ | {"PYTHONPATH": str(REPO)}, timeout=300, capture_output=True
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "evaluate.json").read_text() == "current"
    assert not scratch.exists()


def test_a_stage_that_ends_leaves_pythoninspect_unset(monkeypatch):
    """Python opens its prompt after a script that returns with PYTHONINSPECT set: a module of
    the user's that set it as a library imported it kept evaluate there, its outputs written."""
    monkeypatch.delenv("PYTHONINSPECT", raising=False)
    run_stage(lambda: os.environ.update(PYTHONINSPECT="1"), [])
    assert "PYTHONINSPECT" not in os.environ


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            {"train": {"epochs": 4, "weight_decay": 2e-7}},
            "train.weight_decay changed while train ran (from 1e-07 to 2e-07)",
        ),
        ({"train": {"epochs": 4}}, "train.weight_decay changed while train ran (from 1e-07 to no value)"),
        ({"train": {"epochs": 4, "weight_decay": 1e-7}, "explain": {"images": 8}}, None),  # not train's
    ],
    ids=["a-value", "a-key-removed", "another-stages-key"],
)
def test_a_params_edit_while_a_stage_runs_fails_the_stage(tmp_path, monkeypatch, capsys, edit, problem):
    """DVC writes a stage's params into dvc.lock as it ends: weight_decay edited while train ran
    was recorded for a model trained at the old value, and its run cache then restored that
    model when the new value was asked for."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/train.py"])
    Path("params.yaml").write_text(yaml.safe_dump({"train": {"epochs": 4, "weight_decay": 1e-7}}))
    run = functools.partial(
        run_stage, lambda: Path("params.yaml").write_text(yaml.safe_dump(edit)), [], ["seed", "train"]
    )
    if problem is None:
        run()
        return
    with pytest.raises(SystemExit) as exited:
        run()
    assert (exited.value.code, capsys.readouterr().err) == (
        2,
        f"error: params.yaml: {problem}; DVC would record the new values beside outputs made with the old ones: "
        f"run it again\n",
    )


@pytest.mark.parametrize("edit", ["rewritten", "removed"])
def test_a_module_edited_while_a_stage_runs_fails_the_stage(tmp_path, monkeypatch, capsys, edit):
    """DVC hashes a stage's deps into dvc.lock as it ends: cifar/training/inference.py edited
    while evaluate ran was recorded as the code of predictions the old code made, and
    `dvc repro` then skipped evaluate as up to date."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/evaluate.py"])
    source = tmp_path / "cifar" / "inference.py"
    source.parent.mkdir()
    source.write_text("CONFIDENCE = 1.0\n")
    module = types.ModuleType("cifar.edited_while_running")
    module.__file__ = str(source)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    change = {"rewritten": lambda: source.write_text("CONFIDENCE = 0.5\n"), "removed": source.unlink}[edit]
    with pytest.raises(SystemExit) as exited:
        run_stage(change, [])
    assert (exited.value.code, capsys.readouterr().err) == (
        2,
        "error: cifar/inference.py changed while evaluate ran; DVC would record what it holds now beside outputs "
        "made from what it held before: run evaluate again\n",
    )


def test_a_module_first_imported_while_a_stage_runs_is_held_to_the_source_it_ran_from(tmp_path, monkeypatch, capsys):
    """figures' plotting code, imported as figures ran, edited before its import and changed back
    before figures ended: the edited code drew the figures, and DVC recorded the old."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/figures.py"])
    monkeypatch.setattr(cifar.cli, "_sources_read", None)
    monkeypatch.setattr(cifar.cli, "_sources_at_start", {})
    monkeypatch.setattr(cifar.cli, "_inputs_at_start", ((), {}))
    source = tmp_path / "cifar" / "plots.py"
    source.parent.mkdir()
    source.write_text("DPI = 100\n")
    keep_state_at_start({str(source): b"DPI = 200\n"}, {}, [])  # as stages/__init__.py keeps what Python read

    def import_it() -> None:
        module = types.ModuleType("cifar.imported_while_running")
        module.__file__ = str(source)
        monkeypatch.setitem(sys.modules, module.__name__, module)

    with pytest.raises(SystemExit) as exited:
        run_stage(import_it, [])
    assert (exited.value.code, capsys.readouterr().err) == (
        2,
        "error: cifar/plots.py changed while figures ran; DVC would record what it holds now beside outputs "
        "made from what it held before: run figures again\n",
    )


@pytest.mark.parametrize("edited", ["as torch loaded", "as the stage ran"])
def test_the_pinned_requirements_are_watched_as_a_stage_runs(tmp_path, monkeypatch, capsys, edited):
    """requirements-stages.txt, a dep of every stage in dvc.yaml, edited while train ran: DVC
    recorded the new pins in dvc.lock beside a model trained with the old ones. An input is
    held to its state as the stage read dvc.yaml, before it loaded torch."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/train.py"])
    monkeypatch.setattr(cifar.cli, "_sources_read", None)
    monkeypatch.setattr(cifar.cli, "_sources_at_start", {})
    monkeypatch.setattr(cifar.cli, "_inputs_at_start", ((), {}))
    requirements = Path("requirements-stages.txt")
    requirements.write_text("torch==2.14.1\n")
    inputs = paths.declared_inputs("train")
    upgrade = functools.partial(requirements.write_text, "torch==2.15.0\ntorchvision==0.30.0\n")
    if edited == "as torch loaded":
        keep_state_at_start({}, {}, inputs)
        upgrade()
    with pytest.raises(SystemExit) as exited:
        run_stage(upgrade if edited == "as the stage ran" else lambda: None, [], [], [], inputs)
    assert (exited.value.code, capsys.readouterr().err) == (
        2,
        "error: requirements-stages.txt changed while train ran; DVC would record what it holds now beside outputs "
        "made from what it held before: run train again\n",
    )


def test_an_input_the_sweep_puts_back_is_held_to_its_state_after_the_sweep(tmp_path, monkeypatch, capsys):
    """download killed while renaming its data in: train kept the data's state, its own sweep
    then put the previous data back, and after every epoch train failed with "(the data)
    changed while train ran; run train again", which nothing had changed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/train.py"])
    for kept in ("_sources_read", "_sources_at_start", "_inputs_at_start"):  # put back after the test
        monkeypatch.setattr(cifar.cli, kept, getattr(cifar.cli, kept))
    data, _ = killed_while_renaming(tmp_path, 2)  # the new data folder in, the previous one aside
    keep_state_at_start({}, {}, [paths.DATA])
    monkeypatch.setattr(cifar.cli, "_sources_read", None)  # a test's call: no stage process to end
    read = []
    run_stage(lambda: read.append((data / "train.npz").read_text()), [data.parent], [], [], [paths.DATA])
    assert (read, capsys.readouterr().err) == (["previous split"], "")


@pytest.mark.parametrize("edit", ["replaced", "added", "removed", "saved-unchanged"])
def test_an_input_replaced_while_a_stage_runs_fails_the_stage(tmp_path, monkeypatch, capsys, edit):
    """download run alone while train ran: DVC recorded the new split's hash for a model trained on the old one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/train.py"])
    data = Path(paths.DATA)
    data.mkdir(parents=True)
    (data / "train.npz").write_bytes(b"old split")
    (data / "test.npz").write_bytes(b"test split")
    source = tmp_path / "module.py"
    source.write_text("STEPS = 1\n")
    module = types.ModuleType("cifar.saved_while_running")
    module.__file__ = str(source)
    monkeypatch.setitem(sys.modules, module.__name__, module)

    def change() -> None:
        if edit == "replaced":  # as download writes it: beside, then renamed over
            (data / "train.npz.new").write_bytes(b"new split")
            (data / "train.npz.new").rename(data / "train.npz")
        elif edit == "added":
            (data / "extra.npz").write_bytes(b"")
        elif edit == "removed":
            (data / "test.npz").unlink()
        else:  # a module saved as it was is no edit to DVC, which hashes contents
            source.write_bytes(source.read_bytes())

    run = functools.partial(run_stage, change, [], [], [], [str(data)])
    if edit == "saved-unchanged":
        run()
        return
    with pytest.raises(SystemExit) as exited:
        run()
    changed = {"replaced": "train.npz", "added": "extra.npz", "removed": "test.npz"}[edit]
    assert (exited.value.code, capsys.readouterr().err) == (
        2,
        f"error: {paths.DATA}/{changed} changed while train ran; DVC would record what it holds now beside outputs "
        "made from what it held before: run train again\n",
    )


def test_an_edit_while_a_stage_runs_keeps_the_previous_outputs(tmp_path, monkeypatch, capsys):
    """Refused only as it ended, evaluate had already put the outputs of the old code in place."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/evaluate.py"])
    Path("params.yaml").write_text(yaml.safe_dump({"evaluate": {"tta": False}}))
    Path(paths.EVALUATE_METRICS).parent.mkdir(parents=True)
    Path(paths.EVALUATE_METRICS).write_text("previous")

    def edit_then_write() -> None:
        Path("params.yaml").write_text(yaml.safe_dump({"evaluate": {"tta": True}}))
        with replaced_together():
            write_json(paths.EVALUATE_METRICS, {"accuracy": 0.5})

    with pytest.raises(SystemExit) as exited:
        run_stage(edit_then_write, [], ["evaluate"], [paths.EVALUATE_METRICS])
    assert exited.value.code == 2 and "evaluate.tta changed while evaluate ran" in capsys.readouterr().err
    assert Path(paths.EVALUATE_METRICS).read_text() == "previous"
    assert [path.name for path in Path(paths.EVALUATE_METRICS).parent.iterdir()] == [Path(paths.EVALUATE_METRICS).name]


def test_a_params_file_gone_while_a_stage_runs_is_named_as_gone(tmp_path, monkeypatch, capsys):
    """params.yaml moved away while lr_find ran was reported as `seed changed while lr_find ran
    (from 0 to 'unreadable: params.yaml: fi...`, the reason cut out of the middle."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/lr_find.py"])
    Path("params.yaml").write_text(yaml.safe_dump({"seed": 0}))
    with pytest.raises(SystemExit) as exited:
        run_stage(lambda: Path("params.yaml").rename("params.yaml.bak"), [], ["seed"])
    assert (exited.value.code, capsys.readouterr().err) == (
        2,
        "error: params.yaml could not be read as lr_find ended, to check its values had not changed while it ran "
        "(params.yaml: file not found; run from the repository root, where params.yaml lives); restore it and run "
        "lr_find again\n",
    )


def test_a_users_folder_named_like_a_scratch_folder_is_kept(tmp_path):
    """`plots/.images.partial-2024-11-30` (a user's notes) was deleted as an interrupted write's
    leftover: 2024 was taken for a writer's process ID, and no such process ran."""
    (tmp_path / ".images.partial-2024-11-30").mkdir()
    assert remove_stale_scratch([tmp_path]) == []
    assert (tmp_path / ".images.partial-2024-11-30").is_dir()


def test_a_scratch_folder_named_with_a_number_no_pid_reaches_is_removed(tmp_path):
    """`.images.partial-99999999999999999999-abcdefgh` ended every stage in a raw OverflowError
    as the sweep asked whether that process was alive."""
    (tmp_path / ".images.partial-99999999999999999999-abcdefgh").mkdir()
    assert remove_stale_scratch([tmp_path]) == [tmp_path / ".images.partial-99999999999999999999-abcdefgh"]


def test_a_scratch_folder_that_will_not_go_is_named_and_never_logged_as_removed(tmp_path, monkeypatch, caplog):
    """An immutable file in the previous Grad-CAM folder: explain exited 0 leaving that folder,
    moved aside as scratch, without a word, and every later run logged it as removed."""
    (tmp_path / "gradcam").mkdir()

    def immutable(path, *args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(path))

    monkeypatch.setattr(shutil, "rmtree", immutable)
    with atomic_path(tmp_path / "gradcam") as temporary:
        temporary.mkdir()
    (left,) = tmp_path.glob(".gradcam.partial-*")
    assert f"WARNING: could not remove {left}, a stage's scratch folder (" in caplog.text
    assert caplog.text.endswith(f"; remove it: `rm -r {left}`\n")
    dead = tmp_path / ".images.partial-99999999999999999999-abcdefgh"
    dead.mkdir()
    caplog.clear()
    assert remove_stale_scratch([tmp_path]) == []
    assert f"WARNING: could not remove {dead}, a stage's scratch folder (" in caplog.text


def test_an_immutable_folder_above_one_not_made_yet_is_named(tmp_path):
    """A paths table naming data/sub/NAME, data/sub not made yet and data immutable: "make data/sub
    a folder you may write to" named a folder that did not exist."""
    data = tmp_path / "data"
    data.mkdir()
    if subprocess.run(["chattr", "+i", str(data)], capture_output=True).returncode:
        pytest.skip("chattr +i needs root and a file system with the flag")
    try:
        with pytest.raises(OutputError) as refused, atomic_path(data / "sub" / "splits") as scratch:
            scratch.mkdir()
    finally:
        subprocess.run(["chattr", "-i", str(data)], check=True)
    assert str(refused.value).endswith(f"clear that with `chattr -i -a {data}` and re-run")


def test_a_scratch_folder_an_immutable_file_keeps_names_it(tmp_path, caplog):
    """An immutable file in the previous outputs: "remove it by hand" was said of a folder `rm -r`
    cannot remove either."""
    target = tmp_path / "it's data" / "cifar 10"
    target.mkdir(parents=True)
    (target / "train.npz").write_bytes(b"old")
    if subprocess.run(["chattr", "+i", str(target / "train.npz")], capture_output=True).returncode:
        pytest.skip("chattr +i needs root and a file system with the flag")
    try:
        with atomic_path(target) as scratch:
            scratch.mkdir()
        (left,) = target.parent.glob(".cifar 10.partial-*")
    finally:
        for marked in target.parent.rglob("train.npz"):
            subprocess.run(["chattr", "-i", str(marked)], check=True)
    marked = left / "cifar 10.previous" / "train.npz"
    assert caplog.text.endswith(
        f"; remove it: `chattr -i -a {shlex.quote(str(marked))}`, then `rm -r {shlex.quote(str(left))}`: {marked} is "
        "marked immutable or append-only\n"
    )


def test_the_scratch_of_a_write_in_progress_is_kept(tmp_path):
    with atomic_path(tmp_path / "model.pt") as temporary:
        temporary.write_bytes(b"in progress")
        assert remove_stale_scratch([tmp_path]) == []
    assert (tmp_path / "model.pt").read_bytes() == b"in progress"


def test_outputs_replaced_together_are_all_new_or_all_old(tmp_path):
    """train wrote model.pt, then failed at a read-only plots/: a new model beside the old
    run's metrics; lr_find, killed after its first output, left a mix figures refused."""
    first, second = tmp_path / "metrics.json", tmp_path / "plots" / "curve.csv"
    first.write_text("old")
    with pytest.raises(OutputError, match=f"cannot write {second}"), replaced_together():
        write_text(first, "new")
        (tmp_path / "plots").write_text("a file where a folder is")  # the second write fails
        write_text(second, "new")
    assert first.read_text() == "old"
    (tmp_path / "plots").unlink()
    with replaced_together():
        write_text(first, "new")
        write_text(second, "new")
    assert (first.read_text(), second.read_text()) == ("new", "new")
    assert [path.name for path in tmp_path.rglob("*") if SCRATCH_MARK in path.name] == []


def test_a_rename_that_fails_midway_puts_the_outputs_renamed_before_it_back(tmp_path, monkeypatch):
    """With its predictions CSV a busy mount point, evaluate's metrics were already new when
    its rename failed, the rest old: a mix."""
    targets = [tmp_path / "metrics.json", tmp_path / "gallery", tmp_path / "predictions.csv"]
    targets[0].write_text("old")
    targets[1].mkdir()
    (targets[1] / "a.png").write_text("old")
    targets[2].write_text("old")
    real_replace = os.replace

    def busy_at_the_last(source, destination):
        if Path(source) == targets[2]:  # moving it aside, as a mount point refuses
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(source))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", busy_at_the_last)
    busy = f"cannot replace {targets[2]} \\(Device or resource busy\\): a file system is mounted there"
    with pytest.raises(OutputError, match=busy), replaced_together():
        write_text(targets[0], "new")
        with atomic_path(targets[1]) as folder:
            folder.mkdir()
            write_text(folder / "a.png", "new")
        write_text(targets[2], "new")
    assert [targets[0].read_text(), (targets[1] / "a.png").read_text(), targets[2].read_text()] == ["old"] * 3
    assert [path.name for path in tmp_path.rglob("*") if SCRATCH_MARK in path.name] == []


def test_a_stop_signal_while_outputs_are_renamed_takes_out_those_already_in(tmp_path, monkeypatch):
    """SIGTERM as a stage's handlers take it: the stage stops (Stopped, which its stop line
    reports as nothing written), and the new outputs renamed before it come out again."""
    targets = [tmp_path / f"{index}.json" for index in range(3)]
    real_replace = os.replace

    def replace_then_sigterm(source, destination):
        real_replace(source, destination)
        if Path(destination) == targets[0]:
            os.kill(os.getpid(), signal.SIGTERM)

    install_stop_handlers()
    monkeypatch.setattr(os, "replace", replace_then_sigterm)
    with pytest.raises(Stopped), replaced_together():
        for target in targets:
            write_text(target, "new")
    assert [target.exists() for target in targets] == [False] * 3
    assert [path.name for path in tmp_path.rglob("*") if SCRATCH_MARK in path.name] == []


def test_a_stop_signal_while_the_sweep_puts_a_previous_output_back_waits_for_it(tmp_path, monkeypatch):
    """figures stopped by SIGTERM between the sweep's two renames, the killed writer's new data
    folder moved out and the previous one not yet back, left no data folder, while its line
    said that no file was left half-written."""
    data, _ = killed_while_renaming(tmp_path, 3)  # the data folder replaced, the metrics not yet
    real_replace = os.replace

    def replace_then_sigterm(source, destination):
        real_replace(source, destination)
        if Path(source) == data:
            os.kill(os.getpid(), signal.SIGTERM)

    install_stop_handlers()
    monkeypatch.setattr(os, "replace", replace_then_sigterm)
    with pytest.raises(Stopped):
        remove_stale_scratch([data.parent])
    assert (data / "train.npz").read_text() == "previous split"


def test_a_folder_is_replaced_by_moving_the_previous_one_aside_not_by_deleting_it_first(tmp_path, monkeypatch):
    """download removed its previous data folder before renaming the new one in: SIGTERM
    during that removal left the folder without train.npz."""
    target = tmp_path / "cifar10"
    target.mkdir()
    (target / "train.npz").write_text("old")
    real_rmtree = shutil.rmtree

    def interrupted_rmtree(path, *arguments, **options):
        if Path(path).resolve() == target.resolve():
            raise KeyboardInterrupt  # a signal in the middle of deleting the output itself
        return real_rmtree(path, *arguments, **options)

    monkeypatch.setattr(shutil, "rmtree", interrupted_rmtree)
    with atomic_path(target) as folder:
        folder.mkdir()
        (folder / "train.npz").write_text("new")
    assert (target / "train.npz").read_text() == "new"


@pytest.mark.parametrize("kind", ["link", "file"])
def test_an_output_folder_that_is_a_link_or_a_file_is_named_as_such(tmp_path, kind):
    """A symbolic link (data kept on another disk) or a file where explain writes its folder
    was `Not a directory; make plots/images a folder you may write to`, after the work."""
    target = tmp_path / "gradcam"
    if kind == "link":
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
        expected = f"{target} is a symbolic link (to {tmp_path / 'elsewhere'}), and stages replace their outputs whole"
    else:
        target.write_text("")
        expected = f"{target} is a file where a folder is written; remove it and re-run"
    with pytest.raises(OutputError) as refused, atomic_path(target) as folder:
        folder.mkdir()
    assert str(refused.value).startswith(expected)


def test_outputs_that_are_links_are_all_named_before_the_stage_works(workspace, tmp_path):
    """Under DVC's symlink cache (`cache.type: symlink`), a stage run alone was refused only as
    it wrote, after its work (train after all its epochs), naming one link of several."""
    copy_pipeline(workspace)
    linked = [paths.EVALUATE_METRICS, paths.PER_CLASS]
    for output in linked:
        kept = tmp_path / "cache" / Path(output).name
        kept.parent.mkdir(exist_ok=True)
        kept.write_text("cached")
        Path(output).unlink(missing_ok=True)
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).symlink_to(kept)
    before = outputs(workspace)
    result = stage(workspace, "evaluate", check=False)
    assert (result.returncode, result.stderr.splitlines()) == (
        2,
        [
            f"error: {', '.join(linked)} are symbolic links ({linked[0]} to {tmp_path / 'cache' / 'evaluate.json'}), "
            "and stages replace their outputs whole; remove the links and re-run (`dvc unprotect` turns links to "
            "DVC's cache into copies; DVC's cache keeps outputs on another disk: `dvc cache dir`)"
        ],
    )
    assert outputs(workspace) == before


def test_an_output_inside_a_link_to_nowhere_names_the_link(tmp_path):
    """A checkpoint folder linked to a disk not mounted was `cannot write` the checkpoint `(File
    exists)`."""
    (tmp_path / "checkpoints").symlink_to(tmp_path / "unmounted" / "checkpoints")
    target = tmp_path / "checkpoints" / "train.pt"
    with pytest.raises(OutputError) as refused, atomic_path(target) as temporary:
        temporary.write_text("")
    assert str(refused.value) == (
        f"cannot write {target}: {tmp_path / 'checkpoints'} is a symbolic link to "
        f"{tmp_path / 'unmounted' / 'checkpoints'}, which does not exist; create that folder or remove the link, "
        f"and re-run"
    )


def test_a_folder_where_a_file_output_goes_is_kept_and_named(tmp_path):
    """A folder of the user's at the confusion CSV's path (or at the checkpoint's) was replaced,
    with what it held, without a word."""
    target = tmp_path / "confusion.csv"
    target.mkdir()
    (target / "keep.txt").write_text("notes")
    with pytest.raises(OutputError) as refused, atomic_path(target) as temporary:
        temporary.write_text("actual,predicted\n")
    assert str(refused.value) == f"{target} is a folder where a file is written; move it elsewhere and re-run"
    assert (target / "keep.txt").read_text() == "notes"


def onto_a_full_disk(monkeypatch, owner, writer: str, path_argument: int, only_named: str | None = None) -> None:
    """Make owner.writer write to /dev/full, where every write fails as on a full disk (only
    writes to files named only_named, if given)."""
    real = getattr(owner, writer)

    def write(*arguments, **options):
        target = arguments[path_argument]
        if isinstance(target, (str, os.PathLike)) and (only_named is None or Path(target).name == only_named):
            Path(target).symlink_to("/dev/full")
        return real(*arguments, **options)

    monkeypatch.setattr(owner, writer, write)


SAVE_A_MODEL = (
    "from torch import nn; from cifar.config import ModelConfig; from cifar.models import save_trained; "
    f"save_trained({paths.MODEL!r}, nn.Linear(1_000_000, 1), ModelConfig(), ('a', 'b'))"  # 4 MB
)


@pytest.mark.parametrize(
    ("target", "write"),
    [
        (paths.CONFUSION, f"from cifar.atomic import write_text; write_text({paths.CONFUSION!r}, 'x' * 4_000_000)"),
        # torch's writer fails without an errno, as on a full disk: it was called one.
        (paths.MODEL, SAVE_A_MODEL),
        # ... also where the disk has less room left than the limit (2 MiB), as the failed
        # file, still open in the writer, holds its blocks.
        (
            paths.MODEL,
            "import os; os.statvfs = lambda path: os.statvfs_result((4096, 4096, 8192, 512, 512, 0, 0, 0, 0, 255)); "
            + SAVE_A_MODEL,
        ),
    ],
    ids=["text", "torch", "torch-on-a-small-disk"],
)
def test_a_file_size_limit_is_named_as_such(tmp_path, target, write):
    """EFBIG (`ulimit -f`) was reported as a folder to make writable, and torch's failed
    write as a full disk; Python ignores SIGXFSZ, so the write fails instead of killing the stage."""
    Path(tmp_path / target).parent.mkdir()
    limit = 3 << 20
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); {write}",
        ],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert result.stderr.splitlines()[-1] == (
        f"cifar.errors.OutputError: cannot write {target}: larger than the largest file this process may "
        f"write (`ulimit -f`, or the file system's own limit); raise that limit and re-run"
    )
    assert list(Path(tmp_path / target).parent.iterdir()) == []


def save_model(parameters: int) -> None:
    save_trained(paths.MODEL, nn.Linear(parameters, 1), ModelConfig(), ("a", "b"))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    ("target", "owner", "writer", "path_argument", "write", "detail"),
    [
        # torch reports the same failure in two ways, depending on the file's size.
        (paths.MODEL, torch, "save", 1, lambda: save_model(10), " (torch: basic_ios::clear: iostream error)"),
        (paths.MODEL, torch, "save", 1, lambda: save_model(10_000), " (torch: [enforce fail at inline_container.cc:"),
        (paths.EVALUATE_METRICS, Path, "write_bytes", 0, lambda: write_json(paths.EVALUATE_METRICS, {"loss": 1.0}), ""),
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
    assert message.startswith(f"disk full while writing {target}{detail}") and message.endswith(
        ": no space or no inodes left there (`df -h` and `df -i` show which); free some, and re-run"
    )
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
    """Set every weight of the saved model's classifier to value, as a run that ended so would save it."""
    payload = torch.load(paths.MODEL, weights_only=True)
    payload["state_dict"]["fc.weight"].fill_(value)
    save_as_train_would(payload, paths.MODEL)


@pytest.mark.parametrize(
    ("weight", "message"),
    [
        (
            float("nan"),
            f"{paths.MODEL}: the weights hold NaN or infinity (first in fc.weight); "
            "the run that saved them diverged: re-create it with `dvc repro train`",
        ),
        # Finite, but too large for the logits: the loss is not finite.
        (
            1e38,
            f"{paths.MODEL}: the test loss on {paths.DATA} is nan, as the model's outputs are not finite; "
            "re-create it with `dvc repro train`",
        ),
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


def write_after_stray_bytes(path):
    """Python's zipfile finds the record list of a zip behind stray bytes, torch's reader
    looks where the end record says: a decoy list there let a deflate bomb through."""
    write_unknown_model(path)
    path.write_bytes(b"stray" + path.read_bytes())


def write_with_an_end_signature_as_its_directory_offset(path):
    """The check took those bytes inside the end record for the end record, found no room for
    one after them, and let the file through to torch: a 101 MB model.pt took 3.8 GB."""
    write_unknown_model(path)
    data = bytearray(path.read_bytes())
    data[-6:-2] = b"PK\x05\x06"  # the end record's directory offset
    path.write_bytes(bytes(data))


def write_with_its_structure_named_in_capitals(path):
    """torch's reader finds the pickle as DATA.PKL too; its cap looked only for data.pkl."""
    write_with(padding="x" * (2 << 20))(path)
    with zipfile.ZipFile(path) as saved:
        records = [(record.filename.replace("data.pkl", "DATA.PKL"), saved.read(record)) for record in saved.infolist()]
    with zipfile.ZipFile(path, "w") as renamed:
        for name, data in records:
            renamed.writestr(name, data)


def write_with(model=(), **changes):
    """A writer of a model file with its config's keys in `model` and its other entries changed,
    as a re-save by hand would."""

    def write(path):
        torch.save(
            {"model": asdict(ModelConfig()) | dict(model), "classes": list("abcdefghij"), "state_dict": {}} | changes,
            path,
        )

    return write


@pytest.mark.parametrize(
    ("write_model", "why"),
    [
        (
            write_unknown_model,
            "(its model config: model.name = 'vgg' is not allowed; expected one of 'custom_resnet', 'resnet18')",
        ),
        # Each of these was loaded; the first two as the model of a network they do not describe.
        (
            write_with(model={"name": "resnet18", "norm": "bogus"}),
            "(its model config: model.norm = 'bogus' is not allowed; expected one of 'batch', 'group')",
        ),
        (
            write_with(model={"name": "resnet18", "layer4_stride": 7}),
            "(its model config: model.layer4_stride = 7 is not allowed; expected one of 1, 2)",
        ),
        (
            write_with(model={"norm": "group"}),
            "(its model config: model.norm = 'group' is not allowed with model.name = 'custom_resnet'; only resnet18 "
            "has",
        ),
        # Numbers for names ended in a TypeError in evaluate, which joins the names to print them.
        (
            write_with(classes=list(range(10))),
            "(classes = [0, 1, 2, 3, 4, 5, ...], not a list of different, non-empty names)",
        ),
        (write_with(classes=["a", "a"]), "(classes = ['a', 'a'], not a list of different, non-empty names)"),
        (write_with(classes=["a", ""]), "(classes = ['a', ''], not a list of different, non-empty names)"),
        (write_with(classes=[]), "(classes = [], not a list of different, non-empty names)"),
        (write_with(classes="abcdefghij"), "(classes = 'abcdefghij', not a list of different, non-empty names)"),
        (write_python_object, "(damaged, or holding Python objects, which are never loaded as they could run code)"),
        (Path.touch, "(not the zip archive torch.save writes: File is not a zip file)"),
        (write_after_stray_bytes, "(its list of records is not where its end records say, so readers differ on"),
        (write_with_an_end_signature_as_its_directory_offset, "(its list of records is not where its end records say"),
        (write_with(padding="x" * (2 << 20)), "(its pickled structure takes 2,097,"),
        (write_with_its_structure_named_in_capitals, "(its pickled structure takes 2,097,"),
        (
            write_another_models_weights,
            "(Error(s) in loading state_dict for CustomResNet: Missing key(s) in state_dict:",
        ),
    ],
)
def test_a_file_that_is_no_trained_model_is_refused_in_one_line_never_suggesting_unsafe_loading(
    tmp_path, write_model, why
):
    path = tmp_path / "model.pt"
    write_model(path)
    with pytest.raises(DataError) as refused:
        load_trained(path, CPU)
    message = str(refused.value)
    assert message.startswith(f"{path}: not a model saved by the train stage {why}")
    assert message.endswith("; re-create it with `dvc repro train`")
    assert "\n" not in message and "weights_only" not in message


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("can't start new thread"),
        MemoryError(),
        OSError(errno.ENOMEM, "Cannot allocate memory"),
        # which evaluate met under `ulimit -v` as a raw traceback
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
            "to allocate 104857600 bytes. Error code 12 (Cannot allocate memory)"
        ),
        # which download met under `ulimit -d 327680` as a raw traceback, its pool waiting for a thread
        RuntimeError("can't allocate lock"),
    ],
    ids=["thread", "memory-error", "enomem", "torch-allocator", "lock"],
)
def test_running_out_of_memory_in_a_stage_is_one_line(monkeypatch, capsys, error):
    """A ThreadPoolExecutor that could not start a thread under `ulimit -v 300000` ended the
    download stage in a traceback."""

    def main():
        raise error

    monkeypatch.setattr(sys, "argv", ["stages/download.py"])
    monkeypatch.setattr("cifar.errors.user_threads_limit", lambda: None)  # root's, or unlimited
    with pytest.raises(SystemExit) as exited:
        run_stage(main, [])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        f"error: download ran out of memory ({one_line(error)}); raise the memory limit (ulimit -v) "
        "or stop programs that hold memory, then run it again\n"
    )


def test_a_stop_after_the_outputs_are_in_place_says_so(tmp_path, monkeypatch, capsys):
    """SIGTERM as download logged its import said "stopped before download finished; no file is
    left half-written", the new data in place and the previous gone."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/download.py"])

    def main():
        with atomic_path(tmp_path / "data" / "cifar10") as folder:
            folder.mkdir()
        raise Stopped(signal.SIGTERM)

    with pytest.raises(SystemExit) as exited:
        run_stage(main, [tmp_path / "data"], outputs=[tmp_path / "data" / "cifar10"])
    assert (exited.value.code, capsys.readouterr().err) == (
        143,
        "error: stopped by SIGTERM after download put its new outputs in place, before it finished its checks: DVC "
        "has not recorded them; run it again (or `dvc checkout` puts back the recorded ones)\n",
    )


def swallowed_in_a_finalizer() -> None:
    """SIGTERM raised in a weak reference's callback, where Python cannot raise it."""

    class Drawn:
        pass

    def callback(_):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs at the loop's next step, in here
            pass

    drawn = Drawn()
    reference = weakref.ref(drawn, callback)
    del drawn
    assert reference() is None


def swallowed_by_a_bare_except() -> None:
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    except BaseException:  # as a library's bare `except:` does
        pass


@pytest.mark.parametrize("swallow", [swallowed_in_a_finalizer, swallowed_by_a_bare_except], ids=["finalizer", "except"])
def test_a_stop_a_library_swallowed_still_stops_the_stage(monkeypatch, capsys, swallow):
    """SIGTERM as figures drew, raised in a weak reference's callback: "Exception ignored in ...",
    a traceback, and in 5 of 55 runs figures ran on to exit 0. Raised again where the stage is,
    it stops it there; one that a library's bare `except:` kept stops it once main returns."""
    monkeypatch.setattr(sys, "argv", ["stages/figures.py"])
    steps = []

    def main():
        swallow()
        for step in range(10**7):
            steps.append(step)

    with pytest.raises(SystemExit) as exited:
        run_stage(main, [])
    assert (exited.value.code, capsys.readouterr().err) == (
        143,
        "error: stopped by SIGTERM before figures finished; no file is left half-written: run it again\n",
    )
    if swallow is swallowed_in_a_finalizer:
        assert len(steps) < 10**7


def test_a_thread_that_the_users_threads_limit_keeps_from_starting_names_that_limit(monkeypatch, capsys):
    """Under `ulimit -u 4` download's decoding threads could not all start, and it was told to
    raise the memory limit (ulimit -v), which was not set."""

    def main():
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(sys, "argv", ["stages/download.py"])
    monkeypatch.setattr("cifar.errors.user_threads_limit", lambda: 4)
    with pytest.raises(SystemExit) as exited:
        run_stage(main, [])
    assert (exited.value.code, capsys.readouterr().err) == (
        2,
        "error: download could not start a thread: `ulimit -u` lets this user run 4 processes and threads in all; "
        "raise it (or stop some of the user's programs), then run it again\n",
    )


@pytest.mark.parametrize("failing", ["reading a font", "writing an output"])
def test_running_out_of_open_files_names_that_limit(tmp_path, monkeypatch, capsys, failing):
    """Under `ulimit -n 7` figures was told to check that one of matplotlib's fonts exists, or
    to make plots/images a folder it may write to."""
    target = tmp_path / "lr_finder.png"

    def main():
        if failing == "reading a font":
            raise OSError(errno.EMFILE, "Too many open files", "DejaVuSans.ttf")
        with atomic_path(target):
            raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(sys, "argv", ["stages/figures.py"])
    with pytest.raises(SystemExit) as exited:
        run_stage(main, [])
    where = "DejaVuSans.ttf" if failing == "reading a font" else target
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert (exited.value.code, capsys.readouterr().err) == (
        2,
        f"error: ran out of open files at {where} (`ulimit -n` allows {limit}); raise that limit (1024 is usual) "
        "or close programs that hold many files, then re-run\n",
    )


def test_running_out_of_memory_under_a_data_limit_names_that_limit(monkeypatch, capsys):
    """Under `ulimit -d 1000000` alone, evaluate ran out of memory and was told to raise
    `ulimit -v`, which was unlimited."""
    real_limit = resource.getrlimit
    soft_limits = {resource.RLIMIT_AS: resource.RLIM_INFINITY, resource.RLIMIT_DATA: 2**30}

    def getrlimit(limit):
        return soft_limits.get(limit, real_limit(limit)[0]), real_limit(limit)[1]

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    error = MemoryError()

    def main():
        raise error

    monkeypatch.setattr(sys, "argv", ["stages/evaluate.py"])
    with pytest.raises(SystemExit) as exited:
        run_stage(main, [])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "error: evaluate ran out of memory (MemoryError); raise the memory limit (ulimit -d) "
        "or stop programs that hold memory, then run it again\n"
    )


def test_running_out_of_memory_while_a_model_loads_is_not_called_a_bad_model(tmp_path, monkeypatch):
    """Under `ulimit -v`, evaluate called the model file "not a model saved by the train stage"
    and advised re-creating it, when torch's allocator had failed."""
    path = tmp_path / "model.pt"
    save_trained(path, build_model(ModelConfig()), ModelConfig(), TEST_SPLIT.classes)
    failure = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4718592 bytes.")

    def out_of_memory(*arguments, **options):
        raise failure

    monkeypatch.setattr(nn.Module, "load_state_dict", out_of_memory)
    with pytest.raises(RuntimeError) as raised:
        load_trained(path, CPU)
    assert raised.value is failure


def test_a_stop_signal_or_ctrl_c_after_the_outcome_is_ignored():
    """Ctrl-C just after a stage's last line, as torch unloaded, ended evaluate in a
    KeyboardInterrupt traceback, explain in exit code 130 with its outputs written."""
    run_stage(lambda: None, [])
    assert {signal.getsignal(sig) for sig in (signal.SIGINT, *STOP_SIGNALS)} == {signal.SIG_IGN}


@pytest.mark.parametrize(("first", "raised"), [(signal.SIGHUP, SystemExit), (signal.SIGINT, KeyboardInterrupt)])
def test_signals_after_the_first_do_not_cut_the_undoing_of_writes_short(tmp_path, first, raised):
    """20 SIGTERMs 2 ms apart as evaluate wrote its outputs: one came as another's Stopped
    undid a write in flight, and left three scratch files behind. Python handles the signals
    that came together one at a time, by number: SIGTERM's turn comes as the first's
    exception unwinds."""
    target = tmp_path / "metrics.json"

    def main():
        with atomic_path(target) as temporary:
            temporary.write_text("{")
            both = {first, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, both)  # so that they come together, to this thread
            for sig in both:
                signal.pthread_kill(threading.get_ident(), sig)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, both)

    with pytest.raises(raised) as stopped:
        run_stage(main, [tmp_path])
    assert raised is KeyboardInterrupt or stopped.value.code == 128 + first, "stopped by the first"
    assert list(tmp_path.iterdir()) == []


def test_a_stop_handler_run_after_the_first_stop_does_nothing():
    """Python may run a signal's handler inside another's, before the first has set the others
    aside: in 1 try of 8 with 20 SIGTERMs 2 ms apart, a second Stopped cut short the undoing
    of evaluate's writes and left two scratch folders."""
    install_stop_handlers()
    first, second = (signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM))
    with pytest.raises(Stopped):
        first(signal.SIGHUP, None)
    second(signal.SIGTERM, None)


def test_any_other_runtime_error_keeps_its_traceback():
    def main():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_stage(main, [])


def deflated_zeros(model: Path) -> None:
    """A record of 512 MiB of zeros in 0.5 MB: torch.load inflates a compressed record whole."""
    uncompressed = model.parent / "uncompressed" / model.name
    uncompressed.parent.mkdir()
    torch.save({"padding": torch.zeros(512 << 20, dtype=torch.uint8)}, uncompressed)
    deflate_records(uncompressed, model)
    shutil.rmtree(uncompressed.parent)


def empty_dicts(model: Path) -> None:
    """4 million empty dicts, a byte of pickle each and 64 or more in memory."""
    torch.save({"padding": [{} for _ in range(4_000_000)]}, model)


@pytest.mark.parametrize(
    ("bomb", "why"),
    [
        (deflated_zeros, "its record 'model/data.pkl' is compressed, which torch.save never does"),
        (empty_dicts, "its pickled structure takes 24,007,265 bytes, more than the 1,048,576 it needs"),
    ],
    ids=["deflated-zeros", "pickled-empty-dicts"],
)
def test_a_model_file_that_loads_far_larger_than_it_is_is_refused_before_it_is_loaded(tmp_path, bomb, why):
    """A 1.5 MB model.pt holding 1.5 GB of deflated zeros took evaluate to 5 GB before it was
    refused; one of 20 million empty dicts (20 MB), to 2.3 GB."""
    copy_pipeline(tmp_path)
    (tmp_path / paths.PARAMS).write_text(yaml.safe_dump(default_params(), sort_keys=False))
    model = tmp_path / paths.MODEL
    model.parent.mkdir(parents=True)
    bomb(model)
    result, peak = stage_with_peak_memory(tmp_path, "evaluate")
    model.write_bytes(b"")
    _, peak_refusing_an_empty_file = stage_with_peak_memory(tmp_path, "evaluate")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"error: {paths.MODEL}: not a model saved by the train stage ({why}"
    )
    assert peak - peak_refusing_an_empty_file < 128 << 20, f"{peak >> 20} MiB, {peak_refusing_an_empty_file >> 20}"


@pytest.mark.parametrize("make", [Path.mkdir, os.mkfifo], ids=["folder", "named-pipe"])
def test_a_model_path_that_is_no_file_is_named_as_such_and_never_opened(tmp_path, make):
    path = tmp_path / "model.pt"
    make(path)
    with pytest.raises(
        DataError, match=r"model.pt: a folder, named pipe or device, not a file; remove it and re-create"
    ):
        load_trained(path, CPU)


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
        # A header alone has columns of no numeric type: it was called "non-numbers".
        (lambda frame: frame.iloc[:0].to_csv(index=False), "0 rows for a test split of 20 images"),
        (with_first("index", 25), "column index holds 1..25, beyond the 20 test images (0..19)"),
        (with_first("label", 10), "column label holds 0..10, beyond the 10 classes (0..9)"),
        (with_first("predicted", -1), "column predicted holds -1..9, beyond the 10 classes (0..9)"),
        (with_first("label", 1.5), "column label holds non-integers"),
        (with_first("confidence", "high"), "column confidence holds non-numbers"),
        # Drawn in the galleries' titles as "nan%" and "750%", with exit 0.
        (with_first("confidence", float("nan")), "column confidence holds nan in row 0, not a probability from 0 to 1"),
        (with_first("confidence", 7.5), "column confidence holds 7.5 in row 0, not a probability from 0 to 1"),
        # Explain explained image 0 twenty times, with exit 0.
        (lambda frame: frame.assign(index=0).to_csv(index=False), "test image 0 has 20 rows, not one"),
        (
            with_first("label", (TEST_SPLIT.labels[0] + 1) % 10),
            f"the row of test image 0 gives it label {(TEST_SPLIT.labels[0] + 1) % 10}, but the test split says "
            f"{TEST_SPLIT.labels[0]}",
        ),
        # pandas skips blank lines: read whole, it was accepted.
        (
            lambda frame: frame.to_csv(index=False) + "\n" * 100_000,
            "100,243 bytes, far more than 20 rows of predictions take",
        ),
    ],
)
def test_explain_refuses_bad_predictions_in_one_line_and_keeps_its_previous_grids(workspace, damage, problem):
    Path(paths.PREDICTIONS).write_text(damage(pd.read_csv(paths.PREDICTIONS)))
    before = outputs(workspace)
    with pytest.raises(DataError) as refused:
        stages.explain.main()
    assert str(refused.value) == f"{paths.PREDICTIONS}: {problem}; re-create it with `dvc repro evaluate`"
    assert outputs(workspace) == before


DIGESTS_MISSPELLED = f"not the lines `sha256sum {Path(paths.PREDICTIONS).name} {Path(paths.DATA).name}/test.npz` writes"


def test_predictions_of_a_test_split_imported_since_are_refused(workspace):
    """data.source switched to another export of the same images, the test images re-encoded
    but for those figures runs through the model: figures drew evaluate's tables of the
    previous test images as the new split's, exit 0."""
    reencoded = Split(TEST_SPLIT.images.copy(), TEST_SPLIT.labels, TEST_SPLIT.classes)
    reencoded.images[-1] ^= 1
    save_dataset({"train": load_split(paths.DATA, "train"), "test": reencoded}, paths.DATA)
    assert refusal(stages.explain.main, workspace) == (
        f"{paths.PREDICTIONS}: evaluate made it from another test split than {paths.DATA}/test.npz holds now "
        f"({paths.PREDICTIONS_DIGEST}); re-create it with `dvc repro evaluate`"
    )


def test_predictions_made_while_download_replaced_the_test_split_are_refused(workspace, monkeypatch):
    """download finishing while evaluate predicted (two stages at once in one workspace):
    evaluate took the split's digest from the manifest as it wrote, so the previous split's
    predictions were stamped as the new split's, and figures and explain drew them, exit 0."""
    reencoded = Split(TEST_SPLIT.images.copy(), TEST_SPLIT.labels, TEST_SPLIT.classes)
    reencoded.images[-1] ^= 1
    load_split_as_evaluate_does = stages.evaluate.load_split

    def imported_meanwhile(folder, name):
        split = load_split_as_evaluate_does(folder, name)
        save_dataset({"train": load_split(folder, "train"), "test": reencoded}, folder)
        return split

    monkeypatch.setattr(stages.evaluate, "load_split", imported_meanwhile)
    stages.evaluate.main()
    assert refusal(stages.explain.main, workspace) == (
        f"{paths.PREDICTIONS}: evaluate made it from another test split than {paths.DATA}/test.npz holds now "
        f"({paths.PREDICTIONS_DIGEST}); re-create it with `dvc repro evaluate`"
    )


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (None, "not found"),
        (str.upper, DIGESTS_MISSPELLED),
        (lambda text: text.replace("  ", " *"), DIGESTS_MISSPELLED),
        (lambda text: text.rstrip("\n"), DIGESTS_MISSPELLED),
        (lambda text: text * 2, DIGESTS_MISSPELLED),
        (lambda text: "".join(reversed(text.splitlines(keepends=True))), DIGESTS_MISSPELLED),
        (lambda text: text.splitlines(keepends=True)[0], DIGESTS_MISSPELLED),
    ],
    ids=["missing", "uppercase", "binary-mode", "no-newline", "twice", "reordered", "no-test-split"],
)
def test_a_missing_or_misspelled_predictions_digest_is_refused_in_one_line(workspace, damage, problem):
    """Each is refused as no digest evaluate writes, before any predictions are drawn."""
    digest = Path(paths.PREDICTIONS_DIGEST)
    if damage is None:
        digest.unlink()
    else:
        digest.write_text(damage(digest.read_text()))
    message = refusal(stages.explain.main, workspace)
    assert message == f"{paths.PREDICTIONS_DIGEST}: {problem}; re-create it with `dvc repro evaluate`"


def test_with_no_misclassified_images_explain_says_so_and_explains_the_least_confident_correct_ones(workspace, caplog):
    write_predictions(Path(), predictions_of(TEST_SPLIT, wrong=0))
    caplog.set_level(logging.INFO)
    stages.explain.main()
    assert caplog.messages == [
        "no misclassified test images: explaining the 4 least confident correct predictions instead",
        f"wrote Grad-CAM grids of 4 least confident correct predictions at layer2, layer3 to {paths.GRADCAM_IMAGES}",
    ]
    # Their predicted class is the correct one: one grid per layer, none left of the previous run.
    assert sorted(path.name for path in Path(paths.GRADCAM_IMAGES).iterdir()) == [
        "layer2_correct.png",
        "layer3_correct.png",
    ]


def name_an_unknown_model():
    write_unknown_model(paths.MODEL)


def index_beyond_the_test_split():
    Path(paths.PREDICTIONS).write_text(with_first("index", 20)(pd.read_csv(paths.PREDICTIONS)))


@pytest.mark.parametrize(
    ("damage", "failing_stage", "message"),
    [
        (
            name_an_unknown_model,
            "evaluate",
            f"{paths.MODEL}: not a model saved by the train stage (its model config: model.name = 'vgg' is not "
            "allowed; expected one of 'custom_resnet', 'resnet18'); re-create it with `dvc repro train`",
        ),
        (
            index_beyond_the_test_split,
            "explain",
            f"{paths.PREDICTIONS}: column index holds 1..20, beyond the 20 test images (0..19); "
            "re-create it with `dvc repro evaluate`",
        ),
    ],
)
def test_a_stage_given_a_bad_artifact_exits_2_with_one_line_on_stderr(workspace, damage, failing_stage, message):
    copy_pipeline(workspace)
    damage()
    before = outputs(workspace)
    result = stage(workspace, failing_stage, check=False)
    assert (result.returncode, result.stderr.splitlines()) == (2, [f"error: {message}"])
    assert outputs(workspace) == before


LR_FIND_CSV = "lr,log10_lr,loss\n0.001,-3.0,2.3\n0.002,-2.7,2.2\n"


@pytest.mark.parametrize(
    ("path", "failing_stage", "fix"),
    [
        (paths.PREDICTIONS, "explain", "re-create it with `dvc repro evaluate`"),
        (paths.PREDICTIONS_DIGEST, "explain", "re-create it with `dvc repro evaluate`"),
        (
            paths.MAX_LR_PICK,
            "train",
            "run the lr_find stage first (`dvc repro lr_find`) or set train.max_lr to a number",
        ),
        (paths.LR_FIND_CURVE, "figures", "re-create it with `dvc repro lr_find`"),
        (
            f"{paths.DATA}/manifest.json",
            "evaluate",
            "re-create it with `dvc repro download` (or `dvc checkout` to restore it from the cache)",
        ),
        # It was called "not found".
        (
            f"{paths.DATA}/test.npz",
            "evaluate",
            "re-create it with `dvc repro download` (or `dvc checkout` to restore it from the cache)",
        ),
    ],
    ids=["predictions", "predictions-digest", "max-lr-pick", "plot-csv", "manifest", "split"],
)
@pytest.mark.parametrize(
    ("make", "kind"),
    [(os.mkfifo, "a named pipe (FIFO)"), (lambda path: os.symlink("/dev/zero", path), "a device")],
    ids=["fifo", "dev-zero"],
)
def test_an_artifact_that_is_a_named_pipe_or_device_is_refused_unread(workspace, path, failing_stage, fix, make, kind):
    """A named pipe blocked the stage forever at open() or read; /dev/zero reports size 0, so size
    checks passed and a read without a bound filled memory (21.5 GB in explain)."""
    copy_pipeline(workspace)
    Path(paths.LR_FIND_CURVE).parent.mkdir(exist_ok=True)
    Path(paths.LR_FIND_CURVE).write_text(LR_FIND_CSV)  # what figures reads before the artifact under test
    Path(path).parent.mkdir(exist_ok=True)
    Path(path).unlink(missing_ok=True)
    make(path)
    before = outputs(workspace)
    # The guard kills a stage that blocks, so a regression fails here instead of stalling the suite.
    result, _ = stage_with_peak_memory(workspace, failing_stage, hang_guard_seconds=300)
    assert (result.returncode, result.stderr.splitlines()) == (2, [f"error: {path}: {kind}, not a regular file; {fix}"])
    assert outputs(workspace) == before


def test_a_split_without_images_is_refused(workspace):
    """evaluate ended in torch.cat(): expected a non-empty list of Tensors."""
    empty = Split(np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int64), TEST_SPLIT.classes)
    save_dataset({"train": synthetic_split(20, seed=0), "test": empty}, paths.DATA)
    assert refusal(stages.evaluate.main, workspace) == (
        f"{paths.DATA}/test.npz: holds no images; re-create it with `dvc repro download` (or `dvc checkout` to restore "
        f"it from the cache)"
    )


def test_a_test_split_without_images_of_a_class_is_refused(workspace):
    """evaluate wrote an empty per-class accuracy for the class and exited 0; figures then
    refused that table and named evaluate, whose rerun wrote the same."""
    test = synthetic_split(20, seed=1)
    kept = test.labels != 9
    save_dataset(
        {"train": synthetic_split(20, seed=0), "test": Split(test.images[kept], test.labels[kept], test.classes)},
        paths.DATA,
    )
    assert refusal(stages.evaluate.main, workspace) == (
        f"{paths.DATA}/test.npz: holds no images of class {test.classes[9]!r}; re-create it with "
        "`dvc repro download` (or `dvc checkout` to restore it from the cache)"
    )


@pytest.mark.parametrize("classes", [("airplane",), tuple(f"class {n}" for n in range(1001))], ids=["one", "1001"])
def test_a_split_of_one_class_or_more_than_a_thousand_is_refused(tmp_path, classes):
    """A model's last layer grows with the class count: a million names would fill memory."""
    save_dataset({"train": Split(TEST_SPLIT.images, np.zeros(20, np.int64), classes)}, tmp_path)
    with pytest.raises(DataError) as refused:
        load_split(tmp_path, "train")
    assert str(refused.value).startswith(
        f"{tmp_path}/train.npz: {len(classes)} class names, expected 2 to 1000 (CIFAR-10 has 10); "
    )


@pytest.mark.parametrize(
    "classes", [("airplane", "airplane", "bird"), ("airplane", "", "bird")], ids=["a-name-twice", "an-empty-name"]
)
def test_a_split_whose_class_names_repeat_or_are_empty_is_refused(tmp_path, classes):
    """train trained and saved a model on a split naming two labels 'airplane', which every
    later stage then refused as not train's."""
    save_dataset({"train": Split(TEST_SPLIT.images, np.zeros(20, np.int64), classes)}, tmp_path)
    with pytest.raises(DataError) as refused:
        load_split(tmp_path, "train")
    assert str(refused.value).startswith(
        f"{tmp_path}/train.npz: class names {list(classes)!r} are not all different and non-empty; "
    )


def npy(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


def split_members(**replaced: bytes) -> dict[str, bytes]:
    arrays = {"images": TEST_SPLIT.images, "labels": TEST_SPLIT.labels, "classes": np.array(TEST_SPLIT.classes)}
    members = {f"{key}.npy": npy(value) for key, value in arrays.items()}
    return members | {f"{key}.npy": value for key, value in replaced.items()}


def zip_of(members: dict[str, bytes]) -> bytes:
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return stream.getvalue()


def with_central_field(data: bytes, offset: int, value: bytes) -> bytes:
    """A zip with a field of each member's central directory entry set (at `offset` from its signature)."""
    patched = bytearray(data)
    at = patched.find(b"PK\x01\x02")
    while at >= 0:
        patched[at + offset : at + offset + len(value)] = value
        at = patched.find(b"PK\x01\x02", at + 1)
    return bytes(patched)


@pytest.mark.parametrize(
    ("contents", "problem"),
    [
        (zip_of(split_members(classes=npy(np.array("airplane")))), "class names are <U8 (), expected a list of text"),
        (zip_of(split_members(images=b"raw pixels")), "its member images.npy is not a .npy array"),
        (
            with_central_field(zip_of(split_members()), 8, b"\x01\x00"),  # general purpose flags: encrypted
            "its member 'images.npy' is encrypted or compressed otherwise than np.savez and np.savez_compressed write",
        ),
        (
            with_central_field(zip_of(split_members()), 10, b"\x09\x00"),  # method: Deflate64
            "its member 'images.npy' is encrypted or compressed otherwise than np.savez and np.savez_compressed write",
        ),
        (
            zip_of(split_members() | {f"{n}": b"" for n in range(2_000)}),  # 99 KB of directory
            "its list of members takes 99,059 bytes",
        ),
        (
            zip_of(split_members(classes=npy(np.array(["cr\rx", *TEST_SPLIT.classes[1:]])))),
            "class name 'cr\\rx' is not printable text",
        ),
        (
            zip_of(split_members(classes=npy(np.array(["\ud800x", *TEST_SPLIT.classes[1:]])))),
            "class names hold code points that are not Unicode",
        ),
        (
            zip_of(split_members(classes=npy(np.frombuffer(b"\x00\x00\x11\x00" * 10, "<U1")))),
            "class names hold code points that are not Unicode",
        ),
    ],
    ids=[
        "classes-not-a-list",
        "member-not-npy",
        "encrypted",
        "deflate64",
        "2000-members",
        "carriage-return",
        "lone-surrogate",
        "beyond-unicode",
    ],
)
def test_a_split_file_numpy_would_read_otherwise_is_refused(tmp_path, contents, problem):
    """Each, with the manifest's digest made to match, ended in a traceback (TypeError,
    AttributeError, RuntimeError, NotImplementedError), or, 1.8 million empty members, took train
    554 MiB more than the split's file. A carriage return in a class name split evaluate's CSV
    rows, and figures blamed evaluate's table; a lone surrogate was called a path the locale
    cannot encode; a code point beyond Unicode was a traceback once train had saved a model."""
    save_dataset({"train": TEST_SPLIT}, tmp_path)
    (tmp_path / "train.npz").write_bytes(contents)
    (tmp_path / "manifest.json").write_text(json.dumps({"train.npz": hashlib.sha256(contents).hexdigest()}))
    with pytest.raises(DataError) as refused:
        load_split(tmp_path, "train")
    assert str(refused.value).startswith(f"{tmp_path}/train.npz: {problem}"), str(refused.value)


def test_class_names_of_no_bytes_are_counted_before_each_is_made_a_string(tmp_path):
    """A 617 KB split file declaring 250 million names of no characters (`<U0`) took evaluate
    2.9 GB and 44 s before the class count refused it: a string was made of each first."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<U0", "fortran_order": False, "shape": (3_000_000,)})
    contents = zip_of(split_members(classes=header.getvalue()))
    save_dataset({"train": TEST_SPLIT}, tmp_path)
    (tmp_path / "train.npz").write_bytes(contents)
    (tmp_path / "manifest.json").write_text(json.dumps({"train.npz": hashlib.sha256(contents).hexdigest()}))
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as refused:
            load_split(tmp_path, "train")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(refused.value).startswith(f"{tmp_path}/train.npz: 3000000 class names, expected 2 to 1000")
    assert peak < 8 << 20, f"{peak:,} bytes"  # a tuple of 3 million names takes 24 MB


def test_a_split_with_a_class_name_over_100_characters_is_refused(tmp_path):
    """A split whose names took 3,001 characters each trained and was evaluated, then figures
    refused evaluate's per-class table as too large, and re-running evaluate could not help."""
    classes = ("x" * 101, *TEST_SPLIT.classes[1:])
    save_dataset({"train": Split(TEST_SPLIT.images, TEST_SPLIT.labels, classes)}, tmp_path)
    with pytest.raises(DataError) as refused:
        load_split(tmp_path, "train")
    assert str(refused.value).startswith(
        f"{tmp_path}/train.npz: class name 'xxx"
    ) and "has 101 characters, more than the 100 a class name may take; re-create it with" in str(refused.value)


def test_figures_reads_class_names_of_digits_as_names(tmp_path):
    """Classes named '0' to '9' were read back from evaluate's per-class table as numbers, and figures
    blamed evaluate's table: "holds 0 in row 0, not one of the test split's classes"."""
    classes = tuple(str(digit) for digit in range(10))
    table = tmp_path / "per_class.csv"
    pd.DataFrame({"class": classes, "images": 1, "correct": 1, "accuracy": 1.0}).to_csv(table, index=False)
    count = stages.figures.Numbers(0, 10, True, "a count")
    read = stages.figures.read_table(
        str(table), {"class": classes, "images": count, "correct": count}, "evaluate", most_rows=10, once="class"
    )
    assert tuple(read["class"]) == classes


def pick_of(max_lr: str) -> str:
    """The text of the pick lr_find hands train after a descent, with max_lr's JSON as given."""
    return f'{{"verdict": "descent", "max_lr": {max_lr}}}'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (pick_of("NaN"), "max_lr = nan is not a learning rate (a number from 1e-30 to 1000)"),
        (pick_of("-1"), "max_lr = -1 is not a learning rate (a number from 1e-30 to 1000)"),
        (pick_of("true"), "max_lr = True is not a learning rate (a number from 1e-30 to 1000)"),
        # Finite, but beyond float32 in Adam's step: a raw RuntimeError.
        (pick_of("1e300"), "max_lr = 1e+300 is not a learning rate (a number from 1e-30 to 1000)"),
        (pick_of('"0.01"'), "max_lr = '0.01' is not a learning rate (a number from 1e-30 to 1000)"),
        ("[0.01]", "no max_lr to read (a JSON list, not the object lr_find writes)"),
        ('{"verdict": "descent"}', "max_lr = None is not a learning rate (a number from 1e-30 to 1000)"),
        ('{"max_lr": 0.01}', "verdict = None is not 'descent', 'flat' or 'rising'"),
        ('{"verdict": "downhill", "max_lr": 0.01}', "verdict = 'downhill' is not 'descent', 'flat' or 'rising'"),
        # A raw RecursionError from the json module.
        (
            '{"verdict": "descent", "max_lr": 0.01, "x": ' + "[" * 30_000 + "]" * 30_000 + "}",
            "no max_lr to read (maximum recursion depth exceeded while decoding a JSON array from a unicode string)",
        ),
    ],
    ids=[
        "nan",
        "negative",
        "true",
        "huge",
        "string",
        "list",
        "no-max-lr",
        "no-verdict",
        "unknown-verdict",
        "deep-nesting",
    ],
)
def test_train_refuses_a_max_lr_that_is_no_learning_rate(workspace, text, problem):
    """NaN and -1 ended in torch's raw `ValueError: Invalid learning rate`."""
    Path(paths.MAX_LR_PICK).parent.mkdir(exist_ok=True)
    Path(paths.MAX_LR_PICK).write_text(text)
    with pytest.raises(DataError) as refused:
        stages.train.chosen_max_lr(load_params(paths.PARAMS))
    assert str(refused.value) == (
        f"{paths.MAX_LR_PICK}: {problem}; run the lr_find stage first (`dvc repro lr_find`) or set train.max_lr "
        f"to a number"
    )


def test_train_refuses_a_pick_lr_find_made_with_other_params(workspace):
    """Run on its own after train.optimizer was set to sgd, train ran SGD at the pick of an Adam
    range test, with exit 0 and no warning."""
    ran_with = declared_values(paths.declared_params("lr_find")) | {"train.optimizer": "sgd"}
    Path(paths.MAX_LR_PICK).parent.mkdir(exist_ok=True)
    Path(paths.MAX_LR_PICK).write_text(json.dumps({"verdict": "descent", "max_lr": 0.001, "params": ran_with}))
    with pytest.raises(DataError) as refused:
        stages.train.chosen_max_lr(load_params(paths.PARAMS))
    assert str(refused.value) == (
        f"{paths.MAX_LR_PICK}: lr_find ran with train.optimizer = 'sgd', but params.yaml now says 'adam'; re-run it "
        f"with `dvc repro lr_find`, or set train.max_lr to a number"
    )


def handed_pick(**fields) -> None:
    """The file lr_find hands its pick on in, and its curve, as written for today's params and
    training split, `fields` changed."""
    config = load_params(paths.PARAMS).lr_find
    lrs = np.geomspace(config.start_lr, config.end_lr, config.num_iter)
    losses = np.concatenate([np.linspace(2.3, 1.0, config.num_iter - 3), [1.2, 1.8, 2.6]])  # a descent, then a rise
    curve = pd.DataFrame({"lr": lrs, "log10_lr": np.log10(lrs), "loss": losses}).to_csv(index=False)
    Path(paths.LR_FIND_CURVE).parent.mkdir(exist_ok=True)
    Path(paths.LR_FIND_CURVE).write_text(curve)
    Path(paths.MAX_LR_PICK).parent.mkdir(exist_ok=True)
    handed = {
        "verdict": "descent",
        "max_lr": read_curve(lrs.tolist(), losses.tolist(), config).max_lr,
        "curve_sha256": text_digest(curve),
        "params": declared_values(paths.declared_params("lr_find")),
        "train_sha256": split_digest(paths.DATA, "train"),
    }
    Path(paths.MAX_LR_PICK).write_text(json.dumps(handed | fields))


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        # Trained at with exit 0; figures then blamed the LR schedule, and `dvc repro train` trained at it again.
        ({"max_lr": 0.01}, f"max_lr = 0.01, but lr_find picked 0.000180338 off {paths.LR_FIND_CURVE}"),
        # train blamed the range test ("found no descent") and advised a longer or wider range.
        (
            {"verdict": "flat", "max_lr": None},
            f"verdict = 'flat', but lr_find reads 'descent' off {paths.LR_FIND_CURVE}",
        ),
        ({"curve_sha256": "0" * 64}, None),
    ],
    ids=["max-lr-edited", "verdict-edited", "another-curve"],
)
def test_train_refuses_a_pick_lr_find_did_not_read_off_its_curve(workspace, fields, problem):
    handed_pick(**fields)
    with pytest.raises(DataError) as refused:
        stages.train.chosen_max_lr(load_params(paths.PARAMS))
    fix = "re-run it with `dvc repro lr_find`, or set train.max_lr to a number"
    assert str(refused.value) == (
        f"{paths.MAX_LR_PICK}: {problem}; {fix}"
        if problem
        else f"{paths.LR_FIND_CURVE}: not the curve lr_find wrote (its SHA-256 is not the one {paths.MAX_LR_PICK} "
        f"records); {fix}"
    )


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        # data.train_limit raised from 500 to 700 and download re-run: train trained on 700
        # images at the pick of a range test on 500, with exit 0 and no warning.
        (
            {"train_sha256": "0" * 64},
            f"train_sha256 is not the SHA-256 of {paths.DATA}/train.npz as it is now: it was made from other data",
        ),
        # It was said to be of another split.
        ({"train_sha256": None}, "train_sha256 = None is not a SHA-256 digest (64 lowercase hexadecimal digits)"),
        # The split's own digest in capitals was said to be of another split.
        (
            {"train_sha256": str.upper},
            "train_sha256 = {} is not a SHA-256 digest (64 lowercase hexadecimal digits)",
        ),
    ],
    ids=["another-split", "no-split-recorded", "capitals"],
)
def test_train_refuses_a_pick_lr_find_made_on_another_training_split(workspace, fields, problem):
    recorded = fields["train_sha256"]
    if callable(recorded):
        fields = {"train_sha256": recorded(split_digest(paths.DATA, "train"))}
        problem = problem.format(short_repr(fields["train_sha256"]))
    handed_pick(**fields)
    with pytest.raises(DataError) as refused:
        stages.train.main()
    assert str(refused.value) == (
        f"{paths.MAX_LR_PICK}: {problem}; re-run it with `dvc repro lr_find`, or set train.max_lr to a number"
    )


def test_train_names_a_damaged_split_before_a_pick_of_another(workspace):
    """One digit of the manifest's train digest changed: train said lr_find ran on another
    split, and both its fixes failed again."""
    handed_pick()
    manifest = Path(paths.DATA) / "manifest.json"
    digests = json.loads(manifest.read_text())
    digests["train.npz"] = ("1" if digests["train.npz"][0] == "0" else "0") + digests["train.npz"][1:]
    manifest.write_text(json.dumps(digests))
    with pytest.raises(DataError) as refused:
        stages.train.main()
    assert str(refused.value).startswith(f"{paths.DATA}/train.npz: ")
    assert "re-create it with `dvc repro download`" in str(refused.value)


def test_lr_find_hands_on_the_params_and_split_it_started_with(pipeline_run, monkeypatch):
    """train.optimizer edited while lr_find ran: lr_find refused at its end, but had recorded the
    new value beside the old one's pick, so train and figures, run on their own, took an Adam
    range test for an SGD one."""
    started_with = declared_values(paths.declared_params("lr_find"))
    range_test = stages.lr_find.range_test

    def edited_midway(*args):
        text = Path(paths.PARAMS).read_text()
        assert text.count("optimizer: adam") == 1
        Path(paths.PARAMS).write_text(text.replace("optimizer: adam", "optimizer: sgd"))
        return range_test(*args)

    monkeypatch.setattr(stages.lr_find, "range_test", edited_midway)
    stages.lr_find.main()
    handed = json.loads(Path(paths.MAX_LR_PICK).read_text())
    assert (handed["params"], handed["train_sha256"]) == (started_with, split_digest(paths.DATA, "train"))
    with pytest.raises(DataError) as refused:
        stages.train.chosen_max_lr(load_params(paths.PARAMS))
    assert "lr_find ran with train.optimizer = 'adam', but params.yaml now says 'sgd'" in str(refused.value)


def with_params(root: Path, changes: dict) -> None:
    params = merge(asdict(load_params(root / paths.PARAMS)), changes)
    (root / paths.PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))


def read_only(monkeypatch, folder: str) -> None:
    """Make `folder` (relative to the current directory) refuse new files as a read-only mount
    does: temporary files are where every output is written first. (Folder permissions would
    not do: the tests may run as root.)"""
    real = tempfile.mkdtemp

    def mkdtemp(*arguments, dir=None, **options):
        if dir is not None and Path(dir).resolve() == Path(folder).resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*arguments, dir=dir, **options)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)


def test_an_immutable_output_or_a_mount_point_in_its_place_is_named_as_such(tmp_path, monkeypatch):
    """`chattr +i` on evaluate's predictions and a file system mounted where download writes
    its splits were each told to make their folder one "you may write to", which it was."""
    target = tmp_path / "predictions.csv"
    target.write_text("old\n")
    if subprocess.run(["chattr", "+i", str(target)], capture_output=True).returncode:
        pytest.skip("chattr +i needs root and a file system with the flag")
    try:
        with pytest.raises(OutputError) as refused, atomic_path(target) as temporary:
            temporary.write_text("new\n")
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)
    assert str(refused.value) == (
        f"cannot write {target} (Operation not permitted): {target} is marked immutable or append-only (`lsattr -d "
        f"{target}` shows it); clear that with `chattr -i -a {target}` and re-run"
    )

    def replace_over_a_mount_point(source, destination):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(source), str(destination))

    monkeypatch.setattr(os, "replace", replace_over_a_mount_point)
    monkeypatch.setattr(os, "rename", replace_over_a_mount_point)
    with pytest.raises(OutputError) as refused, atomic_path(target) as temporary:
        temporary.write_text("new\n")
    assert str(refused.value) == (
        f"cannot replace {target} (Device or resource busy): a file system is mounted there; unmount it (`umount "
        f"{target}`) and re-run"
    )
    assert target.read_text() == "old\n"
    monkeypatch.undo()
    subprocess.run(["chattr", "+a", str(tmp_path)], check=True)
    try:  # an append-only folder let the scratch be made, and never removed
        with pytest.raises(OutputError) as refused, atomic_path(target) as temporary:
            temporary.write_text("new\n")
        left = sorted(path.name for path in tmp_path.iterdir())
    finally:
        subprocess.run(["chattr", "-a", str(tmp_path)], check=True)
    assert str(refused.value).startswith(f"cannot write {target} (Operation not permitted): {tmp_path} is marked ")
    assert left == ["predictions.csv"]


@pytest.mark.parametrize(
    ("name", "folder", "target"),
    [
        ("download", "data", paths.DATA),
        ("lr_find", "metrics", paths.LR_FIND_METRICS),
        ("train", "models", paths.MODEL),
        # The model came first, so it was written before the failure and the rest were not.
        ("train", "plots", paths.HISTORY),
        ("lr_find", "plots", paths.LR_FIND_CURVE),
        ("evaluate", "metrics", paths.EVALUATE_METRICS),
        ("figures", "plots/images", paths.LR_FINDER_IMAGE),
        ("explain", "plots/images", paths.GRADCAM_IMAGES),
    ],
)
def test_a_read_only_output_folder_is_one_line_in_every_stage(pipeline_run, monkeypatch, capsys, name, folder, target):
    """Only download turned `OSError: [Errno 30] Read-only file system` into one line."""
    if name == "lr_find":
        with_params(pipeline_run, {"lr_find": {"num_iter": 2}})  # lr_find writes after its range test
    read_only(monkeypatch, folder)
    before = outputs(pipeline_run)
    with pytest.raises(SystemExit) as exited:
        run_stage(importlib.import_module(f"stages.{name}").main, paths.output_folders())
    errors = capsys.readouterr().err.splitlines()
    assert exited.value.code == 2 and errors[-1] == (
        f"error: cannot write {target} (Read-only file system); make {folder} a folder you may write to, and re-run"
    )
    after = outputs(pipeline_run)
    if name == "train":  # trained: its checkpoint stays, for the next run to write the outputs from
        checkpoints = Path(paths.CHECKPOINT).parent.as_posix()
        assert after.pop(checkpoints) and before.pop(checkpoints) == {}
    assert after == before


def test_a_file_a_stage_cannot_read_is_one_line(pipeline_run, capsys):
    """A folder where figures reads a CSV was a traceback."""
    Path(paths.LR_FIND_CURVE).unlink()
    Path(paths.LR_FIND_CURVE).mkdir()
    with pytest.raises(SystemExit) as exited:
        run_stage(stages.figures.main, paths.output_folders())
    assert exited.value.code == 2 and capsys.readouterr().err.splitlines()[-1] == (
        f"error: {paths.LR_FIND_CURVE}: a folder, not a regular file; re-create it with `dvc repro lr_find`"
    )


def rewrite(path: str, change) -> None:
    Path(path).write_text(change(Path(path).read_text()))


def first_cell(column: str, value, row: int = 0):
    """A change to a CSV's text: `value` in `row` (the first by default; -1: the last) of `column`."""

    def change(text: str) -> str:
        table = pd.read_csv(io.StringIO(text))
        table.loc[table.index[row], column] = value
        return table.to_csv(index=False)

    return change


def halved(column: str, row: int):
    """A change to a CSV's text: the value in `row` of `column` halved."""

    def change(text: str) -> str:
        table = pd.read_csv(io.StringIO(text))
        table.loc[row, column] /= 2
        return table.to_csv(index=False)

    return change


def doubled_at_the_peak_loss(text: str) -> str:
    """A change to lr_find's curve: its highest loss doubled, far from its minimum."""
    table = pd.read_csv(io.StringIO(text))
    table.loc[table["loss"].idxmax(), "loss"] *= 2
    return table.to_csv(index=False)


def lr_find_metric_at_another_tested_lr(key: str):
    """A change to lr_find.json: `key` moved to the next learning rate its curve tested."""

    def change(text: str) -> str:
        tested = pd.read_csv(paths.LR_FIND_CURVE)["lr"].to_numpy()
        metrics = json.loads(text)
        metrics[key] = float(tested[(np.abs(tested - metrics[key]).argmin() + 1) % len(tested)])
        return json.dumps(metrics)

    return change


def losses_reversed(text: str) -> str:
    """A change to lr_find's curve: its losses in reverse order, its learning rates kept."""
    table = pd.read_csv(io.StringIO(text))
    table["loss"] = table["loss"].to_numpy()[::-1]
    return table.to_csv(index=False)


def another_class_in_the_first_row(column: str):
    """A change to a CSV of class names: the first row of `column` names the next class instead."""

    def change(text: str) -> str:
        table = pd.read_csv(io.StringIO(text))
        classes = sorted(set(table["actual"]))
        table.loc[0, column] = classes[(classes.index(table.loc[0, column]) + 1) % len(classes)]
        return table.to_csv(index=False)

    return change


def rows_rearranged(rearrange):
    """A change to a CSV's text: its rows (not its header) in the order `rearrange` gives them."""

    def change(text: str) -> str:
        header, *rows = text.splitlines(keepends=True)
        return header + "".join(rearrange(rows))

    return change


def repeated(times: int):
    """A change to a CSV's text: its rows `times` times over."""
    return lambda text: text.splitlines(keepends=True)[0] + "".join(text.splitlines(keepends=True)[1:]) * times


EPOCHS = SMALL_SYNTHETIC["train"]["epochs"]
STEPS = EPOCHS * (SMALL_SYNTHETIC["data"]["train_limit"] // SMALL_SYNTHETIC["train"]["batch_size"])


def json_field(key: str, value):
    """A change to a JSON object's text: `key` set to `value`."""

    def change(text: str) -> str:
        return json.dumps(json.loads(text) | {key: value})

    return change


def json_without(key: str):
    """A change to a JSON object's text: `key` removed."""

    def change(text: str) -> str:
        return json.dumps({name: value for name, value in json.loads(text).items() if name != key})

    return change


def recorded_param(key: str, value):
    """A change to the text of the file lr_find hands its pick on in: the params it ran with, `key` set to `value`."""

    def change(text: str) -> str:
        handed = json.loads(text)
        handed["params"][key] = value
        return json.dumps(handed)

    return change


def without_last_rows(count: int):
    """A change to a CSV's text: its last `count` rows cut off."""
    return lambda text: "\n".join(text.splitlines()[:-count]) + "\n"


@pytest.mark.parametrize(
    ("path", "change", "problem", "stage"),
    [
        # Each was a raw traceback (EmptyDataError, KeyError, ValueError of argmin, TypeError of a cast).
        (paths.HISTORY, lambda text: "", "unreadable (No columns to parse from file)", "train"),
        (paths.HISTORY, lambda text: text.replace("test_accuracy", "renamed"), "no column test_accuracy", "train"),
        (paths.LR_FIND_CURVE, lambda text: text.splitlines()[0] + "\n", "no rows", "lr_find"),
        (
            paths.CONFUSION,
            lambda text: text.replace("\n", "\nnot-a-class,not-a-class\n", 1),
            "column actual holds 'not-a-class' in row 0, not one of the test split's classes",
            "evaluate",
        ),
        (paths.LR_FIND_METRICS, lambda text: "{}", "no max_lr to read ('max_lr')", "lr_find"),
        # Drawn with exit 0: text on a loss axis, a curve of infinities.
        (paths.HISTORY, lambda text: text.replace("\n1,", "\n1,lots", 1), "column train_loss holds 'lots", "train"),
        (
            paths.LR_SCHEDULE,
            lambda text: text.replace("\n1,", "\n1,inf\n0,", 1),
            "column lr holds inf in row 0, not a finite number",
            "train",
        ),
        # Drawn with exit 0: a class's bar twice, an epoch's point twice.
        (
            paths.PER_CLASS,
            lambda text: text + text.splitlines()[1] + "\n",
            "column class holds 'class_0' again in row 10",
            "evaluate",
        ),
        (paths.HISTORY, lambda text: text + text.splitlines()[1] + "\n", "column epoch holds 1 again in row", "train"),
        # Drawn with exit 0: values no stage can write.
        (
            paths.PER_CLASS,
            first_cell("accuracy", 5.0),
            "column accuracy holds 5.0 in row 0, not an accuracy from 0 to 1",
            "evaluate",
        ),
        (
            paths.HISTORY,
            first_cell("test_accuracy", 7.0),
            "column test_accuracy holds 7.0 in row 0, not an accuracy from 0 to 1",
            "train",
        ),
        (
            paths.HISTORY,
            first_cell("train_loss", -3.0),
            "column train_loss holds -3.0 in row 0, not a cross-entropy loss from 0 to 3.403e+38",
            "train",
        ),
        (
            paths.LR_SCHEDULE,
            first_cell("lr", -1.0),
            "column lr holds -1.0 in row 0, not a learning rate above 0",
            "train",
        ),
        # Values no stage can write, where matplotlib's tick placement failed with a raw ValueError.
        (
            paths.LR_FIND_CURVE,
            first_cell("loss", 1e308),
            "column loss holds 1e+308 in row 0, not a cross-entropy loss from 0 to 3.403e+38 (float32's largest)",
            "lr_find",
        ),
        (
            paths.HISTORY,
            lambda text: text.replace("\n1,", "\n1e308,", 1),
            "column epoch holds 1e+308 in row 0, not an epoch from 1 to",
            "train",
        ),
        # Drawn with exit 0 as picks: values lr_find cannot write.
        (
            paths.LR_FIND_METRICS,
            json_field("max_lr", 1e308),
            f"max_lr = 1e+308 lies outside the LRs {paths.LR_FIND_CURVE} tested",
            "lr_find",
        ),
        (
            paths.LR_FIND_METRICS,
            json_field("steepest_lr", 5e-324),
            f"steepest_lr = 5e-324 lies outside the LRs {paths.LR_FIND_CURVE} tested",
            "lr_find",
        ),
        # An integer beyond a float's range was an OverflowError traceback.
        (
            paths.LR_FIND_METRICS,
            json_field("max_lr", 10**400),
            f"max_lr = 100000000000000000...0000000000000000000 lies outside the LRs {paths.LR_FIND_CURVE} tested",
            "lr_find",
        ),
        (paths.LR_FIND_METRICS, json_field("descent", "false"), "descent = 'false' is not true or false", "lr_find"),
        # Drawn with exit 0: part of an epoch's, a schedule's or a class's rows.
        (
            paths.HISTORY,
            without_last_rows(1),
            f"{EPOCHS - 1} row(s), fewer than the {EPOCHS} that train writes",
            "train",
        ),
        (
            paths.LR_SCHEDULE,
            without_last_rows(STEPS // 2),
            f"{STEPS - STEPS // 2} row(s), fewer than the {STEPS} that train writes",
            "train",
        ),
        (paths.PER_CLASS, without_last_rows(1), "9 row(s), fewer than the 10 that evaluate writes", "evaluate"),
        (
            paths.LR_FIND_CURVE,
            lambda text: "\n".join(text.splitlines()[:2]) + "\n",
            "1 row(s), fewer than the 2 that lr_find writes",
            "lr_find",
        ),
        (
            paths.CONFUSION,
            lambda text: "\n".join(text.splitlines()[:6]) + "\n",
            f"5 row(s), fewer than the {SMALL_SYNTHETIC['data']['test_limit']} that evaluate writes",
            "evaluate",
        ),
        # Drawn with exit 0: too many rows (each counted twice), or tables that disagree with the
        # predictions evaluate wrote with them.
        (
            paths.CONFUSION,
            repeated(2),
            f"more than the {SMALL_SYNTHETIC['data']['test_limit']} rows that evaluate writes",
            "evaluate",
        ),
        (paths.LR_SCHEDULE, repeated(10), f"more than the {STEPS} rows that train writes", "train"),
        # Pass 78: a row of a million columns took figures 2.8 GB before its refusal; counted in the header now.
        (paths.LR_FIND_CURVE, lambda text: "lr,loss" + ",c" * 100 + "\n1e-3,2.0\n", "102 columns, far more", "lr_find"),
        # Pass 79: ended by a lone `\r`, which pandas takes for a line end, 191,950 kept figures past 300 s.
        (paths.LR_FIND_CURVE, lambda text: "lr,loss" + ",a" * 100 + "\r1e-3,2.0\r", "102 columns, far more", "lr_find"),
        (paths.LR_FIND_CURVE, lambda text: 'lr,loss,"a\nb"\n1e-3,2.0,0\n', "a quoted column name", "lr_find"),
        (
            paths.CONFUSION,
            another_class_in_the_first_row("predicted"),
            "row 0 says predicted 'class_",
            "evaluate",
        ),
        (paths.PER_CLASS, first_cell("accuracy", 0.5), "class 'class_0' has accuracy 0.5, not its ", "evaluate"),
        (
            paths.PER_CLASS,
            first_cell("images", 15),
            f"class 'class_0' has 15 images, but {paths.PREDICTIONS}",
            "evaluate",
        ),
        # Drawn with exit 0 as "no descent: nothing chosen" while train ran at the pick.
        (
            paths.LR_FIND_METRICS,
            json_field("max_lr", None),
            "descent is true but max_lr is null, where lr_find writes its pick",
            "lr_find",
        ),
        # Named as "lr_find reads None": a key lr_find never writes, and one it always does, gone.
        (
            paths.LR_FIND_METRICS,
            json_field("note", "rerun after fixing data"),
            "'note' is not a value lr_find reports",
            "lr_find",
        ),
        (
            paths.LR_FIND_METRICS,
            json_without("min_loss"),
            "has no min_loss, which lr_find reads as ",
            "lr_find",
        ),
        # Drawn with exit 0: a pick that training did not run at, marked on the LR finder's figure.
        (
            paths.LR_FIND_METRICS,
            json_field("max_lr", 0.001),
            f"max_lr = 0.001, but lr_find reads 0.003 off {paths.LR_FIND_CURVE}",
            "lr_find",
        ),
        # Drawn with exit 0 in file order: a schedule backwards, a curve zigzagging, epoch 2 missing.
        (
            paths.LR_SCHEDULE,
            rows_rearranged(lambda rows: rows[::-1]),
            f"column step holds {STEPS} in row 0, not 1: train writes them counted from 1 in order",
            "train",
        ),
        (
            paths.LR_FIND_CURVE,
            rows_rearranged(lambda rows: [rows[1], rows[0], *rows[2:]]),
            "column lr holds ",
            "lr_find",
        ),
        (
            paths.HISTORY,
            rows_rearranged(lambda rows: [rows[0], rows[1].replace("2,", "1.5,", 1), *rows[2:]]),
            "column epoch holds 1.5 in row 1, not 2: train writes them counted from 1 in order",
            "train",
        ),
        # Drawn with exit 0: another run's history of as many epochs, beside this run's train.json.
        (
            paths.HISTORY,
            first_cell("test_accuracy", 0.875, row=-1),
            f"test_accuracy 0.875, but {paths.TRAIN_METRICS} reports ",
            "train",
        ),
        (paths.HISTORY, first_cell("train_loss", 0.125, row=-1), "train_loss 0.125, but ", "train"),
        # Drawn with exit 0: an earlier epoch's loss halved, the last epoch and the best kept.
        (paths.HISTORY, halved("test_loss", 0), "epoch 1 has test_loss ", "train"),
        # Drawn with exit 0: a schedule train never ran, of the same peak, length and order.
        (paths.LR_SCHEDULE, halved("lr", 2), "step 3 ran at lr ", "train"),
        # Drawn with exit 0: a range test's losses in reverse, its learning rates kept.
        (paths.LR_FIND_CURVE, losses_reversed, "not the curve lr_find wrote", "lr_find"),
        # Shown by `dvc metrics show` with exit 0: a valley where the curve has none.
        (
            paths.LR_FIND_METRICS,
            lr_find_metric_at_another_tested_lr("valley_lr"),
            "valley_lr = ",
            "lr_find",
        ),
        # Drawn with exit 0 and titled "Adam": a range test of another optimizer.
        (
            paths.MAX_LR_PICK,
            recorded_param("train.optimizer", "sgd"),
            "lr_find ran with train.optimizer = 'sgd', but params.yaml now says 'adam'",
            "lr_find",
        ),
        # Drawn with exit 0 beside a model trained on the new split: a range test of another one.
        (
            paths.MAX_LR_PICK,
            json_field("train_sha256", "0" * 64),
            f"train_sha256 is not the SHA-256 of {paths.DATA}/train.npz as it is now: it was made from other data",
            "lr_find",
        ),
        (
            paths.MAX_LR_PICK,
            json_without("train_sha256"),
            "train_sha256 = None is not a SHA-256 digest (64 lowercase hexadecimal digits)",
            "lr_find",
        ),
        # Drawn with exit 0: one loss doubled in mid-curve, the minimum and the picks kept.
        (paths.LR_FIND_CURVE, doubled_at_the_peak_loss, "not the curve lr_find wrote", "lr_find"),
        # Trained at, and then the schedule blamed, with `dvc repro train` as the fix.
        (paths.MAX_LR_PICK, json_field("max_lr", 0.01), "max_lr = 0.01, but lr_find picked ", "lr_find"),
        # Listed by `dvc metrics show` beside the checked values, with exit 0: values the stage never writes.
        (
            paths.TRAIN_METRICS,
            json_field("flip_tta_accuracy", 0.91),
            "'flip_tta_accuracy' is not a value train reports",
            "train",
        ),
        (
            paths.EVALUATE_METRICS,
            json_field("flip_tta_accuracy", 0.99),
            "'flip_tta_accuracy' is not a value evaluate reports with evaluate.tta false",
            "evaluate",
        ),
        (
            paths.EVALUATE_METRICS,
            json_without("loss"),
            "has no loss, which evaluate reports with evaluate.tta",
            "evaluate",
        ),
        (
            paths.EVALUATE_METRICS,
            json_field("loss", -1.5),
            "loss = -1.5 is not a cross-entropy loss from 0",
            "evaluate",
        ),
    ],
    ids=[
        "empty-history",
        "history-column",
        "curve-header-only",
        "unknown-class",
        "no-max-lr",
        "text-loss",
        "infinite-lr",
        "class-twice",
        "epoch-twice",
        "accuracy-500%",
        "test-accuracy-700%",
        "negative-loss",
        "negative-lr",
        "curve-loss-1e308",
        "epoch-1e308",
        "max-lr-1e308",
        "subnormal-steepest-lr",
        "max-lr-integer-of-401-digits",
        "descent-as-text",
        "history-part",
        "schedule-part",
        "per-class-part",
        "one-point-curve",
        "part-of-confusion",
        "confusion-twice",
        "schedule-ten-times",
        "columns-far-more",
        "columns-far-more-ended-by-a-carriage-return",
        "a-quoted-column-name",
        "confusion-against-predictions",
        "per-class-accuracy-against-counts",
        "per-class-images-against-predictions",
        "null-pick",
        "a-key-lr-find-never-writes",
        "min-loss-gone",
        "pick-not-trained-at",
        "schedule-reversed",
        "curve-out-of-order",
        "fractional-epoch",
        "another-runs-test-accuracy",
        "another-runs-train-loss",
        "an-earlier-epochs-loss-halved",
        "an-lr-halved-mid-schedule",
        "range-test-losses-reversed",
        "valley-lr-moved",
        "range-test-of-another-optimizer",
        "range-test-on-another-split",
        "range-test-split-not-recorded",
        "range-test-peak-loss-doubled",
        "handed-pick-edited",
        "a-key-train-never-writes",
        "flip-tta-accuracy-without-tta",
        "evaluate-loss-gone",
        "negative-evaluate-loss",
    ],
)
def test_figures_refuses_a_damaged_csv_or_metrics_file_in_one_line(pipeline_run, path, change, problem, stage):
    rewrite(path, change)
    before = outputs(pipeline_run)
    with pytest.raises(DataError) as refused:
        stages.figures.main()
    message = str(refused.value)
    assert message.startswith(f"{path}: {problem}") and message.endswith(f"; re-create it with `dvc repro {stage}`"), (
        message
    )
    assert outputs(pipeline_run) == before


@pytest.mark.parametrize(("key", "table"), [("max_lr", paths.LR_SCHEDULE), ("at_chance_level", paths.HISTORY)])
def test_figures_refuses_train_metrics_that_its_tables_contradict(pipeline_run, key, table):
    """Shown by `dvc metrics show` beside figures drawn with exit 0: a max_lr the schedule does
    not peak at, a run "at chance" whose test accuracy was not (or the other way round)."""
    reported = json.loads(Path(paths.TRAIN_METRICS).read_text())
    edited = 0.05 if key == "max_lr" else not reported[key]
    Path(paths.TRAIN_METRICS).write_text(json.dumps(reported | {key: edited}))
    assert refusal(stages.figures.main, pipeline_run) == (
        f"{table}: {key} {short_repr(reported[key])}, but {paths.TRAIN_METRICS} reports {short_repr(edited)}; "
        f"re-create it with `dvc repro train`"
    )


def test_figures_refuses_curves_measured_on_another_training_split(pipeline_run):
    """data.train_limit lowered, download and lr_find run again, train not (train.max_lr fixed):
    figures drew train's curves, of the previous training images, beside the new split's range test."""
    train, test = load_split(paths.DATA, "train"), load_split(paths.DATA, "test")
    fewer = Split(train.images[:-1], train.labels[:-1], train.classes)
    save_dataset({"train": fewer, "test": test}, paths.DATA)
    stages.lr_find.main()
    assert refusal(stages.figures.main, pipeline_run) == (
        f"{paths.HISTORY}: its training loss and accuracy were measured on another training split than "
        f"{paths.DATA}/train.npz holds now (or one {paths.MODEL} does not record); re-create it with `dvc repro train`"
    )


def test_figures_refuses_curves_trained_with_other_params(pipeline_run):
    """train.weight_decay changed, lr_find run again alone (its pick the same): figures drew the
    previous weight decay's curves as this run's, exit 0."""
    with_params(pipeline_run, {"train": {"weight_decay": 5e-4}})
    stages.lr_find.main()
    assert refusal(stages.figures.main, pipeline_run) == (
        f"{paths.MODEL}: train ran with train.weight_decay = 1e-07, but {paths.PARAMS} now says 0.0005; "
        "re-create it with `dvc repro train`"
    )


def test_figures_names_params_recorded_as_values_no_params_file_holds(pipeline_run):
    """A tensor recorded as the seed ended figures in "RuntimeError: Boolean value of Tensor with
    more than one value is ambiguous"."""
    payload = torch.load(paths.MODEL, weights_only=True)
    payload["trained_with"]["seed"] = torch.tensor([0, 0])
    save_as_train_would(payload, paths.MODEL)
    assert refusal(stages.figures.main, pipeline_run) == (
        f"{paths.MODEL}: train recorded the params it ran with as values no params.yaml holds (an edit put them "
        "there); re-create it with `dvc repro train`"
    )


@pytest.mark.parametrize("recorded", ["absent", "empty"])
def test_figures_names_a_model_that_records_no_params_as_such(pipeline_run, recorded):
    """A model.pt as an older train saved it, without the params it ran with: figures said "train
    ran with seed = no value, but params.yaml now says 0", blaming a seed that never changed."""
    payload = torch.load(paths.MODEL, weights_only=True)
    if recorded == "absent":
        del payload["trained_with"]
    else:
        payload["trained_with"] = {}
    save_as_train_would(payload, paths.MODEL)
    assert refusal(stages.figures.main, pipeline_run) == (
        f"{paths.MODEL}: train recorded no params it ran with (an older version of it, or an edit, left them out); "
        "re-create it with `dvc repro train`"
    )


def test_a_model_with_a_weight_viewed_beyond_its_data_is_refused_before_it_is_hashed(pipeline_run):
    """A buffer of one byte viewed 1.5e9 times (stride 0) is a byte in the file: hashing it took
    evaluate 1.5 GB more, and 1.5e10 would have taken 15 GB."""
    payload = torch.load(paths.MODEL, weights_only=True)
    payload["state_dict"]["extra.buffer"] = torch.zeros(1, dtype=torch.uint8).expand(10**6)
    save_as_train_would(payload, paths.MODEL)
    assert refusal(stages.evaluate.main, pipeline_run) == (
        f"{paths.MODEL}: not a model saved by the train stage (its weight 'extra.buffer' is larger than the data "
        "saved for it); re-create it with `dvc repro train`"
    )


def test_a_model_whose_pickled_class_name_is_not_utf8_is_refused(pipeline_run):
    """torch.load's own UnicodeDecodeError was a traceback."""
    name = torch.load(paths.MODEL, weights_only=True)["classes"][0].encode()
    with zipfile.ZipFile(paths.MODEL) as archive:
        records = [(record.filename, archive.read(record)) for record in archive.infolist()]
    with zipfile.ZipFile(paths.MODEL, "w") as archive:
        for record, data in records:
            archive.writestr(record, data.replace(name, b"\xff" + name[1:]) if record.endswith("data.pkl") else data)
    assert refusal(stages.evaluate.main, pipeline_run).startswith(
        f"{paths.MODEL}: not a model saved by the train stage (unreadable or truncated: 'utf-8' codec can't decode"
    )


def test_figures_refuses_curves_measured_on_another_test_split(pipeline_run):
    """data.test_limit lowered, download and evaluate run again, train not: figures drew train's
    test curves, of the previous test images, beside the confusion matrix of the new ones, exit 0."""
    train, test = load_split(paths.DATA, "train"), load_split(paths.DATA, "test")
    half = len(test) // 2
    save_dataset({"train": train, "test": Split(test.images[:half], test.labels[:half], test.classes)}, paths.DATA)
    assert refusal(stages.figures.main, pipeline_run) == (
        f"{paths.HISTORY}: its test loss and accuracy were measured on another test split than {paths.DATA}/test.npz "
        f"holds now (or one {paths.MODEL} does not record); re-create it with `dvc repro train`"
    )


@pytest.mark.parametrize("history", ["absent", "empty"])
def test_figures_refuses_a_model_that_records_no_history_and_evaluate_takes_it(pipeline_run, history):
    """A model saved before train recorded its history (or with an empty one, which figures
    called "trained for 0" epochs): figures cannot check the curves it draws beside it, while
    evaluate, which needs none, keeps working with it."""
    payload = torch.load(paths.MODEL, weights_only=True)
    if history == "absent":
        del payload["history"]
    else:
        payload["history"] = []
    save_as_train_would(payload, paths.MODEL)
    before = outputs(pipeline_run)
    with pytest.raises(DataError) as refused:
        stages.figures.main()
    assert str(refused.value) == (
        f"{paths.MODEL}: records no training history to check {paths.HISTORY} against; "
        "re-create it with `dvc repro train`"
    )
    assert outputs(pipeline_run) == before
    stages.evaluate.main()


def test_figures_refuses_predictions_that_evaluates_metrics_contradict(pipeline_run):
    """Predictions, confusion and per-class tables edited together, each consistent with the
    others, were drawn beside evaluate's metrics, which counted other misclassified images."""
    reported = json.loads(Path(paths.EVALUATE_METRICS).read_text())
    Path(paths.EVALUATE_METRICS).write_text(json.dumps(reported | {"misclassified": reported["misclassified"] + 10}))
    with pytest.raises(DataError) as refused:
        stages.figures.main()
    assert str(refused.value) == (
        f"{paths.PREDICTIONS}: misclassified {reported['misclassified']}, but {paths.EVALUATE_METRICS} reports "
        f"{reported['misclassified'] + 10}; re-create it with `dvc repro evaluate`"
    )


def mark_errors_correct_past_the_checked_rows() -> None:
    """Every misclassified test image past the rows figures and explain run through the model
    marked correct, with confusion and per-class tables and evaluate's metrics edited to match."""
    frame = pd.read_csv(paths.PREDICTIONS)
    params = load_params(paths.PARAMS)
    checked = first_misclassified(frame, max(params.evaluate.misclassified, params.explain.images))
    past = frame["index"] > max(checked["index"].max(), stages.figures.SAMPLE_COUNT)
    frame.loc[past, "predicted"] = frame.loc[past, "label"]
    Path(paths.PREDICTIONS).write_text(frame.to_csv(index=False))
    names = np.array(load_split(paths.DATA, "test").classes)
    pd.DataFrame({"actual": names[frame["label"]], "predicted": names[frame["predicted"]]}).to_csv(
        paths.CONFUSION, index=False
    )
    right = frame["label"] == frame["predicted"]
    per_class = frame.assign(right=right).groupby("label")["right"].agg(images="size", correct="sum")
    per_class.insert(0, "class", names[per_class.index])
    per_class.assign(accuracy=per_class["correct"] / per_class["images"]).to_csv(paths.PER_CLASS, index=False)
    metrics = json.loads(Path(paths.EVALUATE_METRICS).read_text())
    metrics |= {"accuracy": float(right.mean()), "misclassified": int((~right).sum())}
    Path(paths.EVALUATE_METRICS).write_text(json.dumps(metrics))


@pytest.mark.parametrize("stage_name", ["figures", "explain"])
def test_predictions_edited_past_the_rows_the_model_checks_are_refused_by_their_digest(pipeline_run, stage_name):
    """A model at 22% accuracy was drawn at 88%, with exit 0: predictions, tables and metrics
    agreed with each other, and figures runs only the gallery and the first test images
    through the model."""
    # A gallery of 2 and 2 explained: the run's dozen errors reach past the rows checked.
    with_params(pipeline_run, {"evaluate": {"misclassified": 2}, "explain": {"images": 2}})
    errors_before = (pd.read_csv(paths.PREDICTIONS).eval("label != predicted")).sum()
    mark_errors_correct_past_the_checked_rows()
    assert (pd.read_csv(paths.PREDICTIONS).eval("label != predicted")).sum() < errors_before
    message = refusal(getattr(stages, stage_name).main, pipeline_run)
    assert message == (
        f"{paths.PREDICTIONS}: not the predictions evaluate wrote (its SHA-256 is not the one "
        f"{paths.PREDICTIONS_DIGEST} records); re-create it with `dvc repro evaluate`"
    )


def test_figures_refuses_another_models_evaluation_whose_digest_was_recomputed(pipeline_run):
    """Predictions, tables and metrics edited together past the rows the model checks, the digest
    recomputed: figures drew them beside the model's curves, with exit 0. The model records what
    it measured on the test split at its last epoch."""
    with_params(pipeline_run, {"evaluate": {"misclassified": 2}, "explain": {"images": 2}})
    mark_errors_correct_past_the_checked_rows()
    write_predictions(Path(), pd.read_csv(paths.PREDICTIONS))
    before = outputs(pipeline_run)
    with pytest.raises(DataError) as refused:
        stages.figures.main()
    assert re.fullmatch(
        rf"{re.escape(paths.EVALUATE_METRICS)}: accuracy [\d.]+ and loss [\d.]+, but {re.escape(paths.MODEL)} "
        r"measured [\d.]+ and [\d.]+ on the same test split at its last epoch: evaluate's results are another "
        r"model's; re-create them with `dvc repro evaluate`",
        str(refused.value),
    ), str(refused.value)
    assert outputs(pipeline_run) == before


@pytest.mark.parametrize(("right", "accepted"), [(59, True), (57, True), (65, True), (56, False), (70, False)])
def test_evaluates_accuracy_may_differ_from_the_models_by_a_few_near_tied_images(right, accepted):
    """Another device or precision than train's flips a few near-tied predictions: 2 of 200 apart
    (0.295 against 0.305) were refused as another model's, read as 2.0000000000000018 images."""
    predictions = pd.DataFrame(
        {"label": np.zeros(200, dtype=int), "predicted": np.repeat([0, 1], [right, 200 - right])}
    )
    trained = types.SimpleNamespace(history=[{"test_accuracy": 0.305, "test_loss": 1.86}])
    check = functools.partial(stages.figures.check_evaluation_against_the_model, predictions, 1.86, trained)
    if accepted:
        check()
    else:
        with pytest.raises(DataError, match="evaluate's results are another model's"):
            check()


def test_figures_refuses_a_gallery_confidence_the_model_does_not_give(pipeline_run):
    """The gallery's titles print each image's confidence: rows raised to 0.999 were drawn."""
    frame = pd.read_csv(paths.PREDICTIONS)
    first_wrong = int(np.flatnonzero(frame["label"] != frame["predicted"])[0])
    frame.loc[first_wrong, "confidence"] = 0.999
    write_predictions(Path(), frame)
    with pytest.raises(DataError) as refused:
        stages.figures.main()
    assert str(refused.value).startswith(
        f"{paths.PREDICTIONS}: test image {frame['index'][first_wrong]} has confidence 0.999, but {paths.MODEL} gives "
    ), str(refused.value)


def test_figures_checks_the_models_predictions_without_a_misclassified_gallery(pipeline_run):
    """With evaluate.misclassified 0 no gallery image went through the model, and a swapped
    model's run was drawn with the previous model's confusion matrix."""
    with_params(pipeline_run, {"evaluate": {"misclassified": 0}})
    payload = torch.load(paths.MODEL, weights_only=True)
    last_layer = [key for key, value in payload["state_dict"].items() if value.ndim == 2][-1]
    payload["state_dict"][last_layer] *= -1000
    save_as_train_would(payload, paths.MODEL)
    with pytest.raises(DataError, match=rf"^{paths.PREDICTIONS}: test image \d+ is predicted \w+, but "):
        stages.figures.main()


@pytest.mark.parametrize(
    ("path", "stage"),
    [(paths.HISTORY, "train"), (paths.TRAIN_METRICS, "train"), (paths.LR_FIND_METRICS, "lr_find")],
    ids=["history", "train-metrics", "lr-find-metrics"],
)
def test_figures_names_a_missing_input_with_the_stage_that_makes_it(pipeline_run, path, stage):
    """After DVC removed train's outputs (a run stopped under `dvc repro`), figures said to
    check that train's history table exists and may be read and written."""
    Path(path).unlink()
    with pytest.raises(DataError) as refused:
        stages.figures.main()
    assert str(refused.value) == f"{path}: not found; re-create it with `dvc repro {stage}`"


def test_a_checkpoint_left_by_a_full_disk_at_the_last_save_finishes_the_run_without_training(
    pipeline_run, monkeypatch, caplog
):
    """The checkpoint of a finished run stays until every output is written; the re-run after
    a full disk while saving the model trained from scratch."""
    # lr_find's pick as a number: train refuses a pick lr_find made at another batch size
    picked = json.loads(Path(paths.LR_FIND_METRICS).read_text())["max_lr"]
    with_params(pipeline_run, {"train": {"epochs": 2, "batch_size": 128, "max_lr": picked}})
    with monkeypatch.context() as full_disk:
        onto_a_full_disk(full_disk, torch, "save", 1, only_named=Path(paths.MODEL).name)
        with pytest.raises(OutputError, match=f"disk full while writing {paths.MODEL}"):
            stages.train.main()
    trained = read_checkpoint(Path(paths.CHECKPOINT))["state"]["model"]

    def train_epoch(*arguments, **options):
        raise AssertionError("trained again")

    monkeypatch.setattr(engine, "train_epoch", train_epoch)
    caplog.set_level(logging.INFO)
    stages.train.main()
    assert f"finishing from {paths.CHECKPOINT}: all 2 epochs were done; writing the outputs" in caplog.messages
    saved = load_trained(paths.MODEL, CPU).model.state_dict()
    assert all(torch.equal(saved[name], tensor) for name, tensor in trained.items())
    assert not Path(paths.CHECKPOINT).exists()


# What 200 misclassified images may add to explain's peak memory over 20 of them. Measured on a
# 2-core CPU (torch 2.14.1, 2026-12-03): 1,053 MiB with one image, 1,211-1,216 MiB with 32, 1,215-1,278 MiB
# with 200 (batches of 32); Grad-CAM of all 200 in one batch took 1.3 GB more. The stage's own peak is
# mostly torch's libraries (971 MiB after the imports alone) and varies by machine, so the test bounds
# the growth.
EXPLAIN_GROWTH_BOUND = 384 << 20


def explain_peak_memory(root: Path, images: int) -> tuple[subprocess.CompletedProcess, int]:
    """The explain stage's result and peak memory with `images` of 200 test images misclassified."""
    copy_pipeline(root)
    params = merge(default_params(), SMALL_SYNTHETIC | {"explain": {"images": images, "layers": ["layer3"]}})
    (root / paths.PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))
    test = synthetic_split(200, seed=1)
    save_dataset({"train": synthetic_split(20, seed=0), "test": test}, root / paths.DATA)
    torch.manual_seed(0)
    save_trained(root / paths.MODEL, build_model(ModelConfig()), ModelConfig(), test.classes)
    write_predictions(root, predictions_of(test, wrong=images))
    return stage_with_peak_memory(root, "explain", hang_guard_seconds=1800)


@pytest.mark.full
def test_explain_runs_grad_cam_in_batches_so_its_memory_does_not_grow_with_explain_images(tmp_path):
    """explain.images: 1e9 ran Grad-CAM on every misclassified image in one batch (147 of them
    took 2 GB); a full test split's errors would not fit in memory."""
    _, few_peak = explain_peak_memory(tmp_path / "few", 20)
    result, many_peak = explain_peak_memory(tmp_path / "many", 200)
    assert result.returncode == 0, result.stderr
    assert "wrote Grad-CAM grids of 200 misclassified test images at layer3" in result.stderr
    assert many_peak - few_peak < EXPLAIN_GROWTH_BOUND, (
        f"explain peaked at {few_peak >> 20} MiB with 20 images, {many_peak >> 20} MiB with 200"
    )


@pytest.mark.full
def test_the_largest_gallery_the_params_allow_stays_within_matplotlibs_pixel_limit(tmp_path):
    """matplotlib refuses an image over 2**16 pixels a side: about 1,490 images in a gallery."""
    count = config.MAX_GALLERY_IMAGES
    images = np.zeros((count, 32, 32, 3), np.uint8)
    labels, predicted = np.zeros(count, np.int64), np.ones(count, np.int64)
    figure = misclassified_figure(images, labels, predicted, np.full(count, 0.5), TEST_SPLIT.classes, count)
    save_figure(tmp_path / "gallery.png", figure)
    with Image.open(tmp_path / "gallery.png") as drawn:
        assert max(drawn.size) < 2**16


@pytest.mark.parametrize(
    ("sig", "code", "line"),
    [
        (signal.SIGINT, 130, "error: interrupted before figures finished"),
        # It ended without a word (exit -15).
        (signal.SIGTERM, 143, "error: stopped by SIGTERM before figures finished"),
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_a_signal_while_a_stage_loads_its_libraries_is_one_line(pipeline_run, sig, code, line):
    """The signal once torch's library is mapped into the stage's process, mid-import."""
    # As from a terminal: a shell that starts a job in the background hands it SIGINT ignored,
    # and pytest may run under one (nohup ignores SIGHUP, and so on).
    stage = subprocess.Popen(
        [sys.executable, "-m", "stages.figures"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL),
    )
    maps = Path(f"/proc/{stage.pid}/maps")
    while stage.poll() is None and "libtorch" not in maps.read_text():
        pass
    stage.send_signal(sig)
    _, stderr = stage.communicate()
    assert (stage.returncode, stderr) == (code, f"{line}; no file is left half-written: run it again\n")


def test_a_module_edited_while_the_stage_loads_torch_fails_the_stage(pipeline_run):
    """cifar/atomic.py edited once evaluate had imported it, while torch loaded: evaluate ran the
    old code with exit 0 and `dvc repro` recorded the edited file in dvc.lock as its dep."""
    before = outputs(pipeline_run)
    stage = subprocess.Popen([sys.executable, "-m", "stages.evaluate"], stderr=subprocess.PIPE, text=True)
    maps = Path(f"/proc/{stage.pid}/maps")
    while stage.poll() is None and "libtorch" not in maps.read_text():
        pass
    with open("cifar/atomic.py", "a") as source:
        source.write("# edited\n")
    _, stderr = stage.communicate()
    assert (stage.returncode, stderr) == (
        2,
        "error: cifar/atomic.py changed while evaluate ran; DVC would record what it holds now beside outputs made "
        "from what it held before: run evaluate again\n",
    )
    assert outputs(pipeline_run) == before


def test_the_stages_own_module_edited_while_it_runs_fails_it(tmp_path, monkeypatch, capsys):
    """stages/train.py edited after epoch 1: `python -m` runs it as __main__, which went
    unchecked, and train ended with exit 0."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/train.py"])
    source = tmp_path / "stages" / "train.py"
    source.parent.mkdir()
    source.write_text("EPOCHS = 4\n")
    main = types.ModuleType("__main__")
    # by a name this test process has not imported, as no stage imports its own module
    main.__spec__ = importlib.machinery.ModuleSpec("stages.train_as_run", None, origin=str(source))
    main.__file__ = str(source)
    monkeypatch.setitem(sys.modules, "__main__", main)
    with pytest.raises(SystemExit) as exited:
        run_stage(lambda: source.write_text("EPOCHS = 40\n"), [])
    assert (exited.value.code, capsys.readouterr().err) == (
        2,
        "error: stages/train.py changed while train ran; DVC would record what it holds now beside outputs "
        "made from what it held before: run train again\n",
    )


@pytest.mark.parametrize("setting", ["MPLBACKEND", "MATPLOTLIBRC", "./matplotlibrc"])
def test_the_users_matplotlib_settings_are_not_the_stages_concern(pipeline_run, tmp_path, setting):
    """MPLBACKEND=nosuchbackend ended figures and explain in a raw ValueError at import. A
    matplotlibrc of the user's reached the figures: `text.usetex` without LaTeX ended figures
    in a traceback, `savefig.pad_inches: 60` took it to 2.8 GB, `font.size: 400` drew with it;
    one that is a named pipe in the working folder (read first) kept figures waiting for ever."""
    before = outputs(pipeline_run)
    user_settings = tmp_path / "matplotlibrc"
    user_settings.write_text("text.usetex: True\nsavefig.pad_inches: 60\nfont.size: 400\n")
    environment = os.environ | {"MPLBACKEND": "nosuchbackend"} if setting == "MPLBACKEND" else os.environ
    if setting == "MATPLOTLIBRC":
        environment = os.environ | {"MATPLOTLIBRC": str(user_settings)}
    if setting == "./matplotlibrc":
        os.mkfifo(pipeline_run / "matplotlibrc")
    # The timeout ends the wait on the named pipe, were it read; the stage takes seconds.
    result = subprocess.run(
        [sys.executable, "-m", "stages.figures"], env=environment, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert outputs(pipeline_run) == before, "the same pictures, drawn headless"


@pytest.mark.parametrize(
    "state",
    [
        "a cache naming another font",
        "an endless cache",
        "a named pipe",
        "Latin-1",
        "a named pipe among the user's fonts",
        "a named pipe for fontconfig's file",
    ],
)
def test_the_users_matplotlib_config_folder_is_not_the_stages_concern(pipeline_run, tmp_path, state):
    """matplotlib reads its config folder (MPLCONFIGDIR, else ~/.config/matplotlib) as it
    loads: a font cache naming DejaVu Serif's file for DejaVu Sans drew every PNG in it, one
    that is /dev/zero filled memory, a style sheet that is a named pipe kept figures waiting
    for ever, one in Latin-1 ended it in a UnicodeDecodeError. Building its cache, it waited
    on a named pipe among the user's fonts or in fontconfig's place. The stage's own config
    folder, in the system temp folder, is gone when it ends."""
    config, temp, data = tmp_path / "matplotlib", tmp_path / "temp", tmp_path / "data"
    temp.mkdir()
    (data / "fonts").mkdir(parents=True)
    os.mkfifo(data / "fonts" / "mine.ttf")
    os.mkfifo(tmp_path / "fonts.conf")
    environment = os.environ | {"MPLCONFIGDIR": str(config), "TMPDIR": str(temp)}
    subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], env=environment, check=True)
    if state == "a named pipe among the user's fonts":
        environment |= {"XDG_DATA_HOME": str(data)}
    if state == "a named pipe for fontconfig's file":
        environment |= {"FONTCONFIG_FILE": str(tmp_path / "fonts.conf")}
    (cache,) = config.glob("fontlist-*.json")
    if state == "a cache naming another font":
        fonts = json.loads(cache.read_text())
        serif = next(entry["fname"] for entry in fonts["ttflist"] if entry["name"] == "DejaVu Serif")
        for entry in fonts["ttflist"]:
            if entry["name"] == "DejaVu Sans":
                entry["fname"] = serif
        cache.write_text(json.dumps(fonts))
    elif state == "an endless cache":
        cache.unlink()
        cache.symlink_to("/dev/zero")
    elif state in ("a named pipe", "Latin-1"):
        (config / "stylelib").mkdir()
        sheet = config / "stylelib" / "mine.mplstyle"
        if state == "a named pipe":
            os.mkfifo(sheet)
        else:
            sheet.write_bytes("font.family: caf\xe9\n".encode("latin-1"))
    before = outputs(pipeline_run)
    # The timeout ends the wait on the named pipe, were it read; the stage takes seconds.
    result = subprocess.run(
        [sys.executable, "-m", "stages.figures"], env=environment, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert outputs(pipeline_run) == before, "the pictures of matplotlib's defaults"
    assert not any(temp.iterdir())


def test_a_namesake_of_what_torchs_exit_report_imports_is_refused_once(pipeline_run, tmp_path):
    """torch's report of compile times at exit imports tabulate: with a tabulate.py on
    PYTHONPATH, evaluate's refusal came twice, the second time in a traceback from the exit
    callback."""
    (tmp_path / "tabulate.py").touch()
    result = subprocess.run(
        [sys.executable, "-m", "stages.evaluate"],
        env=os.environ | {"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: evaluate would import 'tabulate' from {tmp_path / 'tabulate.py'}, ")


def evaluate_in(folder: Path, code: Path) -> subprocess.CompletedProcess:
    """`python -m stages.evaluate` run in folder with PYTHONPATH naming a clone's code."""
    return subprocess.run(
        [sys.executable, "-m", "stages.evaluate"],
        cwd=folder,
        env=os.environ | {"PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
    )


def test_a_stage_run_from_another_folder_than_its_codes_repository_is_refused(tmp_path):
    """From a folder of params.yaml, data and model but no code, with PYTHONPATH naming a clone,
    evaluate wrote its metrics and plots there, where that folder's .dvcignore had DVC ignore
    the plots, and exited 0: the paths were checked in the clone."""
    pipeline, elsewhere = tmp_path / "clone", tmp_path / "elsewhere"
    copy_pipeline(pipeline)
    elsewhere.mkdir()
    result = evaluate_in(elsewhere, pipeline)
    assert result.returncode == 2 and result.stderr == (
        f"error: a stage runs in the repository that holds its code, {pipeline}, not in {elsewhere}; run it from "
        f"there\n"
    )
    assert not any(elsewhere.iterdir())


@pytest.mark.parametrize("deleted", ["cifar/__init__.py", "stages/__init__.py"])
def test_a_deleted_package_init_with_another_clone_on_pythonpath_is_named(tmp_path, deleted):
    """Python takes a package from PYTHONPATH over the namespace package a deleted __init__.py
    leaves: another clone's cifar ran here, exit 0; another clone's stages blamed the working
    folder, and its fix ran that clone's code."""
    pipeline, other = tmp_path / "clone", tmp_path / "other"
    copy_pipeline(pipeline)
    copy_pipeline(other)
    (pipeline / deleted).unlink()
    result = evaluate_in(pipeline, other)
    if deleted == "cifar/__init__.py":
        line = (
            "error: the stages need the project's module cifar (cifar.py or cifar/__init__.py), which is missing; "
            "restore it from git (`git status` lists it as deleted)\n"
        )
    else:
        line = (
            f"error: the stages need stages/__init__.py in {pipeline}, which is missing, so Python ran those of "
            f"{other} (on PYTHONPATH); restore it from git (`git status` lists it as deleted)\n"
        )
    assert (result.returncode, result.stderr) == (2, line)


def catches(pid: int, sig: signal.Signals) -> bool:
    """Whether the process has a handler of its own for the signal (/proc's SigCgt mask)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) >> (sig - 1) & 1)


@pytest.mark.parametrize(
    "sig",
    [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGABRT, signal.SIGUSR2, signal.SIGRTMIN + 1],
    ids=["sigterm", "sighup", "sigquit", "sigabrt", "sigusr2", "sigrtmin+1"],
)
def test_a_termination_signal_mid_stage_is_one_line_and_leaves_no_scratch(pipeline_run, sig):
    """evaluate, figures and download ended without a word (exit -15, or -1 for SIGHUP; Ctrl-\\'s
    SIGQUIT, SIGUSR1, SIGUSR2 and SIGALRM end a process so by default; SIGABRT, from `timeout
    -s ABRT`, also left an output folder in scratch amid the renames)."""
    # As from a terminal, whatever the test runner ignores (nohup ignores SIGHUP).
    stage = subprocess.Popen(
        [sys.executable, "-m", "stages.figures"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL),
    )
    while stage.poll() is None and not catches(stage.pid, sig):
        pass
    stage.send_signal(sig)
    _, stderr = stage.communicate()
    assert (stage.returncode, stderr.splitlines()[-1]) == (
        128 + sig,
        f"error: stopped by {signal_name(sig)} before figures finished; no file is left half-written: run it again",
    )
    assert not [path for path in Path().rglob(".*.partial-*")]


def refusal(stage_main, root: Path) -> str:
    """The one-line DataError of a stage's main, which must leave every output as it was."""
    before = outputs(root)
    with pytest.raises(DataError) as refused:
        stage_main()
    assert outputs(root) == before
    return str(refused.value)


def test_explain_refuses_predictions_that_the_model_does_not_make(workspace):
    """Predictions edited to call correctly classified images birds were drawn as Grad-CAM of
    "misclassified" birds the model had never predicted."""
    payload = torch.load(paths.MODEL, weights_only=True)
    # The untrained model's outputs are near-uniform, any pick a near-tie: a sharper last layer makes it sure.
    last_layer = [key for key, value in payload["state_dict"].items() if value.ndim == 2][-1]
    payload["state_dict"][last_layer] *= 1000
    save_as_train_would(payload, paths.MODEL)
    stages.evaluate.main()
    frame = pd.read_csv(paths.PREDICTIONS)
    frame["predicted"] = (frame["predicted"] + 1) % len(TEST_SPLIT.classes)
    write_predictions(Path(), frame)
    message = refusal(stages.explain.main, workspace)
    assert re.fullmatch(
        rf"{paths.PREDICTIONS}: test image \d+ is predicted \w+, but {paths.MODEL} predicts \w+ \(probability "
        r"[0-9.]+ against [0-9.]+\); re-create it with `dvc repro evaluate`",
        message,
    ), message


def test_figures_refuses_a_misclassified_gallery_of_another_models_predictions(pipeline_run):
    """After `dvc repro -s train`, figures drew the previous model's mistakes beside the new
    model's curves, with exit 0 (explain refused the same predictions)."""
    payload = torch.load(paths.MODEL, weights_only=True)
    last_layer = [key for key, value in payload["state_dict"].items() if value.ndim == 2][-1]
    payload["state_dict"][last_layer] *= -1000  # another model: each image's likeliest class is now its least
    save_as_train_would(payload, paths.MODEL)
    with pytest.raises(DataError) as refused:
        stages.figures.main()
    assert re.fullmatch(
        rf"{paths.PREDICTIONS}: test image \d+ is predicted \w+, but {paths.MODEL} predicts \w+ \(probability "
        r"[0-9.]+ against [0-9.]+\); re-create it with `dvc repro evaluate`",
        str(refused.value),
    ), str(refused.value)


EDITED_MODEL = (
    f"{paths.MODEL}: changed since train saved it (the SHA-256 of its contents is not the one it recorded); "
    f"re-create it with `dvc repro train`"
)


def negate_the_last_layer(payload: dict) -> None:
    last_layer = [key for key, value in payload["state_dict"].items() if value.ndim == 2][-1]
    payload["state_dict"][last_layer] *= -1


def change_the_config(payload: dict) -> None:
    """ResNet18's layer4_stride changes no weight's shape: its model scored 13.5% beside train's 15%."""
    payload["model"]["layer4_stride"] = 3 - payload["model"]["layer4_stride"]


def change_the_params_it_was_trained_with(payload: dict) -> None:
    payload["trained_with"] = (payload["trained_with"] or {}) | {"seed": -1}


@pytest.fixture(params=[negate_the_last_layer, change_the_config, change_the_params_it_was_trained_with])
def edit_the_model(request):
    """The model file with one thing changed by hand, every other record kept."""

    def edit():
        payload = torch.load(paths.MODEL, weights_only=True)
        request.param(payload)
        torch.save(payload, paths.MODEL)

    return edit


@pytest.mark.parametrize("stage", ["evaluate", "explain"])
def test_a_model_changed_after_training_is_refused(workspace, stage, edit_the_model):
    """evaluate scored a model with its last layer negated at 2% beside train's 23.5%, and explain drew it."""
    edit_the_model()
    assert refusal(importlib.import_module(f"stages.{stage}").main, workspace) == EDITED_MODEL


def test_figures_refuses_a_model_changed_after_training(pipeline_run, edit_the_model):
    """figures drew such a model's confusion matrix beside the curves of the weights train saved."""
    edit_the_model()
    with pytest.raises(DataError) as refused:
        stages.figures.main()
    assert str(refused.value) == EDITED_MODEL


@pytest.mark.parametrize("stage", ["evaluate", "explain"])
def test_a_model_of_other_classes_is_refused_before_a_label_is_misread(workspace, stage):
    """explain drew Grad-CAM for the test split's label ids, which name other classes in such a model."""
    payload = torch.load(paths.MODEL, weights_only=True)
    payload["classes"] = payload["classes"][::-1]
    save_as_train_would(payload, paths.MODEL)
    assert refusal(importlib.import_module(f"stages.{stage}").main, workspace) == (
        f"{paths.MODEL} has classes {', '.join(payload['classes'])} but {paths.DATA}/test.npz has "
        f"{', '.join(TEST_SPLIT.classes)}, so each label id would name another class; "
        f"re-run the pipeline with `dvc repro`"
    )


def test_splits_of_other_classes_are_refused_before_training(workspace, monkeypatch):
    """Train ran to the end, then blamed too few steps for its accuracy at chance."""
    with_params(workspace, {"train": {"max_lr": 0.01}})
    train, test = load_split(paths.DATA, "train"), load_split(paths.DATA, "test")
    reordered = Split(test.images, len(test.classes) - 1 - test.labels, test.classes[::-1])
    save_dataset({"train": train, "test": reordered}, paths.DATA)
    monkeypatch.setattr(engine, "train_epoch", lambda *arguments, **options: pytest.fail("trained"))
    assert refusal(stages.train.main, workspace) == (
        f"{paths.DATA}/train.npz has classes {', '.join(train.classes)} but {paths.DATA}/test.npz has "
        f"{', '.join(reordered.classes)}, so each label id would name another class; "
        f"re-create both with `dvc repro download`"
    )


def table_entry(name: str, value: str):
    """A change to dvc.yaml's text: `value` for the path `name` in its paths table."""
    return lambda text: re.sub(rf"(?m)^(      {name}: ).*$", lambda found: found[1] + value, text, count=1)


# A user's foreach stage whose `meta:` holds 10^9 values once its aliases are written out.
_AN_ALIAS_BOMB = (
    "\n  notes:\n    foreach: [a]\n    do:\n      cmd: 'true'\n      meta:"
    + "\n        l0: &l0 [x, x, x, x, x, x, x, x, x, x]"
    + "".join(f"\n        l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]" for level in range(1, 10))
)


# 125,000 aliases of a 100 KB text (12.5 GB written out) in 115 KB of YAML: `*many` names them.
_MANY_ALIASES = (
    f"\n  texts:\n    cmd: 'true'\n    meta:\n      text: &text '{'x' * 100_000}'"
    + f"\n      fifty: &fifty [{', '.join(['*text'] * 50)}]"
    + f"\n      many: &many [{', '.join(['*fifty'] * 50)}]"
)


# 2,500 aliases of a 100 KB text (250 MB written out) in one flow sequence.
_ALIASES_IN_A_LINE = f"[&fifty [&text '{'x' * 100_000}', {', '.join(['*text'] * 49)}], {', '.join(['*fifty'] * 49)}]"
# A user's foreach of 1,000 items, each with 200 outs.
_MANY_OUTS = (
    "\n  notes:\n    foreach: [" + ", ".join(f"i{item}" for item in range(1000)) + "]\n    do:\n      cmd: 'true'"
)
_MANY_OUTS += "\n      outs: [" + ", ".join(f"'notes/${{item}}/f{index}.txt'" for index in range(200)) + "]"
# A user's foreach of one 10 KB item, and 1,000 aliases of a string of 1,000 `${item}`.
_FILLED_AT_LENGTH = f"\n  notes:\n    foreach:\n      k: {'x' * 10_000}\n    do:\n      cmd: 'true'\n      meta:"
_FILLED_AT_LENGTH += f"\n        - &c '{'${item}' * 1000}'" + "\n        - *c" * 1000


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda text: text.replace("\nvars:\n", "\nvariables:\n"), "no `vars:` entry holds one mapping `paths:`"),
        (lambda text: text.replace("  - paths:\n", "  - paths: null\n  - kept:\n"), "no `vars:` entry holds one"),
        (lambda text: text.replace("      model: ", "      weights: "), "paths table: no path `model`"),
        # Each of these wrote where it should not, with exit code 0.
        (table_entry("data", "cifar"), "data = 'cifar' is not inside an output folder"),
        (table_entry("data", "../outside-data"), "data = '../outside-data' is not a plain relative path"),
        (table_entry("predictions", "params.yaml"), "predictions = 'params.yaml' is not inside an output folder"),
        (table_entry("gradcam_images", "plots/images"), "is gradcam_images's path or inside it ('plots/images')"),
        (table_entry("checkpoint", paths.MODEL), f"= {paths.MODEL!r} is checkpoint's path or inside it"),
        (table_entry("data", '"data/ci\\0far"'), "data = 'data/ci\\x00far' is not a path of printable text"),
        (table_entry("data", "data/."), "data = 'data/.' is not a plain relative path"),
        # Pass 11: the download cache replaced by the data, a path in a scratch folder the next
        # stage run deleted, a tagged value that PyYAML cannot build.
        (table_entry("data", "data/downloads"), "data = 'data/downloads' is cache's path or inside it"),
        (table_entry("predictions", "plots/.x.partial-1/p.csv"), "names a scratch folder ('.partial-')"),
        (table_entry("data", "!!bool maybe"), "dvc.yaml: unreadable (KeyError: 'maybe')"),
        # Pass 73: `stages:` left empty or removed, which DVC accepts: a traceback.
        (lambda text: re.sub(r"(?ms)^stages:\n.*", "stages:\n", text), "dvc.yaml: no `stages:` mapping"),
        (lambda text: re.sub(r"(?ms)^stages:\n.*", "", text), "dvc.yaml: no `stages:` mapping"),
        # Pass 12: a key written twice, which DVC refuses, wrote where the second said; a path
        # under a file was refused with the advice to make pyproject.toml a folder.
        (
            lambda text: re.sub(r"(?m)^(      predictions: .*\n)", r"\1      predictions: plots/p.csv\n", text),
            "the key 'predictions' appears a second time",
        ),
        (
            table_entry("data", "requirements.txt/cifar10"),
            "requirements.txt is a file, where the stages write a folder (data = 'requirements.txt/cifar10' lies ",
        ),
        # Pass 38: a valid file name too long for its scratch folder's, refused after evaluate's work.
        (
            table_entry("confusion", f"plots/{'c' * 231}.csv"),
            "has a file name of 235 bytes: at most 229 leave room for the scratch folder a write makes beside it",
        ),
        # Pass 53: names each under the bound, a path longer than Linux takes: a traceback.
        (
            table_entry("confusion", "plots/" + "d" * 200 + "/" + "/".join(["e" * 200] * 20) + "/c.csv"),
            "is too long: with the repository's folder and a scratch name it takes ",
        ),
        (table_entry("confusion", f"plots/{'d' * 256}/c.csv"), "has a folder name of 256 bytes, more than the 255"),
        # Pass 40: evaluate wrote its per-class table over git's plots/.gitignore, exit 0; a
        # trailing '/' was refused as breaking rules it does not break.
        (table_entry("per_class", "plots/.gitignore"), "names '.gitignore', which git or DVC reads"),
        (table_entry("per_class", "plots/p/dvc.yaml"), "names 'dvc.yaml', which git or DVC reads"),
        (table_entry("gradcam_images", f"{paths.GRADCAM_IMAGES}/"), f"= '{paths.GRADCAM_IMAGES}/' ends in '/'"),
        # Pass 41: PNG bytes under an SVG's name, and CSV under a JSON's, with exit 0.
        (table_entry("loss_image", "plots/images/loss.svg"), "ends in '.svg', but loss_image is written as PNG (.png)"),
        (table_entry("per_class", "plots/per_class.json"), "ends in '.json', but per_class is written as CSV (.csv)"),
        (table_entry("train_metrics", "metrics/train"), "ends in '', but train_metrics is written as JSON (.json)"),
        # Pass 48: where DVC ignores an output, evaluate wrote it with exit 0, and every later
        # `dvc status` failed ("is ignored by .dvcignore").
        (
            table_entry("confusion", "plots/__pycache__/c.csv"),
            "confusion = 'plots/__pycache__/c.csv' lies where .dvcignore has DVC ignore it",
        ),
        (
            table_entry("confusion", ".checkpoints/c.csv"),
            "confusion = '.checkpoints/c.csv' lies where .dvcignore has DVC ignore it",
        ),
        (
            table_entry("model_summary", "models/summary.pyc"),
            "model_summary = 'models/summary.pyc' lies where .dvcignore has DVC ignore it",
        ),
        # Pass 51: DVC ignores `.hg/` at any depth, as it does `.git/` and `.dvc/`.
        (
            table_entry("confusion", "plots/.hg/c.csv"),
            "confusion = 'plots/.hg/c.csv' lies in a folder DVC always ignores (.git, .dvc or .hg)",
        ),
        # Pass 75: a path built from another vars entry, which DVC refuses to read, wrote into a
        # folder named `${dirs.out}`; an output declared by a path of its own was written at the
        # table's, where DVC found none after the whole run.
        (
            table_entry("predictions", "${dirs.out}/predictions.csv"),
            "predictions = '${dirs.out}/predictions.csv' holds `${`, which DVC does not resolve inside `vars:`",
        ),
        (
            lambda text: re.sub(r"(?m)^(    outs:\n)      - \$\{paths\.predictions\}$", r"\1      - data/p.csv", text),
            f"stage 'evaluate' writes {paths.PREDICTIONS} (the paths table's predictions), which it does not declare "
            "among its outs, metrics or plots, or in a folder among them: DVC would neither cache nor restore it; "
            "declare it as `${paths.predictions}`",
        ),
        # Pass 77: a name YAML reads as a number (a user's own, which DVC takes) was a traceback.
        (
            lambda text: text.replace("  - paths:\n", "  - paths:\n      2026: reports/run/../x.txt\n", 1),
            "2026 = 'reports/run/../x.txt' is not a plain relative path",
        ),
        # Pass 77: 1.3 KB of aliases of aliases in a user's foreach grew past 3.7 GB in 300 s.
        (lambda text: text.replace("\nplots:", _AN_ALIAS_BOMB + "\nplots:", 1), "holds more than 131,072 values"),
        # Pass 78: 1,000 foreach items of 1,000 outs each (51 KB) kept every stage reading for minutes,
        # and aliases of a string of 1,000 `${item}` filled with a 10 KB item grew past 3 GB.
        (lambda text: text.replace("\nplots:", _MANY_OUTS + "\nplots:", 1), "holds more than 131,072 values"),
        # Pass 79: aliases written out whole to quote them took 2.5 GB: a stage's deps given as
        # a mapping, and a path of the table.
        (
            lambda text: text.replace("\nplots:", _MANY_ALIASES + "\n    deps: {all: *fifty}\nplots:", 1),
            "stage 'texts' has `deps: {'all': [",
        ),
        (
            lambda text: text.replace("  - paths:\n", f"  - paths:\n      notes: {_ALIASES_IN_A_LINE}\n", 1),
            "notes = \"[['xxxx",
        ),
        (
            lambda text: text.replace("\nplots:", _FILLED_AT_LENGTH + "\nplots:", 1),
            "filling in foreach 'notes''s items writes more than 4,194,304 bytes",
        ),
        # Pass 80: a plot table named `.CSV`, which `dvc plots show` left out with exit 0; two
        # tables DVC merges and a table in a file DVC reads, refused as "no entry holds one"; a
        # wdir of `/`, refused as an undeclared output; a param evaluate reads left undeclared,
        # which DVC held up to date, and figures' advice to run it again did nothing.
        (table_entry("per_class", "plots/per_class.CSV"), "DVC reads per_class by its suffix in lower case (.csv)"),
        (
            lambda text: text.replace("      gradcam_images: ", "  - paths:\n      gradcam_images: ", 1),
            "2 `vars:` entries hold `paths:`; merge them into one",
        ),
        (
            lambda text: text.replace("  - paths:\n", "  - paths.yaml\n  - kept:\n", 1),
            "the stages read the table from dvc.yaml only, not from a file `vars:` names",
        ),
        (
            lambda text: text.replace(
                "cmd: python -m stages.evaluate\n", "cmd: python -m stages.evaluate\n    wdir: /\n"
            ),
            "stage 'evaluate' runs 'python -m stages.evaluate' in wdir '/'",
        ),
        (
            lambda text: text.replace("    params:\n      - evaluate.tta\n", "    params:\n", 1),
            "stage 'evaluate' reads evaluate.tta from params.yaml, which it does not declare among its params: DVC "
            "would not run it again when that changes; declare `- evaluate.tta`",
        ),
        (
            lambda text: text.replace("      - explain\n", "      - explain.images\n", 1),
            "stage 'explain' reads explain from params.yaml, which it does not declare among its params",
        ),
    ],
    ids=[
        "no-table",
        "null-table",
        "no-model-path",
        "code-folder",
        "outside",
        "params-file",
        "nested",
        "shared",
        "nul",
        "dot",
        "download-cache",
        "scratch",
        "tagged",
        "empty-stages",
        "no-stages",
        "key-twice",
        "under-a-file",
        "name-too-long",
        "path-too-long",
        "folder-name-too-long",
        "gitignore",
        "nested-dvc-yaml",
        "trailing-slash",
        "svg-image",
        "json-plot-table",
        "metrics-without-suffix",
        "dvc-ignored-folder",
        "dvc-ignored-root-folder",
        "dvc-ignored-name",
        "mercurial-folder",
        "a-reference-in-the-table",
        "an-output-declared-by-another-path",
        "a-number-for-a-name",
        "an-alias-bomb",
        "a-foreach-of-many-outs",
        "deps-a-mapping-of-many-aliases",
        "a-path-of-many-aliases",
        "a-foreach-filled-at-length",
        "a-plot-table-suffix-in-capitals",
        "two-tables",
        "a-table-in-a-file",
        "wdir-the-filesystem-root",
        "a-param-it-reads-left-undeclared",
        "a-param-another-stage-reads-left-undeclared",
    ],
)
def test_a_stage_run_alone_under_a_damaged_paths_table_says_so_in_one_line(tmp_path, damage, named):
    """The stages read their paths from dvc.yaml's table: a hand edit that broke it was a
    traceback at import, and one that pointed a path at the code, params.yaml, outside the
    repository or at another output overwrote or deleted what was there. Each is refused
    before the stage loads torch (819 MiB), which took evaluate 2.4 s and explain 6 s."""
    copy_pipeline(tmp_path)
    pipeline = tmp_path / "dvc.yaml"
    pipeline.write_text(damage(pipeline.read_text()))
    result, peak = stage_with_peak_memory(tmp_path, "evaluate")
    assert result.returncode == 2 and peak < 256 << 20, (result.returncode, peak >> 20)
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert named in result.stderr and "`git checkout dvc.yaml`" in result.stderr


@pytest.mark.parametrize(
    "ignore_files",
    [
        {".dvcignore": "gradcam/\n"},  # a folder's pattern, on a folder output
        {"plots/images/.dvcignore": "*.png\n"},  # DVC reads one in every folder
        {".dvcignore": "**/*.png\n"},
        {".dvcignore": "metrics/**/*.json\n"},  # `**` for no folder at all
        {".dvcignore": f"{paths.DATA}/**\n"},  # what a folder output holds
        {".dvcignore": "/plots/images/[^x]*.png\n"},
        {".dvcignore": "*.csv\n!/plots/*.csv\n!/data/*.csv\n"},  # taken back: DVC ignores no output
        {"plots/.dvcignore": "!*.csv\n"},
        {".dvcignore": "*.npz\n"},  # what a folder output holds
        {".dvcignore": f"  {paths.HISTORY}\n"},  # DVC strips each line
        {".dvcignore": f"{paths.HISTORY}\n#\f!{paths.HISTORY}\n"},  # a comment: lines end at \n and \r only
        # DVC walks into no ignored folder, whatever a later `!` takes back below it
        {".dvcignore": "/{0}\n!/{0}/*\n".format(PurePosixPath(paths.PREDICTIONS).parts[0])},
        {".dvcignore": "/plots/\n!/plots/**\n"},
        # A .dvcignore that one above ignores is not read.
        {".dvcignore": "plots/.dvcignore\n", "plots/.dvcignore": "*.csv\n"},
        {"plots/.dvcignore": "*.csv\n"},
        # DVC drops one leading '\\' from a sub-folder's pattern: `\*.csv` is every CSV file there.
        {"plots/.dvcignore": "\\*.csv\n"},
        {"plots/.dvcignore": "*.csv\n!\\*.csv\n"},
        {".dvcignore": "\\*.csv\n"},
        {"plots/.dvcignore": "/images/\n"},  # anchored to its folder
        {"plots/.dvcignore": "images/*.png\n!**/loss.png\n"},
        # what a folder output will hold, before its first run
        {".dvcignore": "gradcam/*\n"},
        {".dvcignore": f"{PurePosixPath(paths.CONFUSION).name}/\n"},  # a folder's pattern, on a file output
        {f"{PurePosixPath(paths.DATA).parent}/.dvcignore": "cifar10/*\n!cifar10/*.npz\n!cifar10/*.json\n"},
    ],
)
def test_an_output_is_refused_exactly_where_dvc_ignores_it(tmp_path, ignore_files):
    """A table whose output DVC ignores let a stage run alone write it with exit 0, and every
    later `dvc status` failed. The stages read every .dvcignore as DVC reads them: a reading of
    their own let `**`, folder outputs and a subfolder's .dvcignore through, refused outputs a
    later `!` pattern takes back, and read git's rules where DVC reads its own."""
    root = make_pipeline_repo(tmp_path / "pipeline", {})
    for ignore_file, patterns in ignore_files.items():
        ignore = root / ignore_file
        ignore.parent.mkdir(parents=True, exist_ok=True)
        with ignore.open("a") as lines:
            lines.write(patterns)
    table = yaml.safe_load((root / "dvc.yaml").read_text())["vars"][0]["paths"]
    outputs = [path for name, path in table.items() if name != "checkpoint"]
    written = []  # what folder outputs hold, as a run leaves them
    for name, files in paths.FOLDER_OUTPUTS_HOLD.items():
        (root / table[name]).mkdir(parents=True)
        for file in files:
            (root / table[name] / file).touch()
            written.append(f"{table[name]}/{file}")
    ignored_by_dvc = dvc(root, "check-ignore", *outputs, *written, check=False).returncode == 0
    result = stage(root, "evaluate", check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert ("has DVC ignore it" in result.stderr) == ignored_by_dvc, (ignored_by_dvc, result.stderr)


def test_a_deep_dvcignore_whose_patterns_dvc_rewrites_beyond_a_bound_is_refused(tmp_path, monkeypatch):
    """Each pattern of a sub-folder's .dvcignore gains the folder's path: 1 MiB of one-letter
    lines 14 folders of 250 characters down took 1.8 GB."""
    monkeypatch.setattr(dvcignore, "MAX_REWRITTEN_CHARS", 1000)
    folder = tmp_path / "plots" / ("d" * 250)
    folder.mkdir(parents=True)
    (folder / ".dvcignore").write_text("a\n" * 10)
    with pytest.raises(ConfigError) as refused:
        dvcignore.ignoring_files(tmp_path, {"confusion": f"plots/{'d' * 250}/c.csv"}, {})
    assert str(refused.value).startswith(f"plots/{'d' * 250}/.dvcignore: its patterns take more than 0 KiB once DVC")


def test_dvcignore_patterns_that_take_too_long_to_match_are_refused_within_a_cpu_time_bound(tmp_path, monkeypatch):
    """1 MiB of `*?*?*?*?*?*?*?*?*?*?*?Z` lines would take about 2,300 s of CPU to match the
    paths table (20 KiB took 46 s); `dvc status` would take as long."""
    monkeypatch.setattr(dvcignore, "MAX_CPU_SECONDS", 1)
    (tmp_path / ".dvcignore").write_text("*?" * 11 + "Z\n")
    with pytest.raises(ConfigError) as refused:
        dvcignore.ignoring_files(tmp_path, {"confusion": "plots/" + "c" * 200 + ".csv"}, {})
    assert str(refused.value).startswith(f"the .dvcignore files in {tmp_path} took more than 1 s of CPU to read ")
    assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)


def test_a_folder_output_is_checked_against_dvcignore_before_its_first_run(tmp_path):
    """With `*_predicted.png` in .dvcignore, explain's first run wrote two Grad-CAM grids DVC
    ignores (only `layer3_correct.png` was checked), and its next run refused that state. The
    data folder's files are checked before download writes them."""
    (tmp_path / ".dvcignore").write_text("manifest.*\n")
    ignored = dvcignore.ignoring_files(tmp_path, {"data": paths.DATA}, {"data": paths.FOLDER_OUTPUTS_HOLD["data"]})
    assert ignored == {"data": ".dvcignore"}


def test_what_a_folder_output_holds_itself_takes_nothing_back_that_its_run_writes(tmp_path):
    """`*.npz` in .dvcignore and `!*.npz` in the data folder's own .dvcignore: download ran,
    replaced the folder (its .dvcignore with it), and DVC cached it without either split, exit 0.
    So did a .dvc there, and a file named .dvc above, which DVC takes for a repository of its own."""
    data = tmp_path / paths.DATA
    data.mkdir(parents=True)
    (tmp_path / ".dvcignore").write_text("*.npz\n")
    (data / ".dvcignore").write_text("!*.npz\n")
    holds = {"data": paths.FOLDER_OUTPUTS_HOLD["data"]}
    assert dvcignore.ignoring_files(tmp_path, {"data": paths.DATA}, holds) == {"data": ".dvcignore"}
    (tmp_path / ".dvcignore").unlink()
    (data / ".dvcignore").unlink()
    (data.parent / ".dvc").touch()
    assert dvcignore.ignoring_files(tmp_path, {"data": paths.DATA}, holds) == {"data": f"{data.parent.name}/.dvc"}


def test_grids_of_a_layer_explain_no_longer_draws_may_be_ignored(tmp_path, monkeypatch):
    """`gradcam/layer3_*` in plots/images/.dvcignore and explain.layers [layer2]: every stage refused, as if
    the Grad-CAM folder were ignored, though explain would write layer2's grids only."""
    monkeypatch.setattr(paths, "REPO", tmp_path)
    grids = PurePosixPath(paths.GRADCAM_IMAGES)
    (tmp_path / grids.parent).mkdir(parents=True)
    (tmp_path / grids.parent / ".dvcignore").write_text(f"{grids.name}/layer3_*\n")
    holds = {"gradcam_images": paths.FOLDER_OUTPUTS_HOLD["gradcam_images"]}
    assert dvcignore.ignoring_files(tmp_path, {"gradcam_images": paths.GRADCAM_IMAGES}, holds) == {}
    paths.refuse_files_dvc_would_ignore("gradcam_images", ("layer2_correct.png", "layer2_predicted.png"), "layers")


def test_a_stray_or_stale_file_dvcignore_ignores_in_a_folder_output_is_no_concern(tmp_path):
    """`.DS_Store` in .dvcignore, as a macOS user has it, and Finder's one in the Grad-CAM
    folder: every stage refused, saying .dvcignore had DVC ignore the folder, which it did not.
    So did a layer2 grid left by the last run once `layer2_*` was ignored and explain.layers
    was [layer3]: explain's next run replaces the folder without it."""
    holds = {"gradcam_images": paths.FOLDER_OUTPUTS_HOLD["gradcam_images"]}
    (tmp_path / paths.GRADCAM_IMAGES).mkdir(parents=True)
    (tmp_path / ".dvcignore").write_text(".DS_Store\nlayer2_*\n")
    (tmp_path / paths.GRADCAM_IMAGES / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / paths.GRADCAM_IMAGES / "layer2_correct.png").write_bytes(b"")
    assert dvcignore.ignoring_files(tmp_path, {"gradcam_images": paths.GRADCAM_IMAGES}, holds) == {}


def test_grids_explain_layers_choose_are_checked_against_dvcignore_before_they_are_written(tmp_path, monkeypatch):
    """With `layer2_*` in .dvcignore and no Grad-CAM folder yet, explain wrote the custom ResNet's
    layer2 grids, which DVC left out of the folder it cached, and exited 0."""
    monkeypatch.setattr(paths, "REPO", tmp_path)
    (tmp_path / ".dvcignore").write_text("layer2_*\n")
    grids = ("layer2_correct.png", "layer2_predicted.png", "layer3_correct.png", "layer3_predicted.png")
    with pytest.raises(ConfigError) as refused:
        paths.refuse_files_dvc_would_ignore("gradcam_images", grids, "explain.layers")
    assert str(refused.value) == (
        f".dvcignore has DVC ignore files that explain would write into {paths.GRADCAM_IMAGES} for explain.layers "
        f"({', '.join(grids)}), and DVC would cache the folder without them; change .dvcignore or explain.layers"
    )
    paths.refuse_files_dvc_would_ignore("gradcam_images", grids[2:], "explain.layers")  # layer3's are kept


@pytest.mark.parametrize("kind", ["socket", "folder"])
def test_a_dvcignore_that_is_no_file_is_named_with_a_fix_that_works(tmp_path, kind):
    """A socket in the place of plots/.dvcignore ended every stage in an OSError traceback; for
    a folder the fix was `git checkout plots/.dvcignore`, which git refuses for a file it never tracked."""
    (tmp_path / "plots").mkdir()
    place = tmp_path / "plots" / ".dvcignore"
    if kind == "socket":
        with socket.socket(socket.AF_UNIX) as listening:
            listening.bind(str(place))
    else:
        place.mkdir()
    with pytest.raises(DataError) as refused:
        dvcignore.ignoring_files(tmp_path, {"confusion": paths.CONFUSION}, {})
    problem = "cannot read it (No such device or address)" if kind == "socket" else "a folder, not a regular file"
    assert str(refused.value) == (f"{place}: {problem}; make it a text file of patterns, or remove it")


def test_dvcignore_files_are_read_from_dvcs_root_down_and_sub_repositories_are_named(tmp_path):
    """A project in a folder of a DVC repository (its .dvc above) had the root's .dvcignore passed
    over; a folder holding a .dvc of its own is a repository DVC leaves out of this one's outputs
    (`dvc data status` listed the Grad-CAM grids in plots/images/.dvc's folder as deleted)."""
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvcignore").write_text("c.csv\n")
    project = tmp_path / "project"
    image_folder = PurePosixPath(paths.LOSS_IMAGE).parent
    (project / image_folder / ".dvc").mkdir(parents=True)
    outputs = {"confusion": "out/c.csv", "loss_image": paths.LOSS_IMAGE, "history": "out/h.csv"}
    assert dvcignore.ignoring_files(project, outputs, {}) == {
        "confusion": "../.dvcignore",
        "loss_image": f"{image_folder}/.dvc",
    }


def test_the_dvcignore_cpu_time_bound_holds_with_its_signal_blocked(tmp_path, monkeypatch):
    """A launcher that started the stage with SIGVTALRM blocked (an inherited mask) kept it
    matching past 150 s of CPU."""
    monkeypatch.setattr(dvcignore, "MAX_CPU_SECONDS", 1)
    (tmp_path / ".dvcignore").write_text("*?" * 11 + "Z\n")
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGVTALRM})
    try:
        with pytest.raises(ConfigError):
            dvcignore.ignoring_files(tmp_path, {"confusion": "plots/" + "c" * 200 + ".csv"}, {})
        assert signal.SIGVTALRM in signal.pthread_sigmask(signal.SIG_BLOCK, set())  # blocked again, as it was
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@pytest.mark.parametrize(
    ("ignore_file", "line", "why"),
    [
        # stripped to `notes.txt\`
        (".dvcignore", "notes.txt\\ ", "Escape character found with no next character to escape"),
        (".dvcignore", "!", "Pattern normalized to nothing"),
        ("plots/.dvcignore", "\\\\", "Escape character found with no next character to escape"),
        (".dvcignore", "[z-a].tmp", "bad character range z-a"),
    ],
    ids=["escape-at-the-end", "bare-negation", "escape-once-dvc-drops-the-first", "range-backwards"],
)
def test_a_dvcignore_line_that_dvc_cannot_read_is_named(tmp_path, ignore_file, line, why):
    """pathspec's error was a traceback; DVC fails on the file too, in every command. A
    sub-folder's `\\\\` (a '\\' file) is one once DVC drops its first '\\'."""
    root = make_pipeline_repo(tmp_path / "pipeline", {})
    (root / ignore_file).parent.mkdir(exist_ok=True)
    lines = (root / ignore_file).read_text().splitlines() if (root / ignore_file).exists() else []
    (root / ignore_file).write_text("\n".join([*lines, line, ""]))
    assert dvc(root, "status", check=False).returncode != 0
    result = stage(root, "evaluate", check=False)
    assert (result.returncode, result.stderr) == (
        2,
        f"error: {ignore_file}: line {len(lines) + 1}, {line.strip()!r}, is not a pattern DVC can read ({why}); "
        f"fix or remove that line\n",
    )


def test_a_users_file_where_an_output_folder_goes_is_named_with_the_fix(tmp_path):
    """Notes saved as `plots/images` were refused as a damaged dvc.yaml, to be restored with
    `git checkout dvc.yaml`, which changes nothing."""
    copy_pipeline(tmp_path)
    folder = Path(paths.LR_FINDER_IMAGE).parent
    (tmp_path / folder.parent).mkdir(parents=True, exist_ok=True)
    (tmp_path / folder).write_text("my notes\n")
    result, _ = stage_with_peak_memory(tmp_path, "figures")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {folder} is a file, where the stages write a folder ("), result.stderr
    assert result.stderr.endswith(
        "lies inside it); move the file away, or if dvc.yaml's paths table is what changed, "
        "restore it with `git checkout dvc.yaml`\n"
    )
    assert (tmp_path / folder).read_text() == "my notes\n"


@pytest.mark.parametrize(
    ("make", "kind"),
    [(os.mkfifo, "a named pipe (FIFO)"), (lambda path: os.symlink("/dev/zero", path), "a device")],
    ids=["fifo", "dev-zero"],
)
def test_a_stage_run_alone_with_dvc_yaml_a_named_pipe_or_device_refuses_it_unread(tmp_path, make, kind):
    """A named pipe in dvc.yaml's place kept a stage run alone at open() until it was killed."""
    copy_pipeline(tmp_path)
    (tmp_path / "dvc.yaml").unlink()
    make(tmp_path / "dvc.yaml")
    # The guard kills a stage that blocks, so a regression fails here instead of stalling the suite.
    result, _ = stage_with_peak_memory(tmp_path, "evaluate", hang_guard_seconds=300)
    assert (result.returncode, result.stderr.splitlines()) == (
        2,
        [f"error: {tmp_path}/dvc.yaml: {kind}, not a regular file; restore it with `git checkout dvc.yaml`"],
    )


@pytest.mark.parametrize(
    ("name", "path", "link_to"),
    [("data", "out/training", "cifar"), ("checkpoint", "ckpt/__init__.py", "cifar/models")],
    ids=["data", "checkpoint"],
)
def test_a_path_through_a_symbolic_link_into_the_code_is_refused(tmp_path, name, path, link_to):
    """With `out -> cifar` in the repository and `data: out/training`, download replaced the
    package's training code with data files, exit code 0; the checkpoint, whose folder may
    be a link out of the repository, overwrote and then deleted cifar/models/__init__.py."""
    copy_pipeline(tmp_path)
    (tmp_path / path.split("/")[0]).symlink_to(link_to)
    pipeline = tmp_path / "dvc.yaml"
    pipeline.write_text(table_entry(name, path)(pipeline.read_text()))
    result = stage(tmp_path, "download", check=False)
    assert result.returncode == 2
    link, rest = path.split("/", 1)
    assert result.stderr.splitlines()[-1] == (
        f"error: dvc.yaml's paths table: {name} = {path!r} leads through the symbolic link {link} to "
        f"{tmp_path.resolve() / link_to / rest}; remove the link (`rm {link}`), or if dvc.yaml's paths table changed, "
        f"restore it with `git checkout dvc.yaml`"
    )
    assert (tmp_path / "cifar/training/recipe.py").exists() and (tmp_path / "cifar/models/__init__.py").exists()


def test_a_checkpoint_path_into_the_environment_is_refused_where_the_environment_is_a_link(tmp_path):
    """With .venv a link out of the repository, `ckpt -> .venv/lib` led out of it too, where
    the checkpoint's folder may go: train overwrote, then deleted, an installed module."""
    copy_pipeline(tmp_path / "repository")
    (tmp_path / "environment" / "lib").mkdir(parents=True)
    (tmp_path / "repository" / ".venv").symlink_to(tmp_path / "environment")
    (tmp_path / "repository" / "ckpt").symlink_to(".venv/lib")
    pipeline = tmp_path / "repository" / "dvc.yaml"
    pipeline.write_text(table_entry("checkpoint", "ckpt/module.py")(pipeline.read_text()))
    result = stage(tmp_path / "repository", "download", check=False)
    assert result.returncode == 2
    assert (
        f"checkpoint = 'ckpt/module.py' leads through the symbolic link ckpt to "
        f"{tmp_path.resolve()}/environment/lib/module.py"
    ) in result.stderr


def test_two_outputs_that_lead_to_one_file_through_a_link_are_refused(tmp_path):
    """`plots/images -> .` (a link inside the output's own folder) and a table entry under it
    named like train's history: figures wrote its loss PNG over train's history, exit code 0
    (`loss_image: plots/images/history.csv`, refused now for its suffix too)."""
    copy_pipeline(tmp_path)
    images = Path(paths.LOSS_IMAGE).parent
    (tmp_path / images).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / images).symlink_to(".")
    pipeline = tmp_path / "dvc.yaml"
    over_history = f"{images}/{Path(paths.HISTORY).name}"
    pipeline.write_text(table_entry("per_class", over_history)(pipeline.read_text()))
    result = stage(tmp_path, "figures", check=False)
    assert (result.returncode, result.stderr.splitlines()) == (
        2,
        [
            f"error: dvc.yaml's paths table: history = {paths.HISTORY!r} and per_class = {over_history!r} lead "
            f"through a symbolic link to one place, or one inside the other ({tmp_path.resolve() / paths.HISTORY} "
            f"and {tmp_path.resolve() / paths.HISTORY}); each output needs its own; remove the link, or if "
            f"dvc.yaml's paths table changed, restore it with `git checkout dvc.yaml`"
        ],
    )


def test_an_output_path_the_locale_cannot_encode_is_refused_before_the_work(tmp_path):
    """`loss_image: plots/images/lõss.png` under the C locale without UTF-8 mode: figures drew
    its first picture, then ended in a UnicodeEncodeError traceback."""
    copy_pipeline(tmp_path)
    pipeline = tmp_path / "dvc.yaml"
    pipeline.write_text(table_entry("loss_image", "plots/images/lõss.png")(pipeline.read_text()))
    result = subprocess.run(
        [sys.executable, "-m", "stages.figures"],
        cwd=tmp_path,
        env=os.environ | {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"},
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stderr.splitlines()) == (
        2,
        [
            "error: dvc.yaml's paths table: loss_image = 'plots/images/l\\xf5ss.png' cannot be a file name in this "
            "locale's encoding (ascii); use a UTF-8 locale (export LC_ALL=C.UTF-8) or an ASCII path; fix it, or "
            "restore it with `git checkout dvc.yaml`"
        ],
    )


def test_a_checkpoint_folder_that_is_a_bind_mount_of_the_code_is_refused(tmp_path):
    """`.checkpoints` itself a bind mount of cifar/models (no link on the way), the checkpoint
    named `__init__.py`: train renamed its checkpoint over the module."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--mount", "true"]).returncode != 0:
        pytest.skip("needs a private mount namespace (unshare --mount, as root)")
    copy_pipeline(tmp_path)
    folder = Path(paths.CHECKPOINT).parent
    (tmp_path / folder).mkdir()
    pipeline = tmp_path / "dvc.yaml"
    pipeline.write_text(table_entry("checkpoint", f"{folder}/__init__.py")(pipeline.read_text()))
    result = subprocess.run(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            f'mount --bind cifar/models "{folder}" && exec "$0" -m stages.train',
            sys.executable,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stderr.splitlines()[-1:]) == (
        2,
        [
            f"error: dvc.yaml's paths table: checkpoint = '{folder}/__init__.py' is in {folder}, which is "
            f"cifar/models reached by another path (a bind mount); unmount it (`umount {folder}`), or if dvc.yaml's "
            f"paths table changed, restore it with `git checkout dvc.yaml`"
        ],
    ), result.stderr


def test_a_checkpoint_folder_linked_to_a_bind_mount_of_the_code_is_refused(tmp_path):
    """`.checkpoints` a link out of the repository to a bind mount of cifar/models, the
    checkpoint named `__init__.py`: train overwrote the module, every path's text outside the code."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--mount", "true"]).returncode != 0:
        pytest.skip("needs a private mount namespace (unshare --mount, as root)")
    copy_pipeline(tmp_path / "repository")
    (tmp_path / "mounted").mkdir()
    folder = Path(paths.CHECKPOINT).parent
    (tmp_path / "repository" / folder).symlink_to(tmp_path / "mounted")
    pipeline = tmp_path / "repository" / "dvc.yaml"
    pipeline.write_text(table_entry("checkpoint", f"{folder}/__init__.py")(pipeline.read_text()))
    code = tmp_path / "repository" / "cifar" / "models"
    result = subprocess.run(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            f'mount --bind "{code}" "{tmp_path}/mounted" && exec "$0" -m stages.train',
            sys.executable,
        ],
        cwd=tmp_path / "repository",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: dvc.yaml's paths table: checkpoint = '{folder}/__init__.py' leads through the symbolic link {folder} "
        f"to {tmp_path / 'mounted'}/__init__.py, in a folder of the repository reached by another path (a bind "
        f"mount); remove the link (`rm {folder}`), or if dvc.yaml's paths table changed, restore it with "
        f"`git checkout dvc.yaml`"
    )


@pytest.mark.parametrize(
    ("link", "to", "refused"),
    [
        ("bench", "bench", None),  # a protected folder no stage writes, looping
        (".venv", "..", None),  # the checkout inside its environment's folder
        (
            str(Path(paths.CHECKPOINT).parent),
            Path(paths.CHECKPOINT).parent.name,
            f"checkpoint = {paths.CHECKPOINT!r} leads through a symbolic link that loops",
        ),
    ],
    ids=["protected-folder-loops", "environment-holds-the-repository", "checkpoint-folder-loops"],
)
def test_a_link_that_loops_or_holds_the_repository_is_one_line_or_none(tmp_path, link, to, refused):
    """Each looping link was a RuntimeError traceback in every stage; .venv -> .. was blamed on
    a link at the data's folder, a plain folder."""
    copy_pipeline(tmp_path)
    (tmp_path / link).symlink_to(to)
    result = stage(tmp_path, "evaluate", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.splitlines()[-1]
    assert (refused in last) if refused else last.startswith(f"error: {paths.PARAMS}: file not found"), last


def test_a_checkpoints_folder_linked_to_nowhere_in_the_repository_names_the_link(tmp_path):
    """A dangling `.checkpoints -> nowhere` was blamed on dvc.yaml's paths table, with the fix
    `git checkout dvc.yaml`, which changes nothing."""
    copy_pipeline(tmp_path)
    folder = Path(paths.CHECKPOINT).parent
    (tmp_path / folder).symlink_to(tmp_path / "nowhere")
    result = stage(tmp_path, "evaluate", check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"error: dvc.yaml's paths table: checkpoint = {paths.CHECKPOINT!r} leads through the symbolic link {folder} to "
        f"{tmp_path.resolve()}/nowhere/{Path(paths.CHECKPOINT).name}, in {tmp_path.resolve()}/nowhere, which does not "
        f"exist; remove the link (`rm {folder}`), or if dvc.yaml's paths table changed, restore it with "
        f"`git checkout dvc.yaml`"
    )


def test_the_checkpoints_folder_may_be_a_link_out_of_the_repository(tmp_path):
    """As scripts/ci_setup.py links it into a self-hosted runner's lasting state: the stage
    gets past its paths to its first input, the params file this copy lacks."""
    copy_pipeline(tmp_path / "repository")
    (tmp_path / "lasting").mkdir()
    (tmp_path / "repository" / Path(paths.CHECKPOINT).parent).symlink_to(tmp_path / "lasting")
    result = stage(tmp_path / "repository", "evaluate", check=False)
    assert result.stderr.splitlines()[-1].startswith(f"error: {paths.PARAMS}: file not found"), result.stderr


def test_a_second_vars_entry_beside_the_paths_table_is_read_as_dvc_reads_it(tmp_path):
    """DVC takes a list of `vars` entries; a second one was refused as a damaged table. The
    stage gets past its paths to its first input, the params file this copy lacks."""
    copy_pipeline(tmp_path)
    pipeline = tmp_path / "dvc.yaml"
    pipeline.write_text(pipeline.read_text().replace("  - paths:\n", "  - extra: 1\n  - paths:\n"))
    result = stage(tmp_path, "evaluate", check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(f"error: {paths.PARAMS}: file not found")


def test_a_folder_that_cannot_be_renamed_in_place_says_to_remove_it(tmp_path, monkeypatch):
    """In a container's image (an overlay without redirect_dir) download's folder of the lower
    layer cannot be renamed: "make data a folder you may write to" was said of a writable data/.
    The command is one a shell runs as is: `rm -r my data/NAME` removed data/NAME, another folder."""
    target = tmp_path / "my data" / "cifar10"
    target.mkdir(parents=True)
    (target / "train.npz").write_bytes(b"old")
    real_replace = os.replace

    def across_layers(source, destination):
        if os.fspath(source) == str(target):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(source), str(destination))
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", across_layers)
    with pytest.raises(OutputError) as refused, atomic_path(target) as scratch:
        scratch.mkdir()
    assert str(refused.value) == (
        f"cannot replace {target} (Invalid cross-device link): this file system cannot rename it in place (an overlay "
        f"without redirect_dir, as in a container's image); remove it (`rm -r '{target}'`) and re-run"
    )
    assert (target / "train.npz").read_bytes() == b"old"


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="drops root's override of permissions")
def test_a_read_only_folder_that_is_replaced_is_the_one_named(tmp_path):
    """`chmod 555` on download's folder, in a folder the user may write to: "make data a folder
    you may write to" was said, which it was, and `chmod u+w data` changed nothing."""
    target = tmp_path / "data" / "cifar10"
    target.mkdir(parents=True)
    (target / "train.npz").write_bytes(b"old")
    target.chmod(0o555)
    said = replaced_without_roots_override(target)
    target.chmod(0o755)
    assert said == f"cannot write {target} (Permission denied); make {target} a folder you may write to, and re-run\n"
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["cifar10", "data", "train.npz"]
    target.chmod(0o555)
    target.parent.chmod(0o555)
    said = replaced_without_roots_override(target)
    target.parent.chmod(0o755)
    target.chmod(0o755)
    assert said == (
        f"cannot write {target} (Permission denied); make {target} and {target.parent} folders you may write to, "
        "and re-run\n"
    )
    target.parent.chmod(0o555)
    not_made = target.parent / "sub" / "cifar10"  # a paths table naming a folder not made yet
    said = replaced_without_roots_override(not_made)
    target.parent.chmod(0o755)
    assert said == (
        f"cannot write {not_made} (Permission denied); make {target.parent} a folder you may write to, and re-run\n"
    )


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="drops root's override of permissions")
def test_an_output_in_a_sticky_folder_that_is_another_users_is_named_as_such(tmp_path):
    """data/ of mode 1777 and download's output in it another user's: "make data a folder you may write to"
    was said of a folder anyone may write to, and `chmod u+w data` failed (not its owner)."""
    target = tmp_path / "data" / "cifar10"
    target.mkdir(parents=True)
    nobody = 65534
    os.chown(target, nobody, nobody)
    os.chown(target.parent, nobody, nobody)
    target.parent.chmod(0o1777)
    said = replaced_without_roots_override(target)
    try:
        owner = f"user {pwd.getpwuid(nobody).pw_name}"
    except KeyError:
        owner = f"user ID {nobody}"
    assert said == (
        f"cannot write {target} (Operation not permitted); {target.parent} is sticky (only an entry's owner may "
        f"replace it there) and {target} belongs to {owner}: remove it as {owner} or root, and re-run\n"
    )


def replaced_without_roots_override(target: Path) -> str:
    """What atomic_path says, replacing `target` with a folder, as root without its override of
    file permissions (as a user without root would)."""
    replace = (
        "import sys; from pathlib import Path; from cifar.atomic import atomic_path; from cifar.errors import "
        "OutputError\ntry:\n    with atomic_path(Path(sys.argv[1])) as scratch:\n        scratch.mkdir()\n"
        "except OutputError as error:\n    print(error)"
    )
    dropped = "-dac_override,-dac_read_search,-fowner"  # fowner: the sticky bit's override
    without_override = f"--inh-caps={dropped} --bounding-set={dropped}"
    return subprocess.run(
        ["setpriv", *without_override.split(), sys.executable, "-c", replace, str(target)],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
