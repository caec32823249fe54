"""DVC's command line as the scripts here call it: captured, with its error in one line."""

from __future__ import annotations

import subprocess
import sys


def dvc(*arguments: str) -> subprocess.CompletedProcess:
    """`dvc ARGUMENTS` with this interpreter's DVC, output captured; the caller checks the code."""
    return subprocess.run([sys.executable, "-m", "dvc", *arguments], capture_output=True, text=True)


def last_error(result: subprocess.CompletedProcess) -> str:
    """DVC's last ERROR line, else its last line: what went wrong, for a one-line message."""
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1]


def named_experiments(commit: dict, names: set[str]) -> dict[str, dict]:
    """name -> data (params, metrics) of the named experiments of one commit of `dvc exp show --json`."""
    return {
        revision["name"]: revision["data"]
        for experiment in commit.get("experiments") or []
        for revision in experiment["revs"][:1]
        if revision.get("name") in names and revision.get("data")
    }
