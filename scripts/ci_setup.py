#!/usr/bin/env python3
"""Set up a GitHub Actions job of .github/workflows/ for the team's DVC remote.

    python3 scripts/ci_setup.py check-remote
    python scripts/ci_setup.py add-remote --credentials-dir "$RUNNER_TEMP"
    python scripts/ci_setup.py require-cuda

check-remote (standard library only, the first step of a job): fails unless the secret
DVC_REMOTE_URL names an s3://, gs:// or ssh:// remote, that remote's credentials are set
(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; GOOGLE_APPLICATION_CREDENTIALS_JSON;
SSH_PRIVATE_KEY and SSH_KNOWN_HOSTS) and the repository variable DVC_EXTRAS names its pip
extra.
add-remote: adds the remote as `ci` to .dvc/config.local, with the GCS key file or SSH key
written into the credentials directory and the SSH host's keys added to ~/.ssh/known_hosts
(S3 reads AWS_* from the environment).
require-cuda: fails unless torch sees a CUDA GPU, so a job that trains never trains on a CPU.
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
# and the secrets each needs.
CREDENTIALS = {
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
            "secret DVC_REMOTE_URL is not set (Settings > Secrets and variables > Actions), "
            "e.g. s3://bucket/cifar-dvc"
        )
    kind = urlparse(url).scheme
    if kind not in CREDENTIALS:
        raise NotConfigured(
            f"DVC_REMOTE_URL has scheme {kind or 'none'!r}; these workflows wire credentials for "
            f"{', '.join(f'{name}://' for name in CREDENTIALS)} remotes only"
        )
    missing = [name for name in CREDENTIALS[kind] if not os.environ.get(name, "").strip()]
    if missing:
        raise NotConfigured(f"DVC_REMOTE_URL ({kind}://...) needs secrets that are not set: {', '.join(missing)}")
    extras = os.environ.get("DVC_EXTRAS", "")
    if not re.fullmatch(r"[a-z0-9]+(,[a-z0-9]+)*", extras):
        raise NotConfigured(f"repository variable DVC_EXTRAS is {extras!r}: give pip extras of dvc, e.g. s3 or gs,ssh")
    if kind not in extras.split(","):
        raise NotConfigured(f"DVC_REMOTE_URL ({kind}://...) needs dvc's {kind} extra but DVC_EXTRAS is {extras!r}: set it to {kind}")
    return kind


def add_remote(credentials_dir: Path) -> None:
    kind = remote_kind()
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


def require_cuda() -> None:
    # Imported here: check-remote runs before any package is installed.
    import torch

    if not torch.cuda.is_available():
        raise NotConfigured(
            f"torch {torch.__version__} sees no CUDA GPU: this job trains and must run on a GPU runner "
            "(label `gpu`, NVIDIA driver installed); nothing was trained"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check-remote", help="fail unless the remote's URL, credentials and DVC_EXTRAS are set")
    add = commands.add_parser("add-remote", help=f"add the remote as {REMOTE_NAME!r} to .dvc/config.local")
    add.add_argument("--credentials-dir", type=Path, required=True, help="where key files go (the job's RUNNER_TEMP)")
    commands.add_parser("require-cuda", help="fail unless torch sees a CUDA GPU")
    args = parser.parse_args()
    try:
        if args.command == "check-remote":
            print(f"DVC remote: {remote_kind()}://..., credentials set")
        elif args.command == "add-remote":
            add_remote(args.credentials_dir)
        else:
            require_cuda()
    except NotConfigured as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
