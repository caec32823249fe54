"""Never lose a run: a killed `dvc repro` resumes, divergence is loud, bad input is refused
with one line and leaves the previous outputs intact."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from cifar.config import load_params
from dvc_internals import apply_overrides
from generated import make_class_tree
from pipeline_repo import REPO, copy_of, dvc, environment, object_path, stage, workspace_digests
from stages import paths


def quality_metrics(root):
    return json.loads((root / paths.TRAIN_METRICS).read_text())


def weights(root):
    return torch.load(root / paths.MODEL, weights_only=True)["state_dict"]


@pytest.mark.full
def test_sigkill_during_training_then_repro_resumes_to_the_same_bytes_as_an_uninterrupted_run(repro, tmp_path):
    """Training from scratch with the same seed on the same CPU, killed and resumed, ends with
    the uninterrupted run's model file byte for byte and every number but the timings."""
    uninterrupted, _ = repro
    # The finished run with its model gone from the workspace, the DVC cache and the run cache,
    # from which `dvc repro` would restore it: train must run again from scratch, nothing before it.
    root = copy_of(repro, tmp_path / "killed")
    (root / paths.MODEL).unlink()
    object_path(root / ".dvc/cache", root, paths.MODEL).unlink()
    shutil.rmtree(root / ".dvc/cache/runs")
    checkpoint = root / paths.CHECKPOINT
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=root,
        env=environment(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    # The stage logs an epoch before it saves that epoch's checkpoint: once epoch 2 is logged,
    # epoch 1's checkpoint is on disk and the last epoch is still to train.
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("epoch 2/3:"):
            break
    os.killpg(process.pid, signal.SIGKILL)  # dvc and the stage with it, as a preempted machine
    process.wait()
    process.stderr.close()
    assert seen and seen[-1].startswith("epoch 2/3:"), "training never reached epoch 2:\n" + "".join(seen)[-2000:]
    assert checkpoint.exists(), "no checkpoint after epoch 1"
    assert not (root / paths.TRAIN_METRICS).exists(), "the kill came too late: training had finished"

    again = dvc(root, "repro")
    log = again.stdout + again.stderr
    assert "Running stage 'download'" not in log and "Running stage 'lr_find'" not in log
    assert f"resuming from {paths.CHECKPOINT}" in log
    assert quality_metrics(root) == quality_metrics(uninterrupted)
    assert not checkpoint.exists(), "a finished run's checkpoint stays behind"
    assert (root / paths.EVALUATE_METRICS).read_text() == (uninterrupted / paths.EVALUATE_METRICS).read_text()
    resumed, reference = weights(root), weights(uninterrupted)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[name], reference[name]) for name in reference)
    assert (root / paths.MODEL).read_bytes() == (uninterrupted / paths.MODEL).read_bytes()
    # Every number of the history but the seconds each epoch took; the LR of every step.
    history, expected = (
        pd.read_csv(folder / paths.HISTORY).drop(columns="seconds") for folder in (root, uninterrupted)
    )
    pd.testing.assert_frame_equal(history, expected, check_exact=True)
    assert (root / paths.LR_SCHEDULE).read_text() == (uninterrupted / paths.LR_SCHEDULE).read_text()


def readme_presets() -> dict[str, list[str]]:
    """README's reference runs: the comment naming each, then its `scripts/run.sh -S ...`."""
    section = (REPO / "README.md").read_text().split("### The two reference runs", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    presets, name = {}, None
    for line in block.splitlines():
        if line.startswith("# reference-"):
            name = line[2:].split(":")[0].split(",")[0]
        elif line.startswith("scripts/run.sh") and name:
            words = line.split()
            presets[name] = [words[i + 1] for i, word in enumerate(words) if word == "-S"]
    return presets


@pytest.mark.full
def test_readme_presets_parse_and_the_resnet18_reference_fails_as_it_did(repro, tmp_path):
    presets = readme_presets()
    assert set(presets) == {"reference-resnet9", "reference-resnet18-gn"}
    assert presets["reference-resnet9"] == ["lr_find.pick=min_loss"]
    root = copy_of(repro, tmp_path / "reference")
    # As it was, shrunk to the test's data: two epochs, peak after the first.
    apply_overrides(
        root / "params.yaml", presets["reference-resnet18-gn"] + ["train.epochs=2", "train.onecycle.max_at_epoch=1"]
    )
    params = load_params(root / "params.yaml")
    assert (params.model.layer4_stride, params.train.optimizer, params.train.max_lr) == (1, "sgd", 1.0)
    result = stage(root, "train", check=False)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ")
    assert "training diverged" in message or "is not above chance" in message, message


def break_yaml(root):
    (root / "params.yaml").write_text((root / "params.yaml").read_text().replace("epochs: 3", "epochs: [3"))


def set_wrong_type(root):
    apply_overrides(root / "params.yaml", ["train.epochs=three"])


def truncate_data(root):
    path = root / paths.DATA / "train.npz"
    os.chmod(path, 0o644)  # DVC may link cached files read-only
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2])


def extra_class_source(root):
    tree = make_class_tree(root.parent / "export", {"train": 1, "test": 1})
    (tree / "train" / "unicorn").mkdir()
    (tree / "test" / "unicorn").mkdir()
    params = (root / "params.yaml").read_text().replace("source: synthetic", f"source: {tree}")
    (root / "params.yaml").write_text(params)


@pytest.mark.parametrize(
    ("break_input", "failing_stage", "message"),
    [
        (break_yaml, "download", "params.yaml: not valid YAML at line"),
        (set_wrong_type, "train", "train.epochs = 'three' is not allowed; expected an integer"),
        (truncate_data, "train", f"{paths.DATA}/train.npz: contents differ from the download stage's checksum"),
        (extra_class_source, "download", "missing: none; unexpected: 'unicorn'"),
    ],
)
def test_bad_input_fails_in_one_line_and_keeps_the_previous_outputs(
    repro, tmp_path, break_input, failing_stage, message
):
    root = copy_of(repro, tmp_path / "repo")
    outputs = (paths.DATA, "models", "metrics", "plots")
    before = {name: workspace_digests(root / name) for name in outputs}
    break_input(root)
    result = stage(root, failing_stage, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr[-2000:]
    after = {name: workspace_digests(root / name) for name in outputs}
    if break_input is truncate_data:
        after[paths.DATA] = before[paths.DATA]  # the damage itself
    assert after == before
