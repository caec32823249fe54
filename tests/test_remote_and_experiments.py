"""The DVC workflow: reproduce from a remote cache, change a param, sweep with the queue."""

import json
import shutil
import sys
import time

import pytest

from cifar.data import file_digest as digest
from pipeline_repo import REPO, dvc, run, workspace_digests

REPRODUCE = str(REPO / "scripts/reproduce_from_cache.py")
CACHED_OUTPUTS = ("data/cifar10/train.npz", "data/cifar10/test.npz", "models/model.pt", "data/predictions.csv")
GIT_OUTPUTS = ("metrics/train.json", "metrics/evaluate.json", "metrics/lr_find.json", "plots/history.csv")


@pytest.fixture(scope="module")
def published(repro, tmp_path_factory):
    """A copy of the pipeline run, committed and pushed with its run cache to a local remote."""
    source, _, _ = repro
    base = tmp_path_factory.mktemp("published")
    root, remote = base / "origin", base / "remote"
    shutil.copytree(source, root, symlinks=True, ignore=shutil.ignore_patterns("dvc_plots", "chromium-profile"))
    remote.mkdir()
    dvc(root, "remote", "add", "--default", "storage", str(remote))
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "pipeline run")
    dvc(root, "push", "--run-cache")
    return root, remote


def fresh_clone(published, destination):
    root, _ = published
    run(root, "git", "clone", "-q", str(root), str(destination))
    assert not (destination / ".dvc/cache").exists()
    return destination


def reproduce(root, *arguments):
    return run(root, sys.executable, REPRODUCE, *arguments, check=False)


def test_a_fresh_clone_reproduces_from_the_remote_without_running_a_stage(published, tmp_path):
    origin, _ = published
    clone = fresh_clone(published, tmp_path / "clone")
    result = reproduce(clone, "--remote", "storage", "--base", "HEAD")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Running stage" not in result.stdout + result.stderr
    assert "no stage ran, dvc.lock unchanged" in result.stdout
    for output in CACHED_OUTPUTS + GIT_OUTPUTS:
        assert digest(clone / output) == digest(origin / output), output
    assert workspace_digests(clone / "plots/images") == workspace_digests(origin / "plots/images")


def test_changing_epochs_reruns_train_and_later_stages_only(published, tmp_path):
    clone = fresh_clone(published, tmp_path / "clone")
    assert reproduce(clone, "--remote", "storage").returncode == 0
    params = (clone / "params.yaml").read_text()
    (clone / "params.yaml").write_text(params.replace("epochs: 3", "epochs: 4"))
    log = dvc(clone, "repro")
    ran = log.stdout + log.stderr
    assert [stage for stage in ("download", "lr_find", "train", "evaluate", "explain") if f"Running stage '{stage}'" in ran] == [
        "train", "evaluate", "explain"
    ]
    params_diff = dvc(clone, "params", "diff", "--md").stdout
    assert "train.epochs" in params_diff and "| 3 " in params_diff and "| 4 " in params_diff
    metrics_diff = json.loads(dvc(clone, "metrics", "diff", "--json").stdout)
    assert "metrics/train.json" in metrics_diff and "epochs" in metrics_diff["metrics/train.json"]


@pytest.mark.parametrize("remote", ["missing", "empty", "unconfigured"])
def test_a_missing_or_unreachable_remote_fails_in_one_line_and_loses_nothing(published, tmp_path, remote):
    clone = fresh_clone(published, tmp_path / "clone")
    argument = {
        "missing": str(tmp_path / "no-such-remote"),
        "empty": str(tmp_path / "empty-remote"),
        "unconfigured": "teamstore",
    }[remote]
    (tmp_path / "empty-remote").mkdir()
    before = workspace_digests(clone)
    result = reproduce(clone, "--remote", argument)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error: DVC remote ")
    assert {"missing": "is missing: no such directory", "empty": "lacks this revision's outputs",
            "unconfigured": "'teamstore' is not configured"}[remote] in message
    if remote != "unconfigured":
        assert argument in message
    assert workspace_digests(clone) == before


def test_a_queued_sweep_over_both_models_completes(published, tmp_path):
    origin, _ = published
    root = tmp_path / "sweep"
    shutil.copytree(origin, root, symlinks=True)
    dvc(root, "exp", "run", "--queue", "-S", "model.name=custom_resnet,resnet18")
    dvc(root, "queue", "start", "-j", "2")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = dvc(root, "queue", "status").stdout
        if not any(state in status for state in ("Queued", "Running")):
            break
        time.sleep(5)
    else:
        dvc(root, "queue", "kill", "--all", check=False)
        pytest.fail(f"the sweep did not finish in 10 minutes:\n{status}")
    assert status.count("Success") == 2, status + dvc(root, "queue", "logs", "--all", check=False).stdout
    experiments = json.loads(dvc(root, "exp", "show", "--json").stdout)
    runs = [exp for commit in experiments for exp in (commit.get("experiments") or [])]
    models, accuracies = [], []
    for experiment in runs:
        data = experiment["revs"][0]["data"]
        models.append(data["params"]["params.yaml"]["data"]["model"]["name"])
        accuracies.append(data["metrics"]["metrics/evaluate.json"]["data"]["accuracy"])
    assert sorted(models) == ["custom_resnet", "resnet18"]
    assert all(0 <= accuracy <= 1 for accuracy in accuracies)
