#!/usr/bin/env python3
"""Run the GitHub Actions workflows of .github/workflows/ on this machine, end to end.

    scripts/ci_local.sh [--work DIR] [--report FILE]

A real Actions engine, nektos/act (pinned in requirements.txt), runs every job on this
machine (`-P ubuntu-latest=-self-hosted`, the `gpu` label likewise: no Docker), against a
real SSH remote (Debian's openssh-server on a loopback port, with a key made for the run)
handed to the workflows through the secrets a fork sets. Only what lives on GitHub is
stood in for: the marketplace actions (.github/local-ci/actions), the GitHub API that `gh`
calls (scripts/github_standin.py, which records every request) and the git server (bare
repositories). The repository under test is this checkout's tracked files, with its committed
params.yaml set to a small synthetic run so that training takes a minute on a CPU; the
train jobs may run without CUDA here only (ci_setup.py require-cuda).

The scenarios, in order, each printed with its jobs' outcomes:
  c1  a pull request from a fork: passes, explained, nothing posted (no secrets, read-only token)
  c2  a pull request of a fork of this template that has not trained (no dvc.lock): passes,
      with a comment saying there is nothing to reproduce yet
  d1  train dispatched, killed as soon as its first epoch's checkpoint is written
  d2  train dispatched again: reuses the runner's environment and DVC cache, resumes from
      the checkpoint, pushes the results to a branch of their own, opens a pull request and
      runs the reproduce check on it (scenario e); main is protected: the git server refuses
      any push to it
  a   that pull request's pull_request run: green, its one comment edited in place
  b   the same after one output is deleted from the remote, through the directory remote:
      fails before anything runs, naming what is missing, and the comment says so
  f   the pull request merged, a sweep of DVC's grid `evaluate.misclassified=range(4,12,4)`:
      two experiment jobs, collected into one report
Writes everything to DIR (default: a new folder under /tmp): act's JSON logs per run in
logs/, the API stand-in's requests in github-requests.jsonl, artifacts in artifacts/, and a
report (--report, default DIR/report.json) of every run's jobs and steps, the install times
and the comments and statuses posted. Exit codes: 0 every outcome as expected, 1 not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from github_standin import GitHubStandIn, read_record

REPO = Path(__file__).resolve().parents[1]
STANDIN_ACTIONS = REPO / ".github/local-ci/actions"
# The versions the workflows pin; each is answered by its local stand-in.
ACTIONS = ("actions/checkout@v7", "actions/setup-python@v7", "actions/upload-artifact@v7")
REPOSITORY = "cifar-dvc-user/cifar-dvc"
FORK = "someone-else/cifar-dvc"
TOKEN = "local-ci-token"
# The train job's state on the "gpu" runner, under act's tool cache (ci_setup.py runner-state).
RUNNER_STATE = f"tool_cache/cifar-dvc/{REPOSITORY}"
# A training run of about a minute on two CPU cores that still learns (tests/pipeline_repo.py's).
TINY_PARAMS = {
    "data": {"source": "synthetic", "train_limit": 256, "test_limit": 160},
    "lr_find": {"num_iter": 12, "end_lr": 0.003, "pick": "min_loss"},
    "train": {"epochs": 3, "batch_size": 64, "onecycle": {"max_at_epoch": 1}},
}
TRAIN_INPUT = "evaluate.tta=true"
SWEEP_INPUT = "evaluate.misclassified=range(4,12,4)"
INSTALL_STEP = "Pinned environment on a GPU"


@dataclass
class Run:
    """One workflow run under act: its jobs' results and each step's result and seconds."""

    scenario: str
    workflow: str
    event: str
    run_id: int
    log: Path
    exit_code: int | None = None
    killed: bool = False
    jobs: dict[str, str] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    def read_log(self) -> None:
        for line in self.log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            job = entry.get("job", "").strip()
            if entry.get("raw_output"):
                self.output.append(f"[{job}] {entry.get('msg', '').rstrip()}")
            elif "command" in entry:  # a workflow command: ::notice::, the job summary, ...
                self.output.append(f"[{job}] ::{entry['command']}:: {entry.get('arg') or entry.get('content', '')}")
            if "jobResult" in entry:
                self.jobs[job] = entry["jobResult"]
            if "stepResult" in entry and entry.get("stage") == "Main":
                self.steps.append(
                    {
                        "job": job,
                        "step": entry["step"],
                        "result": entry["stepResult"],
                        "seconds": round(entry.get("executionTime", 0) / 1e9, 1),
                    }
                )

    def step_seconds(self, step: str) -> float | None:
        return next((entry["seconds"] for entry in self.steps if entry["step"] == step), None)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.output)


class LocalCI:
    def __init__(self, work: Path):
        self.work = work
        self.git_server = work / "git"
        self.origin = self.git_server / f"{REPOSITORY}.git"
        self.remote = work / "dvc-remote"
        self.act_cache = work / "act"
        self.home = work / "home"
        self.logs = work / "logs"
        self.artifacts = work / "artifacts"
        self.requests = work / "github-requests.jsonl"
        self.next_run_id = 100
        self.runs: list[Run] = []
        for folder in (self.git_server, self.remote, self.act_cache, self.home, self.logs, self.artifacts):
            folder.mkdir(parents=True, exist_ok=True)

    # --- the repository, as a fork of the template holds it -------------------------------

    def git(self, cwd: Path, *arguments: str) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "cifar-dvc-user",
            "GIT_AUTHOR_EMAIL": "user@example.com",
            "GIT_COMMITTER_NAME": "cifar-dvc-user",
            "GIT_COMMITTER_EMAIL": "user@example.com",
        }
        result = subprocess.run(["git", *arguments], cwd=cwd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"git {' '.join(arguments)} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def seed_repository(self) -> None:
        """The bare origin's main: this checkout's tracked files, its committed params.yaml made
        tiny, and a hook that refuses pushes to main, as branch protection does."""
        seed = self.work / "seed"
        tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        for name in filter(None, tracked.split("\0")):
            source = REPO / name
            if source.is_file():
                (seed / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, seed / name)
        # The committed params.yaml, as a fork holds it: `dvc exp run -S` changes the workspace's.
        committed = subprocess.run(
            ["git", "show", "HEAD:params.yaml"], cwd=REPO, capture_output=True, text=True, check=True
        )
        params = yaml.safe_load(committed.stdout)
        for section, values in TINY_PARAMS.items():
            for key, value in values.items():
                if isinstance(value, dict):
                    params[section][key].update(value)
                else:
                    params[section][key] = value
        (seed / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        self.git(seed, "init", "-q", "--initial-branch=main")
        self.git(seed, "add", "-A")
        self.git(seed, "commit", "-qm", "A fork of the template, with a small synthetic run in params.yaml")
        self.git(self.work, "init", "-q", "--bare", "--initial-branch=main", str(self.origin))
        self.git(seed, "push", "-q", str(self.origin), "main")
        hook = self.origin / "hooks/pre-receive"
        hook.write_text(
            "#!/bin/sh\n# Branch protection: main changes only through a merged pull request.\n"
            "while read -r old new ref; do\n"
            '  [ "$ref" != refs/heads/main ] || { echo "main is protected: open a pull request" >&2; exit 1; }\n'
            "done\n"
        )
        hook.chmod(0o755)

    def push_branch(self, branch: str, message: str, base: str = "main") -> str:
        """A commit on top of base that changes README.md only, pushed as branch: its sha."""
        clone = Path(tempfile.mkdtemp(dir=self.work, prefix="clone-"))
        self.git(clone, "clone", "-q", "--branch", base, str(self.origin), ".")
        with open(clone / "README.md", "a") as readme:
            readme.write(f"\n{message}\n")
        self.git(clone, "commit", "-qam", message)
        self.git(clone, "push", "-q", "origin", f"HEAD:refs/{branch}")
        return self.git(clone, "rev-parse", "HEAD")

    def sha(self, ref: str) -> str:
        return self.git(self.origin, "rev-parse", ref)

    # --- the SSH remote ---------------------------------------------------------------------

    def start_sshd(self) -> subprocess.Popen:
        keys = self.work / "ssh"
        keys.mkdir()
        for name in ("host_key", "user_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
        (keys / "authorized_keys").write_text((keys / "user_key.pub").read_text())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = keys / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {keys / 'host_key'}",
                    f"AuthorizedKeysFile {keys / 'authorized_keys'}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    # the scratch folder's permissions are not a home directory's
                    "StrictModes no",
                    f"PidFile {keys / 'sshd.pid'}",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
        sshd = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
            stderr=open(self.logs / "sshd.log", "w"),  # noqa: SIM115 (sshd's stderr while it runs)
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if sshd.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(  # noqa: B904 (the last refused connection stays its context)
                        f"sshd did not start: {(self.logs / 'sshd.log').read_text().strip()}"
                    )
                time.sleep(0.1)
        user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        host_key = (keys / "host_key.pub").read_text().split()
        self.write_settings(
            "ssh",
            {
                "DVC_REMOTE_URL": f"ssh://{user}@127.0.0.1:{port}{self.remote}",
                "SSH_PRIVATE_KEY": (keys / "user_key").read_text(),
                "SSH_KNOWN_HOSTS": f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}",
            },
        )
        self.write_settings("directory", {"DVC_REMOTE_URL": str(self.remote)})
        self.write_settings("fork", {})  # GitHub gives a fork's pull request no secrets
        (self.work / "vars").write_text("DVC_EXTRAS=ssh\n")
        return sshd

    def write_settings(self, name: str, secrets: dict[str, str]) -> None:
        """A secrets file for act (dotenv: a double-quoted value reads \\n as a newline)."""
        lines = [f"{key}={json.dumps(value)}" for key, value in {"GITHUB_TOKEN": TOKEN, **secrets}.items()]
        path = self.work / f"secrets-{name}"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)

    # --- running a workflow -------------------------------------------------------------------

    def environment(self, standin: GitHubStandIn) -> dict[str, str]:
        """A runner's environment: no .venv of this checkout, a home of its own (known_hosts),
        `gh` pointed at the stand-in, and where the stand-in actions find the git server."""
        python_bin = Path(sys.base_prefix) / "bin"
        keep = {
            key: value
            for key, value in os.environ.items()
            if key.startswith(("PIP_", "LANG", "LC_", "OPENBLAS_", "TZ")) or key in ("USER", "LOGNAME")
        }
        return {
            **keep,
            "PATH": f"{python_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.home),
            "CI_LOCAL_GIT_SERVER": str(self.git_server),
            "CI_LOCAL_ARTIFACTS": str(self.artifacts),
            "CI_LOCAL_CPU_TRAINING": "1",
            "GH_HOST": "github.localhost",
            "HTTP_PROXY": standin.proxy_url,
        }

    def start_run(
        self,
        scenario: str,
        workflow: str,
        event_name: str,
        event: dict,
        ref: str,
        settings: str,
        standin: GitHubStandIn,
    ) -> tuple[Run, subprocess.Popen]:
        self.next_run_id += 1
        run = Run(scenario, workflow, event_name, self.next_run_id, self.logs / f"{self.next_run_id}-{scenario}.jsonl")
        # GitHub reads the workflow from the commit the event is for.
        trigger = self.work / f"trigger-{run.run_id}"
        self.git(self.work, "clone", "-q", str(self.origin), str(trigger))
        self.git(trigger, "checkout", "-q", "--detach", ref)
        event_file = self.work / f"event-{run.run_id}.json"
        event_file.write_text(json.dumps({**event, "repository": {"full_name": REPOSITORY, "default_branch": "main"}}))
        act = shutil.which("act", path=str(Path(sys.executable).parent)) or "act"
        command = [
            act,
            event_name,
            "--json",
            "-W",
            str(trigger / ".github/workflows" / workflow),
            "-e",
            str(event_file),
            "--no-skip-checkout",
            "--concurrent-jobs",
            "1",
            "--no-cache-server",
            "--action-cache-path",
            str(self.act_cache),
            "--defaultbranch",
            "main",
            "--secret-file",
            str(self.work / f"secrets-{settings}"),
            "--var-file",
            str(self.work / "vars"),
            "--env",
            f"GITHUB_REPOSITORY={REPOSITORY}",
            "--env",
            f"GITHUB_RUN_ID={run.run_id}",
        ]
        for label in ("ubuntu-latest", "self-hosted", "gpu"):
            command += ["-P", f"{label}=-self-hosted"]
        for action in ACTIONS:
            command += ["--local-repository", f"{action}={STANDIN_ACTIONS / action.split('/')[1].split('@')[0]}"]
        print(f"\n== {scenario}: {workflow} on {event_name} (run {run.run_id}), log {run.log}", flush=True)
        process = subprocess.Popen(
            command,
            cwd=trigger,
            env=self.environment(standin),
            stdout=open(run.log, "w"),  # noqa: SIM115 (act's stdout while it runs)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return run, process

    def finish(self, run: Run, process: subprocess.Popen) -> Run:
        run.exit_code = process.wait()
        run.read_log()
        self.runs.append(run)
        for job, result in run.jobs.items():
            print(f"   {job}: {result}")
        if run.killed:
            print("   (killed mid-training, as a preempted runner is)")
        return run

    def run(self, *arguments, **keywords) -> Run:
        return self.finish(*self.start_run(*arguments, **keywords))

    def kill_when(self, run: Run, process: subprocess.Popen, path: Path) -> None:
        """SIGKILL act and every process under it once path exists: a runner preempted mid-job."""
        while not path.exists():
            if process.poll() is not None:
                return
            time.sleep(0.2)
        for pid in [process.pid, *descendants(process.pid)]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run.killed = True

    def pull_request_event(self, number: int, head_sha: str, head_ref: str, head_repo: str = REPOSITORY) -> dict:
        return {
            "action": "synchronize",
            "number": number,
            "pull_request": {
                "number": number,
                "head": {"sha": head_sha, "ref": head_ref, "repo": {"full_name": head_repo}},
                "base": {"ref": "main", "sha": self.sha("main"), "repo": {"full_name": REPOSITORY}},
            },
        }


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def scenarios(ci: LocalCI, standin: GitHubStandIn) -> dict:
    results = {}

    def record(name: str, run: Run, jobs: dict[str, str], checks: dict[str, bool], **facts) -> None:
        """A scenario's outcome: as expected when every job ended as expected and every check holds."""
        failed = [
            f"{job} {run.jobs.get(job, 'did not run')} (expected {result})"
            for job, result in jobs.items()
            if run.jobs.get(job) != result
        ]
        failed += [check for check, holds in checks.items() if not holds]
        results[name] = {
            "run": run.run_id,
            "jobs": run.jobs,
            "expected_jobs": jobs,
            "checks": checks,
            "as_expected": not failed,
            "steps": run.steps,
            **facts,
        }
        print(f"   {name}: {'as expected' if not failed else 'NOT as expected: ' + '; '.join(failed)}")

    def comments_on(number: int) -> list[str]:
        return [comment["body"] for comment in standin.comments.values() if comment["issue"] == number]

    check = "reproduce/reproduce-from-cache"
    fork_sha = ci.push_branch("pull/1/head", "A change from a fork")
    run = ci.run(
        "c1",
        "reproduce.yml",
        "pull_request",
        ci.pull_request_event(1, fork_sha, "fork-change", FORK),
        fork_sha,
        "fork",
        standin,
    )
    record(
        "c1",
        run,
        {check: "success"},
        {"explained in a notice": run.said("Nothing to reproduce"), "nothing posted": not comments_on(1)},
    )

    branch_sha = ci.push_branch("heads/no-results", "A change before anything was trained")
    ci.git(ci.origin, "update-ref", "refs/pull/2/head", branch_sha)
    run = ci.run(
        "c2",
        "reproduce.yml",
        "pull_request",
        ci.pull_request_event(2, branch_sha, "no-results"),
        branch_sha,
        "ssh",
        standin,
    )
    record(
        "c2",
        run,
        {check: "success"},
        {
            "one comment: nothing to reproduce yet": ["Nothing to reproduce yet" in body for body in comments_on(2)]
            == [True]
        },
        comments=comments_on(2),
    )

    dispatch = {"ref": "refs/heads/main", "inputs": {"params": TRAIN_INPUT}}
    main_before = ci.sha("main")
    first, process = ci.start_run("d1", "train.yml", "workflow_dispatch", dispatch, main_before, "ssh", standin)
    ci.kill_when(first, process, ci.act_cache / RUNNER_STATE / "checkpoints/train.pt")
    ci.finish(first, process)
    first_install = first.step_seconds(INSTALL_STEP)
    record("d1", first, {}, {"killed after its first checkpoint": first.killed}, install_seconds=first_install)

    second = ci.run("d2", "train.yml", "workflow_dispatch", dispatch, main_before, "ssh", standin)
    second_install = second.step_seconds(INSTALL_STEP)
    ratio = round(second_install / first_install, 4) if first_install and second_install is not None else None
    record(
        "d2",
        second,
        {"train/train": "success"},
        {
            "resumed from the checkpoint": second.said("resuming from .checkpoints/train.pt"),
            "stages restored from the runner's DVC cache": second.said("is cached - skipping run"),
            "install step at most 10% of the first's": ratio is not None and ratio <= 0.1,
        },
        install_seconds=second_install,
        install_ratio=ratio,
    )

    opened = standin.pulls.get(REPOSITORY, [])
    number = opened[-1]["number"] if opened else 0
    bot_branch = opened[-1]["head"]["ref"] if opened else ""
    record(
        "e",
        second,
        {"train/open-pull-request": "success", f"check/{check}": "success"},
        {
            "results on a branch of their own": bot_branch.startswith("train/main/"),
            "protected main untouched": ci.sha("main") == main_before,
            "the check commented on the pull request": len(comments_on(number)) == 1,
            "commit status set": any(
                status["context"] == "cifar-dvc/reproduce" and status["state"] == "success"
                for status in standin.statuses
            ),
        },
        branch=bot_branch,
        pull_request=number,
    )
    if not number:
        return results

    bot_sha = ci.sha(f"refs/heads/{bot_branch}")
    event = ci.pull_request_event(number, bot_sha, bot_branch)
    run = ci.run("a", "reproduce.yml", "pull_request", event, bot_sha, "ssh", standin)
    record(
        "a",
        run,
        {check: "success"},
        {
            "one comment, with the metrics and params diff": [
                "### metrics diff" in body and "### params diff" in body for body in comments_on(number)
            ]
            == [True]
        },
        pull_request=number,
        comments=comments_on(number),
    )

    lock = yaml.safe_load(ci.git(ci.origin, "show", f"{bot_sha}:dvc.lock"))
    model = next(out for out in lock["stages"]["train"]["outs"] if out["path"] == "models/model.pt")
    stored = ci.remote / "files/md5" / model["md5"][:2] / model["md5"][2:]
    kept = ci.work / "model.pt.kept"
    shutil.move(stored, kept)
    run = ci.run("b", "reproduce.yml", "pull_request", event, bot_sha, "directory", standin)
    shutil.move(kept, stored)
    record(
        "b",
        run,
        {check: "failure"},
        {
            "nothing ran": not run.said("Running stage"),
            "the comment names models/model.pt": [
                "Not reproduced" in body and "models/model.pt" in body for body in comments_on(number)
            ]
            == [True],
            "the remote's URL, a secret, kept out of the comment": all(
                str(ci.remote) not in body for body in comments_on(number)
            ),
        },
        pull_request=number,
        deleted="models/model.pt",
        comments=comments_on(number),
    )

    ci.git(ci.origin, "update-ref", "refs/heads/main", bot_sha)  # GitHub merges the pull request
    run = ci.run(
        "f",
        "sweep.yml",
        "workflow_dispatch",
        {"ref": "refs/heads/main", "inputs": {"overrides": SWEEP_INPUT}},
        bot_sha,
        "ssh",
        standin,
    )
    experiments = [job for job in run.jobs if job.startswith("sweep/sweep-")]
    report = ci.artifacts / str(run.run_id) / "sweep-report/sweep.md"
    text = report.read_text() if report.exists() else ""
    record(
        "f",
        run,
        {"sweep/plan": "success", "sweep/collect": "success", **{job: "success" for job in experiments}},
        {
            "two experiment jobs": len(experiments) == 2,
            "one report with both": "## Sweep: 2 experiments" in text,
        },
        report=text,
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work", type=Path, help="an empty or new folder for everything the run makes (default: a new one under /tmp)"
    )
    parser.add_argument("--report", type=Path, help="where the JSON report goes (default: WORK/report.json)")
    args = parser.parse_args()
    work = (args.work or Path(tempfile.mkdtemp(prefix="cifar-dvc-ci-local-"))).resolve()
    if work.exists() and any(work.iterdir()):
        print(f"error: --work {work} is not empty: give a new or empty folder", file=sys.stderr)
        return 2
    started = time.monotonic()
    ci = LocalCI(work)
    print(f"local CI in {work}")
    ci.seed_repository()
    sshd = ci.start_sshd()
    try:
        with GitHubStandIn(TOKEN, ci.requests, ci.git_server) as standin:
            results = scenarios(ci, standin)
            comments = [comment for comment in standin.comments.values()]
            statuses = standin.statuses
    finally:
        sshd.terminate()
        sshd.wait()
    report = {
        "work": str(work),
        "seconds": round(time.monotonic() - started),
        "scenarios": results,
        "comments": comments,
        "statuses": statuses,
        "requests": read_record(ci.requests),
    }
    (args.report or work / "report.json").write_text(json.dumps(report, indent=1))
    # The runners' lasting state holds the environment the workflows installed (about 6 GB);
    # the report keeps what the scenarios found there. Left behind, a few runs filled a CI disk.
    shutil.rmtree(ci.act_cache / "tool_cache", ignore_errors=True)
    print(f"\n{'scenario':9} {'outcome':14} jobs")
    for name, result in results.items():
        jobs = ", ".join(f"{job}: {outcome}" for job, outcome in result["jobs"].items()) or "(killed)"
        print(f"{name:9} {'as expected' if result['as_expected'] else 'NOT expected':14} {jobs}")
    if "d2" in results:
        print(
            f"install step ({INSTALL_STEP!r}): {results['d1']['install_seconds']} s on the first dispatch, "
            f"{results['d2']['install_seconds']} s on the second"
        )
    print(f"all scenarios: {report['seconds']} s; report {args.report or work / 'report.json'}")
    return 0 if results and all(result["as_expected"] for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
