#!/usr/bin/env python3
"""Share this workspace's results through a DVC remote, run cache included.

    python scripts/push_results.py [--remote NAME]

Does what `dvc push --run-cache` does, and also uploads the files that the run-cache
records point to. DVC 3 (3.67.1 measured) pushes the records but not the files of outputs
with `cache: false` (metrics and plots here): another clone then finds a record for its
stage, cannot restore the stage's metrics, and runs the stage again. With those files on
the remote, `dvc repro --pull` elsewhere restores every stage this machine already ran.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dvc.exceptions import DvcException
from dvc.repo import Repo


def run_cache_records(repo: Repo) -> list[tuple[str, str]]:
    """(key, value) of every run-cache record in the local cache: runs/<xx>/<key>/<value>."""
    runs = Path(repo.stage_cache.cache_dir)
    if not runs.is_dir():
        return []
    return [(key.name, value.name) for prefix in runs.iterdir() for key in prefix.iterdir() for value in key.iterdir()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--remote", help="a configured DVC remote's name (default: the default remote)")
    args = parser.parse_args()
    try:
        with Repo() as repo:
            pushed = repo.push(remote=args.remote, run_cache=True)
            files, elsewhere = 0, 0
            for record in run_cache_records(repo):
                try:
                    used = repo.stage_cache.get_used_objs([record])
                except DvcException:
                    # A record pulled from the remote whose files this clone never fetched:
                    # they are on the remote already, where the record came from.
                    elsewhere += 1
                    continue
                for objects in used.values():
                    files += len(repo.cloud.push(objects, remote=args.remote).transferred)
    except DvcException as error:
        print(f"error: could not push to the DVC remote: {error}", file=sys.stderr)
        return 2
    print(f"pushed {pushed} outputs and run-cache records, then {files} files that run-cache records point to "
          f"({elsewhere} records came from the remote and were skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
