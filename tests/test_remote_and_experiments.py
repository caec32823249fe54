"""The DVC workflow as users run it: share through a remote and its run cache, reproduce in
a fresh clone without training, change a param, run queued experiments and a seed spread."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cifar.dataset import file_digest as digest
from dvc_internals import resolved_pipeline
from installed import environment_with_package, installable_copy
from pipeline_repo import (
    REPO,
    default_params,
    dvc,
    environment,
    fresh_clone,
    object_path,
    push_results,
    run,
    workspace_digests,
)
from stages import paths

REPRODUCE = str(REPO / "scripts/reproduce_from_cache.py")
PUSH = str(REPO / "scripts/push_results.py")
SEED_SPREAD = str(REPO / "scripts/seed_spread.py")
STAGES = ("download", "lr_find", "train", "evaluate", "figures", "explain")
OUTPUTS = (
    f"{paths.DATA}/train.npz",
    f"{paths.DATA}/test.npz",
    paths.MODEL,
    paths.PREDICTIONS,
    paths.TRAIN_METRICS,
    paths.EVALUATE_METRICS,
    paths.LR_FIND_METRICS,
    paths.HISTORY,
    paths.LOSS_IMAGE,
)


def reproduce(root, *arguments):
    return run(root, sys.executable, REPRODUCE, *arguments, check=False)


def ran_stages(log: str) -> list[str]:
    return [name for name in STAGES if f"Running stage '{name}'" in log]


def test_a_fresh_clone_pulls_to_a_clean_status_and_reproduces_without_running_a_stage(published, tmp_path):
    origin, _ = published
    clone = fresh_clone(published, tmp_path / "clone")
    dvc(clone, "pull")
    # A user's Python writes bytecode beside the code the stages depend on.
    run(
        clone,
        "python",
        "-c",
        "import cifar.training.engine, cifar.models, cifar.reporting.plots, cifar.ingest.sources, "
        "cifar.reporting.explain, cifar.training.lr_find",
    )
    assert (clone / "cifar/models/__pycache__").is_dir()
    assert "Data and pipelines are up to date" in dvc(clone, "status").stdout
    result = reproduce(clone, "--remote", "storage", "--base", "HEAD")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ran_stages(result.stdout + result.stderr) == []
    assert "no stage ran, dvc.lock unchanged" in result.stdout
    for output in OUTPUTS:
        assert digest(clone / output) == digest(origin / output), output
    assert workspace_digests(clone / "plots/images") == workspace_digests(origin / "plots/images")
    assert run(clone, "git", "status", "--porcelain").stdout == ""


def test_a_committed_run_keeps_its_results_out_of_git(published):
    """Metrics, plot CSVs and PNGs are DVC-cached like the model: git holds dvc.lock and the
    .gitignore files DVC writes beside them, so the repository does not grow run by run."""
    origin, _ = published
    tracked = run(origin, "git", "ls-files").stdout.split()
    folders = {Path(output).parts[0] for output in OUTPUTS}
    assert [path for path in tracked if Path(path).parts[0] in folders and Path(path).name != ".gitignore"] == []
    assert f"{Path(paths.LOSS_IMAGE).parent}/.gitignore" in tracked and "dvc.lock" in tracked


def downloaded(clone: Path) -> list[str]:
    """The files a clone's DVC cache holds but the small manifests of directory outputs."""
    return [
        str(path) for path in (clone / ".dvc/cache").rglob("*") if path.is_file() and not path.name.endswith(".dir")
    ]


def test_the_remote_holds_a_run_cache_entry_for_every_stage(published):
    _, remote = published
    # runs/<2 hex>/<stage key>/<entry>: one key per stage and its deps and params.
    keys = [key for prefix in (remote / "runs").iterdir() for key in prefix.iterdir()]
    assert len(keys) == len(STAGES)


def test_a_stale_stage_fails_the_reproduction_before_anything_runs(published, tmp_path):
    clone = fresh_clone(published, tmp_path / "clone")
    inference = clone / "cifar/training/inference.py"  # train and evaluate both import it
    inference.write_text(inference.read_text() + "# edited\n")
    lock = (clone / "dvc.lock").read_text()
    result = reproduce(clone, "--remote", "storage")
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.startswith("error: stages would have to run, so nothing was run: ")
    assert "train (changed deps: cifar/training/inference.py modified)" in message
    assert "evaluate (changed deps: cifar/training/inference.py modified)" in message
    assert ran_stages(result.stdout + result.stderr) == []
    assert (clone / "dvc.lock").read_text() == lock
    # Known before any download: no output was pulled.
    assert downloaded(clone) == [] and not (clone / paths.MODEL).exists()


