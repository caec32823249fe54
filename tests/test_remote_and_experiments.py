"""The DVC workflow as users run it: share through a remote and its run cache, reproduce in
a fresh clone without training, change a param, run queued experiments and a seed spread."""

import json
import shutil
import sys

import pandas as pd
import pytest

from cifar.dataset import file_digest as digest
from pipeline_repo import REPO, dvc, fresh_clone, push_results, run, workspace_digests
from stages import paths

REPRODUCE = str(REPO / "scripts/reproduce_from_cache.py")
SEED_SPREAD = str(REPO / "scripts/seed_spread.py")
STAGES = ("download", "lr_find", "train", "evaluate", "figures", "explain")
CACHED_OUTPUTS = (f"{paths.DATA}/train.npz", f"{paths.DATA}/test.npz", paths.MODEL, paths.PREDICTIONS)
GIT_OUTPUTS = (paths.TRAIN_METRICS, paths.EVALUATE_METRICS, paths.LR_FIND_METRICS, paths.HISTORY)


def reproduce(root, *arguments):
    return run(root, sys.executable, REPRODUCE, *arguments, check=False)


def ran_stages(log: str) -> list[str]:
    return [name for name in STAGES if f"Running stage '{name}'" in log]


def test_a_fresh_clone_pulls_to_a_clean_status_and_reproduces_without_running_a_stage(published, tmp_path):
    origin, _ = published
    clone = fresh_clone(published, tmp_path / "clone")
    dvc(clone, "pull")
    # A user's Python writes bytecode beside the code the stages depend on.
    run(clone, "python", "-c", "import cifar.engine, cifar.models, cifar.plots, cifar.sources, cifar.explain, cifar.lr_find")
    assert (clone / "cifar/models/__pycache__").is_dir()
    assert "Data and pipelines are up to date" in dvc(clone, "status").stdout
    result = reproduce(clone, "--remote", "storage", "--base", "HEAD")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ran_stages(result.stdout + result.stderr) == []
    assert "no stage ran, dvc.lock unchanged" in result.stdout
    for output in CACHED_OUTPUTS + GIT_OUTPUTS:
        assert digest(clone / output) == digest(origin / output), output
    assert workspace_digests(clone / "plots/images") == workspace_digests(origin / "plots/images")
    assert run(clone, "git", "status", "--porcelain").stdout == ""


def test_the_remote_holds_a_run_cache_entry_for_every_stage(published):
    _, remote = published
    # runs/<2 hex>/<stage key>/<entry>: one key per stage and its deps and params.
    keys = [key for prefix in (remote / "runs").iterdir() for key in prefix.iterdir()]
    assert len(keys) == len(STAGES)


def test_a_stale_stage_fails_the_reproduction_before_anything_runs(published, tmp_path):
    clone = fresh_clone(published, tmp_path / "clone")
    inference = clone / "cifar/inference.py"  # train and evaluate both import it
    inference.write_text(inference.read_text() + "# edited\n")
    lock = (clone / "dvc.lock").read_text()
    result = reproduce(clone, "--remote", "storage")
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.startswith("error: stages would have to run, so nothing was run: ")
    assert "train (changed deps: cifar/inference.py modified)" in message
    assert "evaluate (changed deps: cifar/inference.py modified)" in message
    assert ran_stages(result.stdout + result.stderr) == []
    assert (clone / "dvc.lock").read_text() == lock


def test_restyling_figures_reruns_only_the_figure_stages(published, tmp_path):
    clone = fresh_clone(published, tmp_path / "clone")
    dvc(clone, "pull")
    plots = clone / "cifar/plots.py"
    plots.write_text(plots.read_text().replace('figsize=(6, 3.8)', 'figsize=(7, 4.2)'))
    (clone / "README.md").write_text("# a note\n")
    status = json.loads(dvc(clone, "status", "--json").stdout)
    assert sorted(status) == ["explain", "figures"]


