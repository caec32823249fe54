#!/usr/bin/env python3
"""Run one experiment of a sweep and share it: a job of .github/workflows/sweep.yml.

    python scripts/sweep_job.py --name NAME [--git-remote origin] [--dvc-remote NAME] -- KEY=VALUE ...

In a clone of the sweep's commit: pulls the committed outputs and the run cache from the
DVC remote, so that only the stages the overrides touch run; runs
`dvc exp run --name NAME -S KEY=VALUE ...`; pushes the experiment's outputs and run cache
with push_results.py (which adds the metrics and plots `dvc push --run-cache` leaves out);
then pushes its git ref with `dvc exp push`. scripts/sweep_collect.py gathers the
experiments anywhere else. Exit codes: 0 shared, 1 the experiment failed, 2 a remote
refused.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from dvc_cli import dvc, last_error

SCRIPTS = Path(__file__).resolve().parent


def fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="the experiment's name, unique within the sweep")
    parser.add_argument(
        "--git-remote", default="origin", help="git remote the experiment's ref goes to (default: origin)"
    )
    parser.add_argument("--dvc-remote", help="DVC remote for outputs and run cache (default: the default remote)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="params to set, as for dvc exp run -S")
    args = parser.parse_args()
    remote = ["--remote", args.dvc_remote] if args.dvc_remote else []

    pulled = dvc("pull", "--run-cache", *remote)
    if pulled.returncode != 0:
        return fail(
            f"could not pull this commit's results from the DVC remote ({last_error(pulled)}); "
            "a sweep starts from them: push them with scripts/push_results.py",
            2,
        )
    # Streamed, not captured: the stages' logs are the job's log.
    run = [sys.executable, "-m", "dvc", "exp", "run", "--name", args.name]
    ran = subprocess.run(run + [argument for override in args.overrides for argument in ("-S", override)])
    if ran.returncode != 0:
        return fail(f"experiment {args.name} failed: `dvc exp run` exited {ran.returncode} (its log is above)", 1)
    pushed = subprocess.run([sys.executable, str(SCRIPTS / "push_results.py"), *remote])
    if pushed.returncode != 0:
        return pushed.returncode  # push_results.py has printed its error line
    shared = dvc("exp", "push", "--no-cache", args.git_remote, args.name)
    if shared.returncode != 0:
        return fail(f"could not push experiment {args.name} to git remote {args.git_remote!r}: {last_error(shared)}", 2)
    print(f"shared experiment {args.name}: outputs and run cache on the DVC remote, its git ref on {args.git_remote!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
