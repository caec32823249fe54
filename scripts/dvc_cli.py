"""DVC's command line as the scripts here call it: captured, with its error in one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path


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


class Failure(Exception):
    """What went wrong, in one line, and the exit code the script returns for it."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def checked_dvc(*arguments: str) -> subprocess.CompletedProcess:
    """`dvc ARGUMENTS`, raising Failure (exit code 2) with DVC's error line unless it succeeds."""
    result = dvc(*arguments)
    if result.returncode != 0:
        raise Failure(f"`dvc {' '.join(arguments)}` failed: {last_error(result)}", 2)
    return result


# The name under which a remote given as a URL or path is added, to .dvc/config.local only.
URL_REMOTE_NAME = "given-url"


def use_remote(remote: str) -> tuple[str, str]:
    """(name, url) of a configured remote's name, or of a URL or path added as a local-only remote."""
    # `dvc remote list` wraps a long line; `dvc config --list` prints one `key=value` a line.
    listed = checked_dvc("config", "--list").stdout
    remotes = dict(re.findall(r"^remote\.(.+)\.url=(.*)$", listed, flags=re.M))
    if remote in remotes:
        return remote, remotes[remote]
    if not re.match(r"^[a-z][a-z0-9+]*://", remote) and not remote.startswith(("/", ".", "~")):
        known = ", ".join(remotes) or "none"
        raise Failure(f"DVC remote {remote!r} is not configured (configured: {known}); give its name or its URL", 2)
    url = str(Path(remote).expanduser().resolve()) if "://" not in remote else remote
    checked_dvc("remote", "add", "--local", "--force", URL_REMOTE_NAME, url)
    return URL_REMOTE_NAME, url


def default_remote() -> tuple[str, str]:
    """(name, url) of the default remote, as `dvc push` and `dvc pull` use it without -r."""
    name = dvc("remote", "default").stdout.strip()
    if not name:
        raise Failure("no default DVC remote: give --remote NAME_OR_URL, or set one with `dvc remote add --default`", 2)
    return use_remote(name)


def outputs_missing_from(name: str) -> list[str]:
    """This revision's outputs (dvc.lock) that the remote lacks, by `dvc status --cloud`.

    It asks the remote which objects it holds and downloads only the manifests of
    directory outputs, never the data. A directory is named once for all its missing files.
    """
    status = dvc("status", "--cloud", "--remote", name, "--json")
    if status.returncode != 0:
        raise Failure(f"DVC remote {name!r} is unreachable: {last_error(status)}", 2)
    outputs = lock_outputs()
    # "new": only in the local cache; "missing": in neither; "deleted": only on the remote.
    lacking = {
        next((out for out in outputs if path == out or path.startswith(out + "/")), path)
        for path, state in json.loads(status.stdout or "{}").items()
        if state in ("new", "missing")
    }
    # A directory whose manifest is in neither is left out of the JSON: DVC names its md5
    # only in a warning (DVC 3.67.1, tests/test_dvc_upstream.py).
    unlisted = set(re.findall(r"md5: ([0-9a-f]+\.dir)", status.stderr))
    return sorted(lacking | {path for path, md5 in outputs.items() if md5 in unlisted})


def lock_outputs() -> dict[str, str]:
    """Every output path dvc.lock records, of every stage, with its md5 (`.dir` for a directory)."""
    # Imported here: ci_setup.py's check-remote imports this module before any package is installed.
    import yaml

    lock = yaml.safe_load(Path("dvc.lock").read_text()) or {}
    return {out["path"]: out["md5"] for stage in (lock.get("stages") or {}).values() for out in stage.get("outs", [])}
