#!/usr/bin/env python3
"""Gather a sweep's experiments into one Markdown report: the last job of .github/workflows/sweep.yml.

    python scripts/sweep_collect.py [--git-remote origin] [--plots-out DIR] NAME ...

In a clone of the sweep's commit: fetches each experiment's git ref with `dvc exp pull`
(metrics and plots live in git, so no DVC remote is needed), then prints a table from
`dvc exp show` of the baseline and each experiment (the params that differ, the headline
metrics) and `dvc metrics diff --md` of each experiment against the baseline. With
--plots-out, writes `dvc plots diff` of the baseline and every experiment there (open
index.html). Exit codes: 0 all gathered, 1 an experiment is not on the git remote or the
plots diff failed (the report still lists everything found).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dvc_cli import dvc, last_error, named_experiments

HEADLINE_METRICS = (
    ("metrics/evaluate.json", "accuracy"),
    ("metrics/train.json", "test_accuracy"),
    ("metrics/speed.json", "seconds_per_epoch"),
)


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def shown(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def params_of(data: dict) -> dict:
    """One run's params.yaml as dotted keys, from `dvc exp show --json`."""
    return flatten(data["params"]["params.yaml"]["data"])


def row(label: str, data: dict, param_keys: list[str]) -> str:
    params = params_of(data)
    metrics = data.get("metrics") or {}
    cells = [label] + [shown(params.get(key, "-")) for key in param_keys]
    cells += [shown((metrics.get(path) or {}).get("data", {}).get(key, "-")) for path, key in HEADLINE_METRICS]
    return "| " + " | ".join(cells) + " |"


def report(names: list[str], plots_out: Path | None) -> tuple[list[str], list[str], list[str]]:
    """(Markdown lines, the names found, problems) for the experiments already pulled."""
    commits = json.loads(dvc("exp", "show", "--json").stdout or "[]")
    baseline = next(commit for commit in commits if commit["rev"] != "workspace")
    base = baseline["rev"][:7]
    label = f"baseline {baseline.get('name') or base}"
    found = named_experiments(baseline, set(names))
    ordered = [name for name in names if name in found]
    base_params = params_of(baseline["data"])
    param_keys = list(
        dict.fromkeys(
            key for name in ordered for key, value in params_of(found[name]).items() if base_params.get(key) != value
        )
    )
    lines = [f"## Sweep: {len(ordered)} experiments on {label}", ""]
    lines.append("| experiment | " + " | ".join(param_keys + [key for _, key in HEADLINE_METRICS]) + " |")
    lines.append("|" + "---|" * (1 + len(param_keys) + len(HEADLINE_METRICS)))
    lines.append(row(label, baseline["data"], param_keys))
    lines += [row(name, found[name], param_keys) for name in ordered]
    problems = []
    for name in ordered:
        table = dvc("metrics", "diff", base, name, "--md").stdout.strip()
        # A header and its rule alone: no metric moved.
        lines += [
            "",
            f"### metrics diff: {name} against the baseline",
            "",
            table if len(table.splitlines()) > 2 else "no metric changed",
        ]
    if plots_out and ordered:
        plots = dvc("plots", "diff", base, *ordered, "--out", str(plots_out))
        if plots.returncode != 0:
            problems.append(f"`dvc plots diff` failed: {last_error(plots)}")
    return lines, ordered, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--git-remote", default="origin", help="git remote the experiments were pushed to (default: origin)"
    )
    parser.add_argument("--plots-out", type=Path, help="write the plots diff of the baseline and every experiment here")
    parser.add_argument("names", nargs="+", metavar="NAME", help="the sweep's experiment names")
    args = parser.parse_args()
    pull_errors = {}
    for name in args.names:
        pulled = dvc("exp", "pull", "--no-cache", args.git_remote, name)
        if pulled.returncode != 0:
            pull_errors[name] = last_error(pulled)
    lines, found, problems = report(args.names, args.plots_out)
    missing = [
        f"{name} ({pull_errors.get(name, 'not an experiment of this commit')})"
        for name in args.names
        if name not in found
    ]
    if missing:
        lines += ["", f"**Not on git remote {args.git_remote!r}** (their jobs failed?): {'; '.join(missing)}"]
        problems.insert(0, f"experiments not on git remote {args.git_remote!r}: {', '.join(missing)}")
    print("\n".join(lines))
    if problems:
        print(f"error: {'; '.join(problems)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
