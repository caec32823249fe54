"""The measurements this project owes a GPU, in one command, as one Markdown report.

    python -m bench.gpu_report --data /path/to/cifar10-jpeg.tar.xz --out report/ [--small]

Runs the stage scripts in dvc.yaml's order (DVC itself is not needed, so a bare GPU
machine with torch will do), each run in its own scratch copy of the code with its own
params.yaml, on data imported once:

  default-seed-0..2      the default recipe under three seeds: accuracy mean and spread
  pick-min_loss          the default recipe with the reference runs' LR pick, and
  pick-valley            with the valley pick: which rule the default should be
  nondeterministic       the default recipe with train.deterministic false: the cost of
                         determinism per epoch, and (against default-seed-0 and its rerun)
  default-seed-0-again   whether the same params give a byte-identical model.pt twice
  resnet18-gn-find       the GroupNorm reference (8x8 layer4, SGD, batch 128, 20 epochs)
                         with the LR finder choosing max_lr
  resnet18-gn-max_lr-*   the same at a fixed max_lr: the finder's loss minimum, and ten times it
then the benchmark (bench/benchmark.py) on the same data. It writes report.md (tables),
runs.json (every run's metrics) and each run's log to --out.

--small shrinks everything (1,000 training images, 2 epochs) to rehearse on a CPU.
--jobs N runs N runs at once on the one GPU: their accuracy is what a solo run gives, their
s/epoch is not (the report says so); keep the timed runs at --jobs 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml

from cifar.config import Params
from stages import paths

REPO = Path(__file__).resolve().parents[1]
CODE = ("cifar", "stages", "dvc.yaml")
RESNET18_GN = {
    "model.name": "resnet18",
    "model.norm": "group",
    "model.layer4_stride": 1,
    "train.optimizer": "sgd",
    "train.momentum": 0.9,
    "train.batch_size": 128,
    "train.epochs": 20,
    "train.onecycle.max_at_epoch": 6,
    "train.onecycle.div_factor": 25,
    "train.onecycle.final_div_factor": 10000,
    "train.onecycle.anneal_strategy": "cos",
    "train.max_lr": "find",
}
SMALL = {
    "data.train_limit": 1000,
    "data.test_limit": 500,
    "train.epochs": 2,
    "train.batch_size": 128,
    "train.onecycle.max_at_epoch": 1,
    "lr_find.num_iter": 20,
}


def runs(small: bool) -> dict[str, dict]:
    default = {"evaluate.tta": True}
    gn = dict(RESNET18_GN) | ({"train.epochs": 2, "train.onecycle.max_at_epoch": 1} if small else {})
    return {
        "default-seed-0": default | {"seed": 0},
        "default-seed-0-again": default | {"seed": 0},
        "default-seed-1": default | {"seed": 1},
        "default-seed-2": default | {"seed": 2},
        "pick-min_loss": default | {"lr_find.pick": "min_loss"},
        "pick-valley": default | {"lr_find.pick": "valley"},
        "nondeterministic": default | {"train.deterministic": False},
        "resnet18-gn-find": gn,
        # The finder's pick trained SGD on GroupNorm to 0.66 on an H200; fixed rates show what it needs.
        "resnet18-gn-max_lr-0.00305": gn | {"train.max_lr": 0.00305},
        "resnet18-gn-max_lr-0.03": gn | {"train.max_lr": 0.03},
    }


def params_with(changes: dict) -> dict:
    raw = dataclasses.asdict(Params())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        section = raw
        for name in parents:
            section = section[name]
        section[leaf] = value
    return raw


def stage_order() -> list[str]:
    return list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])


def workspace(root: Path, changes: dict) -> Path:
    root.mkdir(parents=True)
    for name in CODE:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    (root / paths.PARAMS).write_text(yaml.safe_dump(params_with(changes), sort_keys=False))
    return root


def without_repo(search_path: str) -> str:
    """PYTHONPATH minus this checkout, so that a run's stages import its scratch copy of the code
    while packages brought along on PYTHONPATH (wheels on a bare GPU machine) stay importable."""
    return os.pathsep.join(entry for entry in search_path.split(os.pathsep) if entry and Path(entry).resolve() != REPO)


def run_stages(root: Path, stages: list[str], log: Path) -> dict[str, float]:
    """Each stage as dvc.yaml runs it; wall seconds per stage. Fails loudly with the log's tail."""
    seconds = {}
    with log.open("a") as stream:
        for name in stages:
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", f"stages.{name}"],
                cwd=root,
                stdout=stream,
                stderr=subprocess.STDOUT,
                env=os.environ | {"PYTHONPATH": without_repo(os.environ.get("PYTHONPATH", ""))},
            )
            seconds[name] = round(time.perf_counter() - started, 1)
            if done.returncode != 0:
                stream.write(f"\nstage {name} exited {done.returncode}\n")
                return seconds | {"failed": name}
    return seconds


def metrics_of(root: Path) -> dict:
    found = {}
    for path in (paths.LR_FIND_METRICS, paths.TRAIN_METRICS, paths.SPEED_METRICS, paths.EVALUATE_METRICS):
        if (root / path).is_file():
            found[Path(path).stem] = json.loads((root / path).read_text())
    if (root / paths.MODEL).is_file():
        found["model_sha256"] = hashlib.sha256((root / paths.MODEL).read_bytes()).hexdigest()
    return found