def test_the_package_init_and_the_stages_pins_are_deps_of_every_stage_and_a_test_tools_pin_of_none(published, tmp_path):
    clone = fresh_clone(published, tmp_path / "clone")
    dvc(clone, "pull")

    def stale_stages_after(path: str, edit) -> list[str]:
        original = (clone / path).read_text()
        (clone / path).write_text(edit(original))
        try:
            return sorted(json.loads(dvc(clone, "status", "--json").stdout))
        finally:
            (clone / path).write_text(original)

    everything = sorted(STAGES)
    assert stale_stages_after("cifar/__init__.py", lambda text: text + "# every stage runs this\n") == everything
    torch_upgrade = lambda text: re.sub(r"^torch==.*$", "torch==2.99.0", text, flags=re.M)  # noqa: E731
    assert stale_stages_after("requirements-stages.txt", torch_upgrade) == everything
    pytest_upgrade = lambda text: re.sub(r"^pytest==.*$", "pytest==99.0", text, flags=re.M)  # noqa: E731
    assert stale_stages_after("requirements.txt", pytest_upgrade) == []


def test_an_output_missing_from_the_remote_is_named_before_any_download_and_the_suggested_push_fixes_it(
    published, tmp_path
):
    origin, remote = published
    partial = tmp_path / "partial-remote"
    shutil.copytree(remote, partial)
    object_path(partial, origin, paths.MODEL).unlink()
    clone = fresh_clone(published, tmp_path / "clone")
    result = reproduce(clone, "--remote", str(partial))
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error: DVC remote ")
    assert "lacks 1 of this revision's" in message and f"outputs ({paths.MODEL})" in message, message
    assert downloaded(clone) == [] and not (clone / paths.DATA).exists()

    # The command the message suggests, run where the results are, completes the remote.
    suggested = shlex.split(re.search(r"`(python scripts/push_results.py [^`]+)`", message)[1])
    producer = tmp_path / "producer"
    shutil.copytree(origin, producer, symlinks=True)
    run(producer, sys.executable, PUSH, *suggested[2:])
    result = reproduce(clone, "--remote", str(partial))
    assert result.returncode == 0, result.stderr
    assert digest(clone / paths.MODEL) == digest(origin / paths.MODEL)


def test_a_push_that_leaves_an_output_off_the_remote_fails_in_one_line(published, tmp_path):
    """`dvc push` skips an object missing from the local cache and exits 0; push_results.py must not."""
    origin, _ = published
    producer = tmp_path / "producer"
    shutil.copytree(origin, producer, symlinks=True)
    object_path(producer / ".dvc/cache", producer, paths.MODEL).unlink()
    (tmp_path / "new-remote").mkdir()
    dvc(producer, "remote", "add", "--local", "fresh", str(tmp_path / "new-remote"))
    result = run(producer, sys.executable, PUSH, "--remote", "fresh", check=False)
    assert result.returncode == 1
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error: DVC remote 'fresh' ")
    assert f"lacks {paths.MODEL} after the push" in message and "`dvc commit --force`" in message
    # The fix the message names works.
    dvc(producer, "commit", "--force")
    assert "holds every output of dvc.lock" in run(producer, sys.executable, PUSH, "--remote", "fresh").stdout


def test_dvc_artifacts_get_fetches_the_registered_model_from_the_remote(published, tmp_path):
    origin, _ = published
    (name,) = resolved_pipeline()["artifacts"]
    registry = fresh_clone(published, tmp_path / "registry")
    run(registry, "gto", "register", name)
    run(tmp_path, sys.executable, "-m", "dvc", "artifacts", "get", str(registry), name, "-o", "fetched.pt")
    assert digest(tmp_path / "fetched.pt") == digest(origin / paths.MODEL)


def dotted_keys(tree: dict, prefix: str = "") -> list[str]:
    """params.yaml's keys as `dvc exp show` names its columns: train.onecycle.max_at_epoch."""
    return [
        key
        for name, value in tree.items()
        for key in (dotted_keys(value, f"{prefix}{name}.") if isinstance(value, dict) else [f"{prefix}{name}"])
    ]


def readme_exp_show() -> str:
    return next(
        line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("dvc exp show --only-changed")
    )


def test_readme_exp_show_hides_no_param_and_no_quality_metric():
    """DVC drops the columns whose names match a --drop pattern from their start (re.match)."""
    arguments = shlex.split(readme_exp_show())
    drop = re.compile(arguments[arguments.index("--drop") + 1])
    params = dotted_keys(default_params())
    assert "train.max_lr" in params and "seed" in params
    assert [key for key in params if drop.match(key)] == []
    quality = (
        "test_accuracy",
        "test_loss",
        "accuracy",
        "loss",
        "misclassified",
        "flip_tta_accuracy",
        "at_chance_level",
    )
    assert [metric for metric in quality if drop.match(metric)] == []
    deps = {dep for stage in resolved_pipeline()["stages"].values() for dep in stage["deps"]}
    assert [dep for dep in deps if not drop.match(dep)] == []


def test_restyling_figures_reruns_only_the_figure_stages(published, tmp_path):
    clone = fresh_clone(published, tmp_path / "clone")
    dvc(clone, "pull")
    plots = clone / "cifar/reporting/plots.py"
    plots.write_text(plots.read_text().replace("figsize=(6, 3.8)", "figsize=(7, 4.2)"))
    (clone / "README.md").write_text("# a note\n")
    status = json.loads(dvc(clone, "status", "--json").stdout)
    assert sorted(status) == ["explain", "figures"]