@pytest.mark.full
def test_a_param_change_reruns_train_onwards_and_another_clone_restores_it_from_the_run_cache(published, tmp_path):
    first = fresh_clone(published, tmp_path / "first")
    assert reproduce(first, "--remote", "storage").returncode == 0
    (first / "params.yaml").write_text((first / "params.yaml").read_text().replace("epochs: 3", "epochs: 4"))
    log = dvc(first, "repro")
    assert ran_stages(log.stdout + log.stderr) == ["train", "evaluate", "figures", "explain"]
    params_diff = dvc(first, "params", "diff", "--md").stdout
    assert "train.epochs" in params_diff and "| 3 " in params_diff and "| 4 " in params_diff
    metrics_diff = json.loads(dvc(first, "metrics", "diff", "--json").stdout)
    assert "test_accuracy" in metrics_diff[paths.TRAIN_METRICS]
    push_results(first)

    second = fresh_clone(published, tmp_path / "second")
    dvc(second, "pull", "--run-cache")
    (second / "params.yaml").write_text((second / "params.yaml").read_text().replace("epochs: 3", "epochs: 4"))
    restored = dvc(second, "repro", "--pull")
    log = restored.stdout + restored.stderr
    assert ran_stages(log) == []
    for name in ("train", "evaluate", "figures", "explain"):
        assert f"Stage '{name}' is cached - skipping run" in log
    for output in (paths.MODEL, paths.TRAIN_METRICS, paths.EVALUATE_METRICS, paths.HISTORY):
        assert digest(second / output) == digest(first / output), output


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


@pytest.mark.full
def test_a_queued_experiment_runs_its_own_snapshot_not_the_workspace(published, tmp_path):
    origin, _ = published
    root = tmp_path / "queue"
    shutil.copytree(origin, root, symlinks=True)
    dvc(root, "exp", "run", "--queue", "--name", "with-tta", "-S", "evaluate.tta=true")
    # The workspace's code changes after queueing: the experiment must not run it.
    inference = root / "cifar/inference.py"  # evaluate, which the experiment re-runs, imports it
    inference.write_text("raise SystemExit('the workspace code ran, not the queued snapshot')\n" + inference.read_text())
    # The queue's own worker runs it; --run-all returns once the queue is done.
    ran = dvc(root, "exp", "run", "--run-all", check=False)
    status = dvc(root, "queue", "status").stdout
    assert status.count("Success") == 1, status + ran.stdout + ran.stderr
    shown = json.loads(dvc(root, "exp", "show", "--json").stdout)
    (experiment,) = [exp["revs"][0] for commit in shown for exp in (commit.get("experiments") or [])]
    assert 0 <= experiment["data"]["metrics"][paths.EVALUATE_METRICS]["data"]["flip_tta_accuracy"] <= 1
    # README's documented `dvc exp show` fits a 200-column terminal, nothing cut off.
    command = next(
        line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("dvc exp show --only-changed")
    )
    table = run(root, "bash", "-c", f"COLUMNS=200 {command} --no-pager").stdout
    assert max(len(line) for line in table.splitlines()) <= 200 and "…" not in table, table
    assert "flip_tta_accuracy" in table


@pytest.mark.full
def test_seed_spread_queues_each_seed_and_reports_mean_and_spread(published, tmp_path):
    origin, _ = published
    root = tmp_path / "spread"
    shutil.copytree(origin, root, symlinks=True)
    result = run(root, sys.executable, SEED_SPREAD, "--seeds", "2", "-S", "train.epochs=2", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    spread = pd.read_csv(root / "plots/seed_spread.csv")
    assert spread["seed"].tolist() == [0, 1]
    assert spread["accuracy"].between(0, 1).all()
    mean, sd = spread["accuracy"].mean(), spread["accuracy"].std()
    assert f"test accuracy over 2 seeds: {mean:.4f} ± {sd:.4f}" in result.stdout
