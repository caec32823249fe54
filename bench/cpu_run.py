"""README's CPU recipe, run from a fresh clone, into docs/cpu-run/: the figures README shows and
results.json, which README's CPU numbers quote.

    python -m bench.cpu_run --data /path/to/cifar10-jpeg.tar.xz [--out docs/cpu-run]

Clones this checkout's last commit into a temporary folder and runs there exactly README's
command, `scripts/run.sh` with the -S overrides of RECIPE and data.source set to --data. The
clone uses this checkout's .venv (same requirements.txt, so scripts/run.sh finds it set up)
instead of installing its own. It then copies the pictures README shows to --out and writes
results.json: lr_find's pick, test accuracy by epoch, seconds (in all and per stage), the
machine (CPU, cores, load average before and after), torch and Python versions, date and commit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from cifar.config import load_params
from stages import paths

REPO = Path(__file__).resolve().parents[1]
# Learns in about 10 minutes on 2 idle cores: 2,000 training images, 4 epochs peaking after the first.
RECIPE = (
    "data.train_limit=2000",
    "data.test_limit=500",
    "train.epochs=4",
    "train.batch_size=128",
    "train.onecycle.max_at_epoch=1",
    "lr_find.num_iter=30",
)
# The pictures README shows: the figures stage's, and three of explain's Grad-CAM grids.
FIGURES = (
    paths.LOSS_IMAGE,
    paths.ACCURACY_IMAGE,
    paths.LR_FINDER_IMAGE,
    paths.LR_SCHEDULE_IMAGE,
    paths.CONFUSION_IMAGE,
    paths.PER_CLASS_IMAGE,
    paths.SAMPLES_IMAGE,
    paths.MISCLASSIFIED_IMAGE,
    f"{paths.GRADCAM_IMAGES}/layer3_correct.png",
    f"{paths.GRADCAM_IMAGES}/layer3_predicted.png",
    f"{paths.GRADCAM_IMAGES}/layer2_predicted.png",
)
RESULTS = "results.json"


def recipe_command(data: str) -> list[str]:
    """README's CPU command, as a list of words."""
    return ["scripts/run.sh", "-S", f"data.source={data}", *(word for override in RECIPE for word in ("-S", override))]


def run_logging_stage_times(command: list[str], cwd: Path) -> dict[str, float]:
    """Run command, passing its output through, and return seconds per DVC stage and in all."""
    started = time.monotonic()
    stage_starts: dict[str, float] = {}
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        sys.stdout.write(line)
        if line.startswith("Running stage '"):
            stage_starts[line.split("'")[1]] = time.monotonic()
    if process.wait() != 0:
        sys.exit(f"error: {shlex.join(command)} exited {process.returncode} in the clone; its output is above")
    ended = time.monotonic()
    bounds = [*stage_starts.values(), ended]
    seconds = {stage: round(end - start, 1) for stage, start, end in zip(stage_starts, bounds, bounds[1:])}
    return seconds | {"total": round(ended - started, 1)}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git(*arguments: str) -> str:
    return subprocess.run(["git", *arguments], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", required=True, help="data.source: the JPEG mirror archive (or any local CIFAR-10 copy)"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "cpu-run", help="where the figures and results.json go"
    )
    args = parser.parse_args(argv)
    data = str(Path(args.data).expanduser().resolve())
    if not Path(data).exists():
        sys.exit(f"error: --data {args.data}: no such file or folder")
    if not (REPO / ".venv" / "bin" / "python").exists():
        sys.exit(f"error: {REPO / '.venv'} is not set up; run scripts/env.sh first")
    if git("status", "--porcelain", "--untracked-files=no"):
        print(
            "note: the checkout has uncommitted changes; the clone runs the last commit without them", file=sys.stderr
        )

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cpu-run-") as scratch:
        clone = Path(scratch) / "cifar-dvc"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        (clone / ".venv").symlink_to(REPO / ".venv")
        command = recipe_command(data)
        print(f"running in {clone}: {shlex.join(command)}", flush=True)
        seconds = run_logging_stage_times(command, clone)
        load_after = os.getloadavg()[0]

        args.out.mkdir(parents=True, exist_ok=True)
        for figure in FIGURES:
            shutil.copyfile(clone / figure, args.out / Path(figure).name)
        lr_find = json.loads((clone / paths.LR_FIND_METRICS).read_text())
        history = pd.read_csv(clone / paths.HISTORY)
        environment = json.loads((clone / paths.TRAIN_ENVIRONMENT).read_text())
        results = {
            "date": datetime.date.today().isoformat(),
            "commit": git("rev-parse", "HEAD"),
            "command": shlex.join(recipe_command("/path/to/cifar10-jpeg.tar.xz")),
            "machine": {
                "cpu": cpu_name(),
                "cores": os.cpu_count(),
                "device": environment["device"],
                "load_average_before": round(load_before, 2),
                "load_average_after": round(load_after, 2),
            },
            "torch": environment["torch"],
            "python": environment["python"],
            "seconds": seconds,
            "lr_find": {"pick": load_params(clone / paths.PARAMS).lr_find.pick, "max_lr": lr_find["max_lr"]},
            "test_accuracy_by_epoch": [round(value, 4) for value in history["test_accuracy"]],
            "seconds_by_epoch": [round(value, 1) for value in history["seconds"]],
            "evaluate": json.loads((clone / paths.EVALUATE_METRICS).read_text()),
        }
    (args.out / RESULTS).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