@pytest.mark.full
def test_a_param_change_reruns_train_onwards_and_another_clone_restores_it_from_the_run_cache(published, tmp_path):
    first = fresh_clone(published, tmp_path / "first")
    assert reproduce(first, "--remote", "storage").returncode == 0
    (first / "params.yaml").write_text((first / "params.yaml").read_text().replace("epochs: 3", "epochs: 2"))
    log = dvc(first, "repro")
    assert ran_stages(log.stdout + log.stderr) == ["train", "evaluate", "figures", "explain"]
    params_diff = dvc(first, "params", "diff", "--md").stdout
    assert "train.epochs" in params_diff and "| 3 " in params_diff and "| 2 " in params_diff
    metrics_diff = json.loads(dvc(first, "metrics", "diff", "--json").stdout)
    assert "test_accuracy" in metrics_diff[paths.TRAIN_METRICS]
    push_results(first)

    second = fresh_clone(published, tmp_path / "second")
    (second / "params.yaml").write_text((second / "params.yaml").read_text().replace("epochs: 3", "epochs: 2"))
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
    expected = {
        "missing": "is missing: no such directory",
        "empty": r"lacks (\d+) of this revision's \1 outputs",
        "unconfigured": "'teamstore' is not configured",
    }[remote]
    assert re.search(expected, message), message
    if remote != "unconfigured":
        assert argument in message
    assert workspace_digests(clone) == before


@pytest.mark.full
def test_a_queued_experiment_runs_its_own_snapshot_not_the_workspace(published, tmp_path):
    origin, _ = published
    root = tmp_path / "queue"
    shutil.copytree(origin, root, symlinks=True)
    # A change to training (one that leaves lr_find's params alone, so it re-runs train onwards
    # only) and one that adds a metric.
    dvc(root, "exp", "run", "--queue", "--name", "with-tta", "-S", "train.epochs=2", "-S", "evaluate.tta=true")
    # The workspace's code changes after queueing: the experiment must not run it.
    inference = root / "cifar/training/inference.py"  # train and evaluate, which the experiment re-runs, import it
    inference.write_text(
        "raise SystemExit('the workspace code ran, not the queued snapshot')\n" + inference.read_text()
    )
    # Nor may it run a copy of `cifar` installed in its environment (`pip install .`, for a
    # notebook): the stages import the snapshot beside them first.
    installed = installable_copy(tmp_path / "package")
    init = installed / "cifar/__init__.py"
    init.write_text("raise SystemExit('the installed cifar package ran, not the queued snapshot')\n" + init.read_text())
    python = environment_with_package(tmp_path / "venv", installed)
    env = environment(root)
    env["PATH"] = f"{python.parent}{os.pathsep}{env['PATH']}"
    # The queue's own worker runs it; --run-all returns once the queue is done.
    ran = subprocess.run(
        [python, "-m", "dvc", "exp", "run", "--run-all"], cwd=root, env=env, capture_output=True, text=True
    )
    status = dvc(root, "queue", "status").stdout
    assert status.count("Success") == 1, status + ran.stdout + ran.stderr
    shown = json.loads(dvc(root, "exp", "show", "--json").stdout)
    (experiment,) = [exp["revs"][0] for commit in shown for exp in (commit.get("experiments") or [])]
    assert 0 <= experiment["data"]["metrics"][paths.EVALUATE_METRICS]["data"]["flip_tta_accuracy"] <= 1
    # README's documented `dvc exp show` fits a 200-column terminal, nothing cut off, with
    # the params the experiment changed and the quality metrics.
    table = run(root, "bash", "-c", f"COLUMNS=200 {readme_exp_show()} --no-pager").stdout
    assert max(len(line) for line in table.splitlines()) <= 200 and "…" not in table, table
    for column in ("train.epochs", "evaluate.tta", "test_accuracy", "accuracy", "flip_tta_accuracy"):
        assert column in table, table


@pytest.mark.full
def test_seed_spread_queues_each_seed_and_reports_mean_and_spread(published, tmp_path):
    origin, _ = published
    root = tmp_path / "spread"
    shutil.copytree(origin, root, symlinks=True)
    # Seed 0 has the published run's params, so DVC's run cache restores its every stage; seed 1 trains.
    result = run(root, sys.executable, SEED_SPREAD, "--seeds", "2", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    published_accuracy = json.loads((origin / paths.EVALUATE_METRICS).read_text())["accuracy"]
    spread = pd.read_csv(root / "plots/seed_spread.csv")
    assert spread["seed"].tolist() == [0, 1]
    assert spread["accuracy"].between(0, 1).all() and spread["accuracy"].iloc[0] == published_accuracy
    mean, sd = spread["accuracy"].mean(), spread["accuracy"].std()
    assert f"test accuracy over 2 seeds: {mean:.4f} ± {sd:.4f}" in result.stdout
