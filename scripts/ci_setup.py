#!/usr/bin/env python3
"""Set up a GitHub Actions job of .github/workflows/ for the team's DVC remote.

    python3 scripts/ci_setup.py scope
    python3 scripts/ci_setup.py check-remote
    python3 scripts/ci_setup.py runner-state --dir "$RUNNER_TOOL_CACHE/cifar-dvc/$GITHUB_REPOSITORY"
    python scripts/ci_setup.py add-remote --credentials-dir "$RUNNER_TEMP" [--cache-dir DIR]
    python scripts/ci_setup.py require-cuda

scope (standard library only): whether a pull request's check has results to reproduce.
It has none when the pull request comes from a fork (FROM_FORK=true: GitHub gives such a
run no secrets and a read-only token) or the commit has no dvc.lock (a fork of this
template that has not trained yet). Writes `reproduce=true|false`, `from-fork=` and
`reason=` to $GITHUB_OUTPUT and, when there is nothing to reproduce, a notice and the
reason to the job's summary: a neutral outcome, not a failure.
check-remote (standard library only, before anything is installed): fails unless the
secret DVC_REMOTE_URL names an s3://, gs:// or ssh:// remote or a directory (an absolute
path on the runner), that remote's credentials are set (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY; GOOGLE_APPLICATION_CREDENTIALS_JSON; SSH_PRIVATE_KEY and
SSH_KNOWN_HOSTS) and the repository variable DVC_EXTRAS names its pip extra.
runner-state (standard library only): keeps what a training runner must not lose between
runs in DIR, outside the workspace that each checkout starts afresh: the pinned
environment (writes CIFAR_DVC_VENV for scripts/env.sh to $GITHUB_ENV), the DVC cache
(CIFAR_DVC_CACHE, for add-remote --cache-dir) and .checkpoints/ (a link into DIR), so a
killed run resumes from its last epoch on the next dispatch.
add-remote: adds the remote as `ci` to .dvc/config.local, with the GCS key file or SSH key
written into the credentials directory and the SSH host's keys added to ~/.ssh/known_hosts
(S3 reads AWS_* from the environment); with --cache-dir, DVC's cache lives there.
require-cuda: fails unless torch sees a CUDA GPU, so a job that trains never trains on a
CPU. The one exception is scripts/ci_local.sh, which runs the workflows under nektos/act
on a machine without a GPU: it sets CI_LOCAL_CPU_TRAINING=1, and act sets ACT=true, which
GitHub's runners never do.
Exit codes: 0 ready, 2 not configured.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

from dvc_cli import dvc as run_dvc
from dvc_cli import last_error

REMOTE_NAME = "ci"
# The remote kinds these workflows wire, by URL scheme (also the name of dvc's pip extra),
# and the secrets each needs. A directory on the runner (a mounted share) needs neither.
DIRECTORY = "directory"
CREDENTIALS = {
    DIRECTORY: (),
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    "gs": ("GOOGLE_APPLICATION_CREDENTIALS_JSON",),
    # dvc-ssh checks the host's key against ~/.ssh/known_hosts, which a fresh runner lacks.
    "ssh": ("SSH_PRIVATE_KEY", "SSH_KNOWN_HOSTS"),
}
# Secrets that are a file's content: the file each is written to, and the remote option
# that points DVC at it.
CREDENTIAL_FILES = {
    "GOOGLE_APPLICATION_CREDENTIALS_JSON": ("gcs-credentials.json", "credentialpath"),
    "SSH_PRIVATE_KEY": ("ssh-private-key", "keyfile"),
}


class NotConfigured(Exception):
    pass


def remote_kind() -> str:
    """The remote's scheme, once DVC_REMOTE_URL, its credentials and DVC_EXTRAS agree."""
    url = os.environ.get("DVC_REMOTE_URL", "").strip()
    if not url:
        raise NotConfigured(
            "secret DVC_REMOTE_URL is not set (Settings > Secrets and variables > Actions), e.g. s3://bucket/cifar-dvc"
        )
    kind = DIRECTORY if url.startswith("/") else urlparse(url).scheme
    if kind not in CREDENTIALS or (kind == DIRECTORY and not Path(url).is_absolute()):
        raise NotConfigured(
            f"DVC_REMOTE_URL has scheme {kind or 'none'!r}; these workflows wire credentials for "
            f"{', '.join(f'{name}://' for name in CREDENTIALS if name != DIRECTORY)} remotes "
            "and directories (an absolute path) only"
        )
    missing = [name for name in CREDENTIALS[kind] if not os.environ.get(name, "").strip()]
    if missing:
        raise NotConfigured(f"DVC_REMOTE_URL ({kind}://...) needs secrets that are not set: {', '.join(missing)}")
    extras = os.environ.get("DVC_EXTRAS", "")
    if not re.fullmatch(r"[a-z0-9]+(,[a-z0-9]+)*", extras):
        raise NotConfigured(f"repository variable DVC_EXTRAS is {extras!r}: give pip extras of dvc, e.g. s3 or gs,ssh")
    if kind != DIRECTORY and kind not in extras.split(","):
        raise NotConfigured(
            f"DVC_REMOTE_URL ({kind}://...) needs dvc's {kind} extra but DVC_EXTRAS is {extras!r}: set it to {kind}"
        )
    return kind


