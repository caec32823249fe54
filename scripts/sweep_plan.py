#!/usr/bin/env python3
"""Turn a sweep, in DVC's own grid syntax, into the job matrix of .github/workflows/sweep.yml.

    python scripts/sweep_plan.py --name NAME -- OVERRIDE ...

Each OVERRIDE is what `dvc exp run -S` takes, grids included: `model.name=custom_resnet,resnet18`,
`seed=range(0,3)`, `train.max_lr=choice(0.01,0.02)`. DVC itself expands them: the script
queues the sweep with `dvc exp run --queue --name NAME -S ...` in this clone, reads the
queued experiments back from `dvc exp show --json` (DVC names them NAME-1, NAME-2, ...,
or NAME for one), and empties the queue again. Each matrix entry holds an experiment's name
and the params it changes, as plain `-S KEY=VALUE` overrides for one GPU runner each.
Prints two lines for $GITHUB_OUTPUT: `matrix=` the JSON matrix and `names=` the names,
space-separated; lists the experiments on stderr. Exit codes: 0 planned, 2 a bad input
(DVC's own message, in one line).
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from dvc_cli import dvc, last_error, named_experiments
from sweep_collect import flatten

# GitHub's limit on the jobs of one matrix.
MAX_EXPERIMENTS = 256
# A value DVC's -S parser reads back as this same string without quotes.
PLAIN_STRING = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


class BadInput(Exception):
    pass


def override_value(value) -> str:
    """A params.yaml value as DVC's -S writes it back unchanged."""
    if isinstance(value, str) and PLAIN_STRING.fullmatch(value) and value.lower() not in ("true", "false", "null"):
        return value
    return json.dumps(value)


def changed_params(params: dict, baseline: dict) -> list[str]:
    return [f"{key}={override_value(value)}" for key, value in params.items() if baseline.get(key) != value]


def plan(name: str, overrides: list[str]) -> list[dict[str, str]]:
    if not overrides:
        raise BadInput("nothing to sweep: give dvc exp run -S overrides, e.g. 'seed=range(0,3)'")
    queued = dvc(
        "exp", "run", "--queue", "--name", name, *[argument for override in overrides for argument in ("-S", override)]
    )
    if queued.returncode != 0:
        raise BadInput(f"DVC refused the sweep: {last_error(queued)}")
    try:
        shown = dvc("exp", "show", "--json")
        if shown.returncode != 0:
            raise BadInput(f"`dvc exp show` failed: {last_error(shown)}")
        baseline = next(commit for commit in json.loads(shown.stdout) if commit["rev"] != "workspace")
        names = [line.split("'")[1] for line in queued.stdout.splitlines() if line.startswith("Queued experiment '")]
        found = named_experiments(baseline, set(names))
    finally:
        dvc("queue", "remove", "--queued")
    base_params = flatten(baseline["data"]["params"]["params.yaml"]["data"])
    experiments = [
        {
            "name": experiment,
            "overrides": " ".join(
                changed_params(flatten(found[experiment]["params"]["params.yaml"]["data"]), base_params)
            ),
        }
        for experiment in names
    ]
    if len(experiments) > MAX_EXPERIMENTS:
        raise BadInput(f"{len(experiments)} experiments: a GitHub job matrix holds at most {MAX_EXPERIMENTS}")
    return experiments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--name", required=True, help="the sweep's name; DVC numbers its experiments NAME-1, NAME-2, ..."
    )
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="dvc exp run -S values, grid syntax included")
    args = parser.parse_args()
    try:
        experiments = plan(args.name, args.overrides)
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
