#!/usr/bin/env python3
"""Reproduce this revision's results from a DVC remote, without training.

    python scripts/reproduce_from_cache.py --remote NAME_OR_URL [--base REV]

First, before downloading any output, it learns whether anything is missing or stale:
`dvc status --cloud` asks the remote which of dvc.lock's outputs it holds (downloading
only the small manifests of directory outputs), and `dvc status` compares the code and
params with dvc.lock (outputs not yet pulled aside). Either failure is one line naming
what is missing or each stage that would run, and why. Then it pulls the outputs (not the
run cache: a committed dvc.lock needs none), checks `dvc status` again, runs `dvc repro`,
which must run no stage and leave dvc.lock unchanged, and prints `dvc metrics diff --md`
and `dvc params diff --md` against the base revision. Exit codes: 0 reproduced, 1 a stage
would have to run or dvc.lock changed, 2 the remote is missing, unreachable or incomplete.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

from dvc_cli import (
    URL_REMOTE_NAME,
    Failure,
    checked_dvc,
    dvc,
    last_error,
    lock_outputs,
    outputs_missing_from,
    use_remote,
)

# `dvc status` states of an output, or of a dep that another stage outputs, that only
# mean "not pulled yet" in a clone: the pull restores them. (`dvc repro --dry
# --allow-missing` skips such stages too, but it fails on a stale stage whose deps are
# not pulled, and gives no reasons: DVC 3.67.1.)
NOT_PULLED = ("deleted", "not in cache")


def check_remote(name: str, url: str) -> None:
    """Fail before touching the workspace if the remote cannot serve this revision."""
    path = url[len("file://") :] if url.startswith("file://") else url
    if (not urlparse(url).scheme or url.startswith("file://")) and not Path(path).is_dir():
        raise Failure(f"DVC remote {name!r} ({url}) is missing: no such directory", 2)
    missing = outputs_missing_from(name)
    if missing:
        raise Failure(
            f"DVC remote {name!r} ({url}) lacks {len(missing)} of this revision's {len(lock_outputs())} outputs "
            f"({', '.join(missing)}): push them from the clone "
            f"that produced them with `python scripts/push_results.py --remote "
            f"{url if name == URL_REMOTE_NAME else name}`",
            2,
        )


def stages_that_would_run(outputs: set[str]) -> list[str]:
    """`dvc status` in words: each stage that is not up to date, with what changed, leaving
    out the outputs (and deps on them) that are only not pulled yet."""
    stale = []
    for stage, changes in json.loads(checked_dvc("status", "--json").stdout or "{}").items():
        reasons = []
        for change in changes:
            for kind, paths in change.items() if isinstance(change, dict) else [(change, {})]:
                if isinstance(paths, dict):
                    paths = {
                        path: state for path, state in paths.items() if not (path in outputs and state in NOT_PULLED)
                    }
                    if not paths:
                        continue
                    described = ", ".join(f"{path} {state}" for path, state in paths.items())
                else:
                    described = paths
                reasons.append(f"{kind}: {described}" if described else kind)
        if reasons:
            stale.append(f"{stage.split(':')[-1]} ({'; '.join(reasons)})")
    return stale


def fail_if_stale(outputs: set[str]) -> None:
    stale = stages_that_would_run(outputs)
    if stale:
        raise Failure(f"stages would have to run, so nothing was run: {'; '.join(stale)}", 1)


def reproduce(name: str) -> None:
    before = Path("dvc.lock").read_bytes()
    checked_dvc("pull", "--remote", name)
    fail_if_stale(set())
    repro = dvc("repro")
    log = repro.stdout + repro.stderr
    print(log, end="")
    if repro.returncode != 0:
        raise Failure(f"`dvc repro` failed: {last_error(repro)}", 1)
    ran = re.findall(r"Running stage '([^']+)'", log)
    if ran:
        raise Failure(f"stages had to run ({', '.join(ran)}) though `dvc status` found none stale", 1)
    if Path("dvc.lock").read_bytes() != before:
        raise Failure("dvc.lock changed: the reproduced results differ from the committed ones", 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--remote", required=True, help="a configured DVC remote's name, or a URL or path")
    parser.add_argument("--base", default="main", help="revision to diff metrics and params against (default: main)")
    args = parser.parse_args()
    try:
        if not Path("dvc.lock").is_file():
            raise Failure("dvc.lock not found: commit a pipeline run before reproducing it from a cache", 2)
        name, url = use_remote(args.remote)
        check_remote(name, url)
        fail_if_stale(set(lock_outputs()))
        reproduce(name)
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return failure.code
    print(f"reproduced from DVC remote {name!r} ({url}): no stage ran, dvc.lock unchanged\n")
    for what in ("metrics", "params"):
        print(f"### {what} diff against {args.base}\n")
        table = dvc(what, "diff", args.base, "--md").stdout
        # A table of a header and its rule alone means nothing differs.
        print(table if len(table.strip().splitlines()) > 2 else f"no {what} changes\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