def add_remote(credentials_dir: Path, cache_dir: Path | None) -> None:
    kind = remote_kind()
    if cache_dir:
        dvc("cache", "dir", "--local", str(cache_dir.resolve()))
    dvc("remote", "add", "--local", "--force", REMOTE_NAME, os.environ["DVC_REMOTE_URL"].strip())
    for secret in CREDENTIALS[kind]:
        if secret in CREDENTIAL_FILES:
            file_name, option = CREDENTIAL_FILES[secret]
            path = owner_only_file(credentials_dir / file_name)
            path.write_text(os.environ[secret].strip() + "\n")
            dvc("remote", "modify", "--local", REMOTE_NAME, option, str(path.resolve()))
    if kind == "ssh":
        trust_host_keys(os.environ["SSH_KNOWN_HOSTS"])


def owner_only_file(path: Path) -> Path:
    """path, created empty and readable by its owner only: a key others can read is
    refused by ssh and exposed to other jobs on the machine."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    path.chmod(0o600)
    return path


def trust_host_keys(lines: str) -> None:
    """Adds each line missing from ~/.ssh/known_hosts: a self-hosted runner keeps the file."""
    known_hosts = Path.home() / ".ssh/known_hosts"
    if not known_hosts.exists():
        owner_only_file(known_hosts)
    present = set(known_hosts.read_text().splitlines())
    added = [line.strip() for line in lines.splitlines() if line.strip() and line.strip() not in present]
    with known_hosts.open("a") as stream:
        stream.writelines(f"{line}\n" for line in added)


def dvc(*arguments: str) -> None:
    result = run_dvc(*arguments)
    if result.returncode != 0:
        raise NotConfigured(f"`dvc {' '.join(arguments[:3])}` failed: {last_error(result)}")


def scope() -> None:
    if os.environ.get("FROM_FORK") == "true":
        reproduce, reason = (
            False,
            (
                "this pull request comes from a fork, and GitHub gives its checks no secrets, so the DVC "
                "remote is out of reach: push the branch to this repository to check its results"
            ),
        )
    elif not Path("dvc.lock").is_file():
        reproduce, reason = (
            False,
            (
                "this commit has no dvc.lock, so it has no results yet: dispatch the train workflow "
                "(Actions > train > Run workflow) to train them and open a pull request with them"
            ),
        )
    else:
        reproduce, reason = True, "dvc.lock is committed: its results must reproduce from the DVC remote"
    outputs = {
        "reproduce": str(reproduce).lower(),
        "from-fork": str(os.environ.get("FROM_FORK") == "true").lower(),
        "reason": reason,
    }
    with open(os.environ["GITHUB_OUTPUT"], "a") as stream:
        stream.writelines(f"{key}={value}\n" for key, value in outputs.items())
    if reproduce:
        print(reason)
        return
    # A job cannot end neutral on GitHub: it passes, with the reason where a reviewer looks.
    print(f"::notice title=Nothing to reproduce::{reason}")
    with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as stream:
        stream.write(f"### Nothing to reproduce\n\n{reason}\n")


def runner_state(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "checkpoints").mkdir(exist_ok=True)
    checkpoints = Path(".checkpoints")
    if checkpoints.is_symlink():
        checkpoints.unlink()
    elif checkpoints.exists():
        raise NotConfigured(f"{checkpoints.resolve()} exists: the checkout should have removed it")
    checkpoints.symlink_to(state / "checkpoints", target_is_directory=True)
    # .gitignore's `/.checkpoints/` matches the folder, not a link to it.
    with open(".git/info/exclude", "a") as exclude:
        exclude.write("/.checkpoints\n")
    with open(os.environ["GITHUB_ENV"], "a") as stream:
        stream.write(f"CIFAR_DVC_VENV={state / 'venv'}\nCIFAR_DVC_CACHE={state / 'dvc-cache'}\n")
    print(f"runner state in {state}: {', '.join(sorted(entry.name for entry in state.iterdir()))}")


def local_cpu_run() -> bool:
    """Whether scripts/ci_local.sh runs this job under act on purpose without a GPU."""
    return os.environ.get("ACT") == "true" and os.environ.get("CI_LOCAL_CPU_TRAINING") == "1"


def require_cuda() -> None:
    # Imported here: check-remote runs before any package is installed.
    import torch

    if local_cpu_run():
        print("::warning::scripts/ci_local.sh runs this job under act without a GPU: training on the CPU")
        return
    if not torch.cuda.is_available():
        raise NotConfigured(
            f"torch {torch.__version__} sees no CUDA GPU: this job trains and must run on a GPU runner "
            "(label `gpu`, NVIDIA driver installed); nothing was trained"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("scope", help="whether a pull request has results to reproduce, to $GITHUB_OUTPUT")
    commands.add_parser("check-remote", help="fail unless the remote's URL, credentials and DVC_EXTRAS are set")
    state = commands.add_parser("runner-state", help="keep the environment, DVC cache and checkpoints in DIR")
    state.add_argument("--dir", type=Path, required=True, help="a folder the runner keeps between jobs")
    add = commands.add_parser("add-remote", help=f"add the remote as {REMOTE_NAME!r} to .dvc/config.local")
    add.add_argument("--credentials-dir", type=Path, required=True, help="where key files go (the job's RUNNER_TEMP)")
    add.add_argument("--cache-dir", type=Path, help="DVC's cache folder (default: .dvc/cache)")
    commands.add_parser("require-cuda", help="fail unless torch sees a CUDA GPU")
    args = parser.parse_args()
    try:
        if args.command == "scope":
            scope()
        elif args.command == "check-remote":
            kind = remote_kind()
            print(f"DVC remote: {'a directory' if kind == DIRECTORY else kind + '://...'}, credentials set")
        elif args.command == "runner-state":
            runner_state(args.dir)
        elif args.command == "add-remote":
            add_remote(args.credentials_dir, args.cache_dir)
        else:
            require_cuda()
    except NotConfigured as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
