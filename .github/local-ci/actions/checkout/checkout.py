"""Local stand-in for actions/checkout: see ../../README.md. Standard library only."""

import os
import subprocess
import sys
from pathlib import Path


def git(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    print(f"[command]git {' '.join(arguments)}", flush=True)
    return subprocess.run(["git", *arguments], check=check, text=True)


def main() -> int:
    server = os.environ.get("CI_LOCAL_GIT_SERVER")
    if not server:
        print(
            "error: CI_LOCAL_GIT_SERVER is not set: this stand-in runs under scripts/ci_local.sh only", file=sys.stderr
        )
        return 2
    url = str(Path(server) / f"{os.environ['REPOSITORY']}.git")
    workspace = Path(os.environ["GITHUB_WORKSPACE"])
    os.chdir(workspace)
    existing = (workspace / ".git").is_dir() and subprocess.run(
        ["git", "remote", "get-url", "origin"], capture_output=True, text=True
    ).stdout.strip() == url
    if existing:
        if os.environ["CLEAN"] == "true":
            git("clean", "-ffdx")
            git("reset", "--hard", "HEAD")
    else:
        for entry in workspace.iterdir():
            subprocess.run(["rm", "-rf", str(entry)], check=True)
        git("init", "-q")
        git("remote", "add", "origin", url)
    # Without a ref: the event's branch at the event's commit, else the event's commit.
    event_ref = (
        os.environ["GITHUB_REF"] if os.environ["GITHUB_REF"].startswith("refs/heads/") else os.environ["GITHUB_SHA"]
    )
    ref = os.environ["REF"] or event_ref
    depth = int(os.environ["FETCH_DEPTH"] or "1")
    if depth == 0:
        git("fetch", "--prune", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*")
    branch = ref.removeprefix("refs/heads/")
    is_branch = (
        subprocess.run(["git", "ls-remote", "--exit-code", "--heads", "origin", branch], capture_output=True).returncode
        == 0
    )
    if is_branch:
        git(
            "fetch",
            *([f"--depth={depth}"] if depth else []),
            "origin",
            f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
        )
        start = os.environ["GITHUB_SHA"] if not os.environ["REF"] else f"refs/remotes/origin/{branch}"
        git("checkout", "--force", "-B", branch, start)
    else:
        git("fetch", *([f"--depth={depth}"] if depth else []), "origin", ref)
        git("checkout", "--force", "--detach", "FETCH_HEAD")
    git("--no-pager", "log", "-1", "--format=checked out %H (%s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
