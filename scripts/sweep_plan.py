#!/usr/bin/env python3
"""Turn a sweep's input into the job matrix of .github/workflows/sweep.yml.

    python3 scripts/sweep_plan.py --prefix NAME --sets "a=1 b=2; a=3" [--seeds N]

A set is a space-separated list of KEY=VALUE overrides (as for `dvc exp run -S`); sets are
separated by ';'. With --seeds N, every set runs under seeds 0 .. N-1. Prints two lines
for $GITHUB_OUTPUT: `matrix=` a JSON matrix whose entries hold an experiment name
(PREFIX-1, PREFIX-2, ...) and its overrides, and `names=` the names, space-separated; lists
the experiments on stderr. Standard library only. Exit codes: 0 planned, 2 a bad input.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

# A key of params.yaml, dotted; the value may be anything DVC's -S accepts.
OVERRIDE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=\S*")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# GitHub's limit on the jobs of one matrix.
MAX_EXPERIMENTS = 256


class BadInput(Exception):
    pass


def override_sets(sets: str, seeds: int) -> list[list[str]]:
    parsed = [entry.split() for entry in sets.split(";") if entry.strip()]
    for number, overrides in enumerate(parsed, 1):
        for override in overrides:
            if not OVERRIDE.fullmatch(override):
                raise BadInput(f"set {number}: {override!r} is not KEY=VALUE (sets are separated by ';', overrides by spaces)")
        keys = [override.split("=", 1)[0] for override in overrides]
        if len(set(keys)) != len(keys):
            raise BadInput(f"set {number} sets a key twice: {' '.join(overrides)}")
        if seeds and "seed" in keys:
            raise BadInput(f"set {number} sets seed, and --seeds sets it too")
    if not seeds:
        if not parsed:
            raise BadInput("nothing to sweep: give --sets, --seeds or both")
        return parsed
    return [overrides + [f"seed={seed}"] for overrides in parsed or [[]] for seed in range(seeds)]


def plan(prefix: str, sets: str, seeds: int) -> list[dict[str, str]]:
    if not NAME.fullmatch(prefix):
        raise BadInput(f"--prefix {prefix!r} is not a valid experiment name (letters, digits, '-', '_')")
    experiments = [
        {"name": f"{prefix}-{number}", "overrides": " ".join(overrides)}
        for number, overrides in enumerate(override_sets(sets, seeds), 1)
    ]
    if len(experiments) > MAX_EXPERIMENTS:
        raise BadInput(f"{len(experiments)} experiments: a GitHub job matrix holds at most {MAX_EXPERIMENTS}")
    return experiments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", required=True, help="experiment names are PREFIX-1, PREFIX-2, ...")
    parser.add_argument("--sets", default="", help="override sets separated by ';', each KEY=VALUE separated by spaces")
    parser.add_argument("--seeds", default="0", help="run every set under seeds 0 .. N-1 (default 0: params.yaml's seed)")
    args = parser.parse_args()
    try:
        seeds = args.seeds.strip() or "0"
        if not seeds.isdigit():
            raise BadInput(f"--seeds must be a whole number, not {args.seeds!r}")
        experiments = plan(args.prefix, args.sets, int(seeds))
    except BadInput as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    for experiment in experiments:
        print(f"{experiment['name']}: {experiment['overrides']}", file=sys.stderr)
    print(f"matrix={json.dumps({'include': experiments})}")
    print(f"names={' '.join(experiment['name'] for experiment in experiments)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