def report(results: dict[str, dict], benchmark: str | None, environment: dict) -> str:
    lines = [
        f"# GPU report, {time.strftime('%Y-%m-%d')}",
        "",
        f"{environment['device']}, torch {environment['torch']}, CUDA {environment['cuda']}, "
        f"Python {environment['python']}; data: {environment['data']}{' (--small)' if environment['small'] else ''}",
        "",
        *(
            [f"{environment['jobs']} runs at a time shared the GPU: s/epoch below is not a solo timing.", ""]
            if environment["jobs"] > 1
            else []
        ),
        "| run | max_lr | test acc | flip-TTA acc | s/epoch | first epoch s | stage seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, result in results.items():
        m = result["metrics"]
        evaluate, speed, train = m.get("evaluate", {}), m.get("speed", {}), m.get("train", {})
        stages = ", ".join(f"{stage} {seconds}" for stage, seconds in result["seconds"].items())
        lines.append(
            f"| {name} | {train.get('max_lr', float('nan')):.3g} | {evaluate.get('accuracy', float('nan')):.4f} | "
            f"{evaluate.get('flip_tta_accuracy', float('nan')):.4f} | "
            f"{speed.get('seconds_per_epoch', float('nan')):.3f} | "
            f"{speed.get('first_epoch_seconds', float('nan')):.2f} | {stages} |"
        )

    def metric(run: str, file: str, key: str):
        return results.get(run, {}).get("metrics", {}).get(file, {}).get(key)

    seeds = [
        accuracy
        for seed in range(3)
        if (accuracy := metric(f"default-seed-{seed}", "evaluate", "accuracy")) is not None
    ]
    if len(seeds) >= 2:
        lines += [
            "",
            f"Default recipe over seeds 0-2: test accuracy {statistics.mean(seeds):.4f} ± "
            f"{statistics.stdev(seeds):.4f}.",
        ]
    first, again = (
        results.get(name, {}).get("metrics", {}).get("model_sha256")
        for name in ("default-seed-0", "default-seed-0-again")
    )
    if first and again:
        lines += ["", f"Determinism: model.pt of two seed-0 runs {'identical' if first == again else 'DIFFERENT'}."]
    deterministic = metric("default-seed-0", "speed", "seconds_per_epoch")
    free = metric("nondeterministic", "speed", "seconds_per_epoch")
    if deterministic and free:
        lines.append(
            f"Cost of train.deterministic: {deterministic:.3f} vs {free:.3f} s/epoch ({deterministic / free - 1:+.1%})."
        )
    if benchmark is not None:
        lines += ["", "## Benchmark", "", "```", benchmark.strip(), "```"]
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", required=True, help="data.source for every run: the mirror archive, a folder or 'official'"
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for report.md, runs.json and the logs")
    parser.add_argument("--small", action="store_true", help="a CPU rehearsal: 1,000 images, 2 epochs")
    parser.add_argument(
        "--only", nargs="*", choices=list(runs(small=False)), help="run only these runs (names as in the report)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at once on the GPU (timings are solo only at 1)")
    parser.add_argument("--skip-benchmark", action="store_true", help="leave out bench/benchmark.py")
    args = parser.parse_args()
    if Path(args.data).exists():  # each run's stages start in their own scratch folder
        args.data = str(Path(args.data).resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    order = stage_order()
    shrink = SMALL if args.small else {}
    environment = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (no CUDA)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "data": args.data,
        "small": args.small,
        "jobs": args.jobs,
    }
    results: dict[str, dict] = {}
    written = threading.Lock()

    def write(benchmark: str | None = None) -> None:
        """After every run, so that a machine taken back mid-way leaves what was measured."""
        with written:
            (args.out / "runs.json").write_text(
                json.dumps({"environment": environment, "runs": results}, indent=2) + "\n"
            )
            (args.out / "report.md").write_text(report(results, benchmark, environment))

    with tempfile.TemporaryDirectory(prefix="gpu-report-") as scratch:
        base = workspace(Path(scratch) / "data-import", {"data.source": args.data} | shrink)
        seconds = run_stages(base, order[:1], args.out / "download.log")
        if "failed" in seconds:
            print(f"error: the download stage failed; see {args.out / 'download.log'}", file=sys.stderr)
            return 1

        def one_run(name: str, changes: dict) -> None:
            root = workspace(Path(scratch) / name, {"data.source": args.data} | shrink | changes)
            shutil.copytree(base / paths.DATA, root / paths.DATA)
            result = {"changes": changes, "seconds": run_stages(root, order[1:], args.out / f"{name}.log")}
            result["metrics"] = metrics_of(root)
            print(f"{name}: {result['seconds']} {result['metrics'].get('evaluate', {})}", flush=True)
            results[name] = result
            write()

        chosen = {name: changes for name, changes in runs(args.small).items() if not args.only or name in args.only}
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for future in [pool.submit(one_run, name, changes) for name, changes in chosen.items()]:
                future.result()
        results = {name: results[name] for name in chosen}  # the report's rows in runs()'s order
        benchmark = None
        if not args.skip_benchmark:  # into its log as it prints, so that a cut-short lease keeps its rows
            with (args.out / "benchmark.log").open("w") as log:
                subprocess.run(
                    [sys.executable, "-m", "bench.benchmark", "--data", str(base / paths.DATA)]
                    + (["--epochs", "1", "--batch-size", "128"] if args.small else []),
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=os.environ | {"PYTHONUNBUFFERED": "1"},
                )
            benchmark = (args.out / "benchmark.log").read_text()
    write(benchmark)
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
