#!/usr/bin/env python3
"""Reproduce this revision's results from a DVC remote, without training.

    python scripts/reproduce_from_cache.py --remote NAME_OR_URL [--base REV]

Pulls the outputs and the run cache from the remote, then checks with `dvc status` that
every stage is up to date, failing before anything runs (and naming each stage that would
run, and why) if one is not; runs `dvc repro`, which must run no stage and leave dvc.lock
unchanged; then prints `dvc metrics diff --md` and `dvc params diff --md` against the base
revision. Exit codes: 0 reproduced, 1 a stage would have to run or dvc.lock changed, 2 the
remote is missing, unreachable or incomplete.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from dvc_cli import dvc as run_dvc
from dvc_cli import last_error

# The name under which a remote given as a URL or path is added, to .dvc/config.local only.
URL_REMOTE_NAME = "reproduce-from-cache"


class Failure(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def dvc(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    result = run_dvc(*arguments)
    if check and result.returncode != 0:
        raise Failure(f"`dvc {' '.join(arguments)}` failed: {last_error(result)}", 2)
    return result


def configured_remotes() -> dict[str, str]:
    listed = dvc("remote", "list").stdout
    # Lines read "name  url" and, for the default remote, "  (default)" after the url.
    return dict(line.split()[:2] for line in listed.splitlines() if line.strip())


def use_remote(remote: str) -> tuple[str, str]:
    """(name, url) of the remote, adding a URL or path as a local-only remote."""
    remotes = configured_remotes()
    if remote in remotes:
        return remote, remotes[remote]
    if not re.match(r"^[a-z][a-z0-9+]*://", remote) and not remote.startswith(("/", ".", "~")):
        known = ", ".join(remotes) or "none"
        raise Failure(f"DVC remote {remote!r} is not configured (configured: {known}); give its name or its URL", 2)
    url = str(Path(remote).expanduser().resolve()) if "://" not in remote else remote
    dvc("remote", "add", "--local", "--force", URL_REMOTE_NAME, url)
    return URL_REMOTE_NAME, url


def check_remote(name: str, url: str) -> None:
    """Fail before touching the workspace if the remote cannot serve this revision."""
    path = url[len("file://"):] if url.startswith("file://") else url
    if not urlparse(url).scheme or url.startswith("file://"):
        if not Path(path).is_dir():
            raise Failure(f"DVC remote {name!r} ({url}) is missing: no such directory", 2)
    status = dvc("status", "--cloud", "--remote", name, "--json", check=False)
    if status.returncode != 0:
        raise Failure(f"DVC remote {name!r} ({url}) is unreachable: {last_error(status)}", 2)
    missing = sorted(path for path, state in json.loads(status.stdout or "{}").items() if state in ("new", "missing"))
    if missing:
        raise Failure(
            f"DVC remote {name!r} ({url}) lacks this revision's outputs ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); push them with `dvc push --run-cache -r {name}`",
            2,
        )


def stages_that_would_run() -> list[str]:
    """`dvc status` in words: each stage that is not up to date, with what changed."""
    status = dvc("status", "--json")
    stale = []
    for stage, changes in json.loads(status.stdout or "{}").items():
        reasons = []
        for change in changes:
            for kind, paths in (change.items() if isinstance(change, dict) else [(change, {})]):
                described = ", ".join(f"{path} {state}" for path, state in paths.items()) if isinstance(paths, dict) else paths
                reasons.append(f"{kind}: {described}" if described else kind)
        stale.append(f"{stage.split(':')[-1]} ({'; '.join(reasons)})")
    return stale


def reproduce(name: str) -> str:
    lock = Path("dvc.lock")
    if not lock.is_file():
        raise Failure("dvc.lock not found: commit a pipeline run before reproducing it from a cache", 2)
    before = lock.read_bytes()
    dvc("pull", "--run-cache", "--remote", name)
    stale = stages_that_would_run()
    if stale:
        raise Failure(f"stages would have to run, so nothing was run: {'; '.join(stale)}", 1)
    repro = dvc("repro", check=False)
    log = repro.stdout + repro.stderr
    print(log, end="")
    if repro.returncode != 0:
        raise Failure(f"`dvc repro` failed: {last_error(repro)}", 1)
    ran = re.findall(r"Running stage '([^']+)'", log)
    if ran:
        raise Failure(f"stages had to run ({', '.join(ran)}): the remote's run cache lacks their results", 1)
    if lock.read_bytes() != before:
        raise Failure("dvc.lock changed: the reproduced results differ from the committed ones", 1)
    return log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--remote", required=True, help="a configured DVC remote's name, or a URL or path")
    parser.add_argument("--base", default="main", help="revision to diff metrics and params against (default: main)")
    args = parser.parse_args()
    try:
        name, url = use_remote(args.remote)
        check_remote(name, url)
        reproduce(name)
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return failure.code
    print(f"reproduced from DVC remote {name!r} ({url}): no stage ran, dvc.lock unchanged\n")
    for what in ("metrics", "params"):
        print(f"### {what} diff against {args.base}\n")
        table = dvc(what, "diff", args.base, "--md", check=False).stdout
        # A table of a header and its rule alone means nothing differs.
        print(table if len(table.strip().splitlines()) > 2 else f"no {what} changes\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
