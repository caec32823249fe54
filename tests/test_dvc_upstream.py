"""The DVC behaviours that sharing results is built around, measured on the pinned DVC in a
tiny repository: a stage is restored from a pushed run cache in another clone only if all
its outputs are DVC-cached (why dvc.yaml caches metrics, plot CSVs and PNGs); `dvc push`
exits 0 when an object is missing from the local cache (why scripts/push_results.py checks
the remote afterwards); `dvc status --cloud --json` leaves out a directory whose manifest
neither the cache nor the remote holds (why scripts/dvc_cli.py reads its warning too).
docs/dvc-upstream-issues.md reports them upstream.

Pinned to one DVC version: after an upgrade these fail loudly, to be measured again."""

import importlib.metadata
import json
import re
import sys

import pytest

from pipeline_repo import REPO, dvc, run

MEASURED_ON = "3.67.1"
STAGE = """\
import json, pathlib, yaml
p = yaml.safe_load(open("params.yaml"))["p"]
pathlib.Path("out.txt").write_text(f"result of {p}\\n")
json.dump({"score": p}, open("score.json", "w"))
with open("ran.log", "a") as log:
    log.write(f"{p}\\n")
"""


def test_dvc_is_the_version_these_behaviours_were_measured_on():
    installed = importlib.metadata.version("dvc")
    assert installed == MEASURED_ON, (
        f"dvc {installed} is installed, these behaviours were measured on {MEASURED_ON}: run this module, then "
        "update docs/sharing.md, docs/dvc-upstream-issues.md, scripts/push_results.py and MEASURED_ON"
    )


def tiny_repo(root, remote, metric_cached: bool):
    """A repository whose one stage writes a cached out.txt and score.json, a metric DVC-cached
    or not; run with p=1 and committed, so a clone has its dvc.lock."""
    root.mkdir()
    remote.mkdir()
    (root / "stage.py").write_text(STAGE)
    (root / "params.yaml").write_text("p: 1\n")
    metric = "score.json" if metric_cached else "score.json:\n          cache: false"
    (root / "dvc.yaml").write_text(
        f"stages:\n  make:\n    cmd: {sys.executable} stage.py\n    deps: [stage.py]\n    params: [p]\n"
        f"    outs: [out.txt]\n    metrics:\n      - {metric}\n"
    )
    (root / ".gitignore").write_text("ran.log\n")
    run(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    dvc(root, "remote", "add", "--default", "storage", str(remote))
    dvc(root, "repro")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "p=1")
    return root


@pytest.mark.full
@pytest.mark.parametrize("metric_cached", [True, False], ids=["cached metric", "cache: false metric"])
def test_another_clone_restores_a_pushed_run_only_if_all_its_outputs_are_dvc_cached(tmp_path, metric_cached):
    origin = tiny_repo(tmp_path / "origin", tmp_path / "remote", metric_cached)
    # A run with p=2, in the workspace when pushed with its run cache.
    (origin / "params.yaml").write_text("p: 2\n")
    dvc(origin, "repro")
    dvc(origin, "push", "--run-cache")

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    (clone / "params.yaml").write_text("p: 2\n")
    result = dvc(clone, "repro", "--pull")
    log = result.stdout + result.stderr
    assert (clone / "score.json").read_text() == (origin / "score.json").read_text()
    if metric_cached:
        assert "Stage 'make' is cached - skipping run" in log and not (clone / "ran.log").exists(), log
    else:
        # The record came, the metric's file did not: DVC warns and runs the stage again.
        assert "Running stage 'make'" in log and (clone / "ran.log").read_text() == "2\n", log


def test_a_push_that_skips_an_object_missing_from_the_local_cache_exits_0(tmp_path):
    origin = tiny_repo(tmp_path / "origin", tmp_path / "remote", metric_cached=True)
    missing = next(path for path in (origin / ".dvc/cache/files/md5").rglob("*") if path.is_file())
    missing.unlink()
    pushed = dvc(origin, "push", "--run-cache")
    assert pushed.returncode == 0
    assert "Some of the cache files do not exist neither locally nor on remote" in pushed.stderr
    assert "missing" in dvc(origin, "status", "--cloud").stdout


def test_status_cloud_leaves_out_a_directory_whose_manifest_is_nowhere_and_only_warns(tmp_path):
    root = tmp_path / "repo"
    (root / "folder").mkdir(parents=True)
    (root / "folder/file.txt").write_text("content\n")
    (tmp_path / "remote").mkdir()
    run(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "remote", "add", "--default", "storage", str(tmp_path / "remote"))
    dvc(root, "add", "-q", "folder")
    for path in [*(root / ".dvc/cache/files/md5").rglob("*")]:
        if path.is_file():
            path.unlink()
    status = dvc(root, "status", "--cloud", "--json")
    assert status.returncode == 0 and json.loads(status.stdout) == {}
    assert re.search(r"md5: [0-9a-f]+\.dir", status.stderr), status.stderr


def test_only_dvc_internals_imports_dvcs_python_code():
    """Everything else drives DVC through its command line, the interface DVC keeps stable."""
    tracked = run(REPO, "git", "ls-files").stdout.split()
    importing = sorted(
        name
        for name in tracked
        if (name.endswith(".py") or name.startswith((".ci/", ".github/", "scripts/")))
        and re.search(
            r"(?:^|[;'\"])\s*(?:from\s+dvc(?:\.\w+)*\s+import|import\s+dvc(?:\.|\s*$))",
            (REPO / name).read_text(errors="replace"),
            re.M,
        )
    )
    assert importing == ["tests/dvc_internals.py"]
