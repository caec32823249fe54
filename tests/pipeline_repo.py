"""A throw-away git + DVC repository holding a copy of this pipeline, for end-to-end tests."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from cifar.config import Params
from cifar.dataset import file_digest

REPO = Path(__file__).resolve().parents[1]
# What a clone holds of the pipeline, with the real ignore files; params.yaml is written
# from the code's defaults, so a user's edits to the checkout's params never leak in.
PIPELINE_FILES = (
    "cifar",
    "stages",
    "dvc.yaml",
    "requirements.txt",
    "requirements-stages.txt",
    ".dvcignore",
    ".gitignore",
)

# Small enough for two CPU cores (256 synthetic images, three epochs of 4 steps) and still
# a model that learns (about 0.9 test accuracy): the LR range stops at 0.003, as BatchNorm's
# running statistics cannot settle in a dozen steps at a higher LR.
SMALL_SYNTHETIC = {
    "data": {"source": "synthetic", "train_limit": 256, "test_limit": 160},
    "lr_find": {"num_iter": 12, "end_lr": 0.003, "pick": "min_loss"},
    "train": {"epochs": 3, "batch_size": 64, "onecycle": {"max_at_epoch": 1}},
}


def default_params() -> dict:
    return dataclasses.asdict(Params())


def merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) else value
    return merged


def environment(root: Path) -> dict[str, str]:
    """A user's shell inside .venv: this interpreter first on PATH, bytecode writing on and
    no PYTHONPATH, so each stage finds `cifar` only as a user's would (beside it)."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    return env


def run(root: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=root, env=environment(root), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def dvc(root: Path, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(root, sys.executable, "-m", "dvc", *arguments, check=check)


def stage(root: Path, name: str, check: bool = True) -> subprocess.CompletedProcess:
    """One stage on its own, as dvc.yaml runs it."""
    return run(root, "python", "-m", f"stages.{name}", check=check)


# Runs its arguments as a child and writes the child's peak resident memory (kilobytes) to
# the file named first. A process started straight from pytest would not do: Python starts
# children with vfork, and Linux counts the parent's memory at the exec into the child's peak.
_PEAK_MEMORY_LAUNCHER = """
import os, sys
child = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(child, 0)
with open(sys.argv[1], "w") as report:
    report.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def stage_with_peak_memory(
    root: Path, name: str, hang_guard_seconds: int = 300
) -> tuple[subprocess.CompletedProcess, int]:
    """One stage on its own, as `stage` runs it, and the peak resident memory of its process
    in bytes. A stage still running after hang_guard_seconds is killed (exit 137), so that a
    hang fails the test instead of stalling the suite."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "peak"
        command = [sys.executable, "-c", _PEAK_MEMORY_LAUNCHER, str(report), "python", "-m", f"stages.{name}"]
        process = subprocess.Popen(
            command,
            cwd=root,
            env=environment(root),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=hang_guard_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        peak = int(report.read_text()) * 1024 if report.exists() else 0  # Linux reports kilobytes
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), peak


def copy_from_checkout(root: Path, names: tuple[str, ...]) -> Path:
    """The checkout's files and folders of these names into root, without bytecode."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    return root


def copy_pipeline(root: Path) -> None:
    """The pipeline's code and ignore files into root, as a clone holds them."""
    copy_from_checkout(root, PIPELINE_FILES)


def make_pipeline_repo(root: Path, params_changes: dict) -> Path:
    copy_pipeline(root)
    (root / "params.yaml").write_text(yaml.safe_dump(merge(default_params(), params_changes), sort_keys=False))
    run(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "pipeline under test")
    return root


def copy_of(repro: tuple, destination: Path) -> Path:
    """A copy of the `repro` fixture's run (root, log) to change and run again."""
    source, _ = repro
    shutil.copytree(source, destination, symlinks=True, ignore=shutil.ignore_patterns("dvc_plots", "chromium-profile"))
    return destination


def push_results(root: Path) -> None:
    """scripts/push_results.py in root: every output and the run cache, checked on the remote."""
    run(root, sys.executable, str(REPO / "scripts/push_results.py"))


def fresh_clone(published: tuple[Path, Path], destination: Path) -> Path:
    root, _ = published
    run(root, "git", "clone", "-q", str(root), str(destination))
    assert not (destination / ".dvc/cache").exists()
    return destination


def object_path(cache: Path, root: Path, output: str) -> Path:
    """Where a DVC cache or remote keeps the file of one output, by its md5 in root's dvc.lock."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    (md5,) = {out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", []) if out["path"] == output}
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def workspace_digests(root: Path) -> dict[str, str]:
    """Every file outside .git and .dvc, by content."""
    return {
        str(path.relative_to(root)): file_digest(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).parts[0] not in (".git", ".dvc")
    }
