#!/usr/bin/env python3
"""Share this workspace's results through a DVC remote, run cache included, and check they arrived.

    python scripts/push_results.py [--remote NAME_OR_URL]

Runs `dvc push --run-cache`, then `dvc status --cloud`, and fails unless the remote holds
every output dvc.lock records. The check is needed: `dvc push` (DVC 3.67.1) skips an object
that is missing from the local cache with a warning and still exits 0, so a remote could
silently lack a result that the commit points to. Every output in dvc.yaml is DVC-cached,
so the run-cache records pushed alongside let another clone restore a stage that ran here
(`dvc repro --pull`) instead of running it. Exit codes: 0 pushed and complete, 1 the
remote lacks outputs after the push, 2 the push failed or the remote is unknown.
"""

from __future__ import annotations

import argparse
import sys

from dvc_cli import Failure, checked_dvc, default_remote, outputs_missing_from, use_remote


def push(remote: str | None) -> str:
    name, url = use_remote(remote) if remote else default_remote()
    pushed = checked_dvc("push", "--run-cache", "--remote", name)
    missing = outputs_missing_from(name)
    if missing:
        raise Failure(
            f"DVC remote {name!r} ({url}) lacks {', '.join(missing)} after the push, as this clone's DVC cache lacks "
            "them too (DVC only warned); `dvc commit --force` caches the workspace's copies, then push again",
            1,
        )
    summary = (pushed.stdout.strip().splitlines() or ["nothing to push"])[-1]
    return f"DVC remote {name!r} ({url}) holds every output of dvc.lock and the run cache ({summary})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--remote", help="a configured DVC remote's name, or a URL or path (default: the default remote)"
    )
    args = parser.parse_args()
    try:
        print(push(args.remote))
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return failure.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
