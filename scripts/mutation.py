#!/usr/bin/env python3
"""Mutation testing of the modules that decide a run's results, scored per module.

    scripts/mutation.sh [MODULE ...]        e.g. scripts/mutation.sh cifar/training/schedule.py

Runs mutmut over the modules named (by default every module of pyproject.toml's
[tool.mutmut] only_mutate) and prints, per module, the mutants killed, timed out, survived
and not reached by any selected test, the score (killed + timed out) / mutants, and the
survivors' names (`.venv/bin/mutmut show NAME` prints one's diff). Every mutant named is run
again, so the table is always of the code and tests as they are now. mutmut works in its own
copy, mutants/ (git-ignored); its output goes to mutants/mutation.log.
Exit codes: 0 ran (whatever the scores), 1 mutmut failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mutmut.mutation.data import SourceFileMutationData
from mutmut.stats import status_by_exit_code
from mutmut.utils.format_utils import orig_function_and_class_names_from_key

LOG = Path("mutants/mutation.log")


@dataclass(frozen=True)
class Target:
    """A mutated module, scored on all its mutants or on those of the named functions only."""

    path: str
    functions: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return self.path.removesuffix(".py").replace("/", ".")

    def mutant_globs(self) -> list[str]:
        if not self.functions:
            return [f"{self.module}.*"]
        return [f"{self.module}.x_{function}__mutmut_*" for function in self.functions]

    def scored(self, mutant_name: str) -> bool:
        function, class_name = orig_function_and_class_names_from_key(mutant_name)
        return not self.functions or (class_name is None and function in self.functions)

    def label(self) -> str:
        return self.path + "".join(f"::{function}" for function in self.functions)


def configured_targets() -> list[Target]:
    tool = tomllib.loads(Path("pyproject.toml").read_text())["tool"]
    functions = tool.get("mutation", {}).get("functions", {})
    return [Target(path, tuple(functions.get(path, ()))) for path in tool["mutmut"]["only_mutate"]]


def chosen_targets(parser: argparse.ArgumentParser) -> list[Target]:
    names, targets = parser.parse_args().modules, configured_targets()
    if not names:
        return targets
    by_path = {target.path: target for target in targets}
    unknown = [name for name in names if name not in by_path]
    if unknown:
        parser.error(
            f"{', '.join(unknown)} is not mutated; name one of {', '.join(by_path)} "
            f"or add it to [tool.mutmut] only_mutate in pyproject.toml"
        )
    return [by_path[name] for name in dict.fromkeys(names)]


def statuses(target: Target) -> dict[str, str]:
    """Each scored mutant's status as mutmut recorded it (killed, survived, timeout, ...)."""
    data = SourceFileMutationData(path=target.path)
    data.load()
    return {
        name: status_by_exit_code[exit_code] for name, exit_code in data.exit_code_by_key.items() if target.scored(name)
    }


def report(targets: list[Target], seconds: float) -> None:
    header = (
        f"{'module':<34} {'mutants':>7} {'killed':>6} {'timeout':>7} "
        f"{'survived':>8} {'no test':>7} {'other':>5} {'score':>6}"
    )
    print(header)
    print("-" * len(header))
    survivors = []
    for target in targets:
        by_mutant = statuses(target)
        counts = Counter(by_mutant.values())
        total = len(by_mutant)
        detected = counts["killed"] + counts["timeout"]
        other = total - detected - counts["survived"] - counts["no tests"]
        score = f"{detected / total:.1%}" if total else "-"
        print(
            f"{target.label():<34} {total:>7} {counts['killed']:>6} {counts['timeout']:>7} "
            f"{counts['survived']:>8} {counts['no tests']:>7} {other:>5} {score:>6}"
        )
        survivors += [
            (name, status) for name, status in sorted(by_mutant.items()) if status not in ("killed", "timeout")
        ]
    print("score = (killed + timeout) / mutants; other = suspicious, segfault or not checked")
    print(f"mutmut ran for {seconds / 60:.1f} min; its output is in {LOG}")
    print(f"\n{len(survivors)} mutants not killed (`.venv/bin/mutmut show NAME` prints one's diff):")
    for name, status in survivors:
        print(f"  {status:<10} {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "modules", nargs="*", metavar="MODULE", help="a path of [tool.mutmut] only_mutate (default: all)"
    )
    targets = chosen_targets(parser)
    LOG.parent.mkdir(exist_ok=True)
    # mutmut copies .dvc/config there (pyproject.toml's also_copy) but makes no folder for it
    (LOG.parent / ".dvc").mkdir(exist_ok=True)
    started = time.monotonic()
    with LOG.open("w") as log:
        mutmut = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", *(glob for target in targets for glob in target.mutant_globs())],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if mutmut.returncode != 0:
        print(LOG.read_text(errors="replace")[-4000:], file=sys.stderr)
        print(f"error: mutmut failed (exit {mutmut.returncode}); its output is above and in {LOG}", file=sys.stderr)
        return 1
    report(targets, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
