#!/usr/bin/env python3
"""Run-to-run spread: the current params under N seeds, as queued DVC experiments.

    python scripts/seed_spread.py --seeds 3 [--jobs 1] [-S key=value ...]

Queues one experiment per seed (0 .. N-1, with any further -S overrides), runs the queue,
then prints mean ± sample standard deviation of the test accuracy and writes one row per
seed to plots/seed_spread.csv (`dvc plots show plots/seed_spread.csv -x seed -y accuracy`).
The experiments stay in `dvc exp show`. Exit codes: 0 done, 1 an experiment failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

from dvc_cli import dvc as run_dvc
from dvc_cli import named_experiments

OUTPUT = Path("plots/seed_spread.csv")


def dvc(*arguments: str) -> str:
    result = run_dvc(*arguments)
    if result.returncode != 0:
        sys.exit(f"error: `dvc {' '.join(arguments)}` failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def experiment_results(names: set[str]) -> dict[str, dict]:
    """name -> {"params": ..., "metrics": ...} for the named experiments of the workspace's commit."""
    found = {}
    for commit in json.loads(dvc("exp", "show", "--json")):
        found |= named_experiments(commit, names)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, required=True, help="how many seeds: 0 .. N-1")
    parser.add_argument("--jobs", type=int, default=1, help="experiments at a time (one per GPU)")
    parser.add_argument("-S", "--set-param", action="append", default=[], help="a further override, as for dvc exp run")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 for a spread")

    run_id = time.strftime("%Y%m%d-%H%M%S")
    names = {f"seeds-{run_id}-{seed}": seed for seed in range(args.seeds)}
    overrides = [argument for value in args.set_param for argument in ("-S", value)]
    for name, seed in names.items():
        dvc("exp", "run", "--queue", "--name", name, "-S", f"seed={seed}", *overrides)
    # DVC's queue workers run them; --run-all returns when they are done. A failed one is
    # reported below, from the results.
    run_dvc("exp", "run", "--run-all", "--jobs", str(args.jobs))

    results = experiment_results(set(names))
    failed = sorted(set(names) - {name for name, data in results.items() if "metrics/evaluate.json" in data["metrics"]})
    if failed:
        print(f"error: experiments failed: {', '.join(failed)}; see `dvc queue logs NAME`", file=sys.stderr)
        return 1
    rows = []
    for name, seed in names.items():
        metrics = results[name]["metrics"]
        rows.append(
            {
                "seed": seed,
                "experiment": name,
                "accuracy": metrics["metrics/evaluate.json"]["data"]["accuracy"],
                "train_test_accuracy": metrics["metrics/train.json"]["data"]["test_accuracy"],
            }
        )
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    scratch = OUTPUT.with_name(f".{OUTPUT.name}.tmp")
    with scratch.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    scratch.replace(OUTPUT)
    accuracies = [row["accuracy"] for row in rows]
    print(
        f"test accuracy over {len(rows)} seeds: {statistics.mean(accuracies):.4f} ± {statistics.stdev(accuracies):.4f} "
        f"(min {min(accuracies):.4f}, max {max(accuracies):.4f}); per seed in {OUTPUT}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
