"""The GitHub Actions workflows' parts: actionlint with shellcheck over every file; the
shell of the steps that take user input, run by bash as GitHub runs it with the input in
the environment and `dvc`, `git`, `gh` and `python` stubbed; the scripts they call; and,
in the full tier, a sweep of two experiments through a bare git remote and a directory DVC
remote, collected into one report. tests/test_ci_local.py runs the workflows whole."""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_repo import REPO, dvc, make_pipeline_repo, run
from stages import paths

WORKFLOWS = REPO / ".github/workflows"
BIN = Path(sys.executable).parent
PLAN = str(REPO / "scripts/sweep_plan.py")
CI_SETUP = str(REPO / "scripts/ci_setup.py")
SWEEP_JOB = str(REPO / "scripts/sweep_job.py")
SWEEP_COLLECT = str(REPO / "scripts/sweep_collect.py")
REMOTE_SETTINGS = (
    "DVC_REMOTE_URL",
    "DVC_EXTRAS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON",
    "SSH_PRIVATE_KEY",
    "SSH_KNOWN_HOSTS",
)
# The tracker's example: run as shell code, it would print INJECTED on a line of its own.
INJECTION = "train.epochs=1 $(echo INJECTED >&2)"


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.y*ml"))


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def all_steps():
    for path in workflow_files():
        for job_name, job in workflow(path.name)["jobs"].items():
            for step in job.get("steps", []):  # a job that calls a workflow has none
                yield f"{path.name} {job_name} {step.get('name') or step.get('uses')}", step


def test_actionlint_with_shellcheck_reports_nothing_on_any_workflow():
    actionlint, shellcheck = BIN / "actionlint", BIN / "shellcheck"
    if not (actionlint.is_file() and shellcheck.is_file()):
        pytest.skip(f"actionlint and shellcheck are not installed next to {sys.executable} (requirements.txt has them)")
    files = workflow_files()
    assert files
    # The config names it explicitly: actionlint looks for it beside a .git that a copy may lack.
    result = subprocess.run(
        [actionlint, "-no-color", "-config-file", REPO / ".github/actionlint.yaml", "-shellcheck", shellcheck, *files],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_no_run_script_expands_an_expression_itself():
    # GitHub pastes ${{ }} values into the script before bash reads it: each must come in
    # through env: instead, where bash treats it as data.
    for where, step in all_steps():
        assert "${{" not in step.get("run", ""), where


def test_every_workflow_runs_bash_with_pipefail():
    # `shell: bash` is GitHub's `bash --noprofile --norc -eo pipefail`; the default shell lacks pipefail.
    for path in workflow_files():
        assert workflow(path.name)["defaults"]["run"]["shell"] == "bash", path.name


STUB = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
key = f"STUB_{{name}}_{{sys.argv[1] if len(sys.argv) > 1 else ''}}".upper().replace("-", "_")
print(os.environ.get(key + "_OUTPUT", ""), end="")
sys.exit(int(os.environ.get(key + "_EXIT", "0")))
"""


def run_step(tmp_path, workflow_name, job_name, step_name, expressions, stubs, environment=None, files=None):
    """One step's `run:` script under `bash --noprofile --norc -eo pipefail`, as GitHub runs
    `shell: bash`, in a workspace holding the repository's scripts (scripts/env.sh emptied)
    and the given files, with each `${{ }}` of the workflow's, job's and step's env: taken
    from expressions (others: "stub"), and each stubbed command recording its argv and
    answering from STUB_<COMMAND>_<ARGUMENT>_OUTPUT and _EXIT. (result, calls, workspace)"""
    document = workflow(workflow_name)
    job = document["jobs"][job_name]
    (step,) = [step for step in job["steps"] if step.get("name") == step_name]
    env = {**document.get("env", {}), **job.get("env", {}), **step.get("env", {})}

    def resolve(value):
        expression = re.fullmatch(r"\$\{\{\s*(.+?)\s*\}\}", str(value))
        return expressions.get(expression.group(1), "stub") if expression else str(value)

    workspace, bin_dir = tmp_path / "workspace", tmp_path / "stubs"
    (workspace / "scripts").mkdir(parents=True)
    for script in (REPO / "scripts").glob("*.py"):
        (workspace / "scripts" / script.name).write_text(script.read_text())
    (workspace / "scripts/env.sh").write_text("# stands in for the .venv setup\n")
    for name, text in (files or {}).items():
        (workspace / name).write_text(text)
    bin_dir.mkdir()
    for command in stubs:
        path = bin_dir / command
        path.write_text(STUB.format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    (workspace / "script.sh").write_text(step["run"])
    log = tmp_path / "calls.jsonl"
    log.touch()
    github = {
        "GITHUB_REPOSITORY": "owner/cifar-dvc",
        "RUNNER_TEMP": str(tmp_path / "runner-temp"),
        "GITHUB_OUTPUT": str(tmp_path / "github-output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
    }
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "script.sh"],
        cwd=workspace,
        capture_output=True,
        text=True,
        env={
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "STUB_LOG": str(log),
            **github,
            **{name: resolve(value) for name, value in env.items()},
            **(environment or {}),
        },
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return result, calls, workspace


def executed(result) -> bool:
    return "INJECTED" in (result.stdout + result.stderr).splitlines()


def test_the_training_input_reaches_dvc_and_git_as_data(tmp_path):
    expressions = {"inputs.params": INJECTION}
    stubs = ("dvc", "git", "python")
    trained, calls, _ = run_step(
        tmp_path / "train", "train.yml", "train", "Train", expressions, stubs, files={"dvc.lock": "schema: '2.0'\n"}
    )
    assert trained.returncode == 0, trained.stderr
    assert not executed(trained)
    assert calls == [
        ["dvc", "pull", "--run-cache", "--remote", "ci"],
        ["dvc", "exp", "run", "-S", "train.epochs=1", "-S", "$(echo", "-S", "INJECTED", "-S", ">&2)"],
        ["python", "scripts/push_results.py", "--remote", "ci"],
    ]
    published, calls, _ = run_step(
        tmp_path / "publish",
        "train.yml",
        "train",
        "Publish the results on a branch of their own",
        expressions,
        stubs,
        {
            "STUB_GIT_DIFF_EXIT": "1",
            "GITHUB_REF_NAME": "main",
            "GITHUB_RUN_ID": "42",
            "STUB_GIT_REV_PARSE_OUTPUT": "abc123",
        },
    )
    assert published.returncode == 0, published.stderr
    assert not executed(published)
    (commit,) = [call for call in calls if "commit" in call]
    assert commit[-2:] == ["-m", f"Train on GPU: {INJECTION}"]
    # Never the dispatched branch, which may be protected: a branch of the results' own.
    assert ["git", "push", "origin", "HEAD:refs/heads/train/main/42"] in calls
    assert (tmp_path / "publish/github-output").read_text() == "branch=train/main/42\nsha=abc123\n"


def test_training_that_changed_nothing_proposes_nothing_and_passes(tmp_path):
    result, calls, _ = run_step(
        tmp_path,
        "train.yml",
        "train",
        "Publish the results on a branch of their own",
        {"inputs.params": ""},
        ("git",),
        {"STUB_GIT_DIFF_EXIT": "0"},
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to propose" in result.stdout
    assert [call[1] for call in calls] == ["add", "diff"]
    assert not (tmp_path / "github-output").exists()  # no branch: no pull request, no check


def test_a_branch_name_reaches_the_reproduce_script_as_data(tmp_path):
    base = "main$(echo INJECTED >&2)"
    result, calls, _ = run_step(
        tmp_path,
        "reproduce.yml",
        "reproduce-from-cache",
        "Reproduce from the remote cache",
        {"inputs.base || github.base_ref": base},
        ("python",),
    )
    assert result.returncode == 0, result.stderr
    assert not executed(result)
    assert calls == [["python", "scripts/reproduce_from_cache.py", "--remote", "ci", "--base", f"origin/{base}"]]


@pytest.mark.parametrize(
    "existing, scope, outcome, plots_url",
    [
        ("", "true", "success", "https://example.com/artifact"),
        ("4242", "true", "success", ""),  # the plots diff failed
        ("4242", "true", "failure", ""),
        ("", "false", "", ""),  # no dvc.lock yet
    ],
)
def test_one_pr_comment_is_posted_then_edited_in_place_and_the_status_set(
    tmp_path, existing, scope, outcome, plots_url
):
    expressions = {
        "inputs.pr-number || github.event.pull_request.number": "7",
        "inputs.base || github.base_ref": "main",
        "inputs.ref || github.event.pull_request.head.sha": "a" * 40,
        "steps.scope.outputs.reproduce == 'false'": str(scope == "false").lower(),
        "steps.scope.outputs.reason": "this commit has no dvc.lock",
        "steps.reproduce.outcome": outcome,
        "steps.plots.outputs.artifact-url": plots_url,
    }
    diff = "### metrics diff against origin/main\n\n| Path | Metric | main | workspace |\n"
    error = (
        "error: stages would have to run, so nothing was run: train (changed deps: cifar/training/engine.py modified)"
    )
    files = {"reproduce.md": "reproduced from DVC remote 'ci'\n\n" + diff, "reproduce.err": error + "\n"}
    result, calls, workspace = run_step(
        tmp_path,
        "reproduce.yml",
        "reproduce-from-cache",
        "Report on the pull request",
        expressions,
        ("gh",),
        {"STUB_GH_API_OUTPUT": existing},
        files,
    )
    assert result.returncode == 0, result.stderr
    marker = "<!-- cifar-dvc:reproduce-from-cache -->"
    lookup, change, status = calls
    assert lookup[:4] == ["gh", "api", "--paginate", "repos/owner/cifar-dvc/issues/7/comments"]
    assert f'startswith("{marker}")' in lookup[-1]
    assert change == (
        ["gh", "api", "--method", "PATCH", "repos/owner/cifar-dvc/issues/comments/4242", "-F", "body=@comment.md"]
        if existing
        else ["gh", "api", "--method", "POST", "repos/owner/cifar-dvc/issues/7/comments", "-F", "body=@comment.md"]
    )
    assert status[:5] == ["gh", "api", "--method", "POST", f"repos/owner/cifar-dvc/statuses/{'a' * 40}"]
    assert f"state={'failure' if outcome == 'failure' else 'success'}" in status
    assert "context=cifar-dvc/reproduce" in status
    body = (workspace / "comment.md").read_text()
    assert body.startswith(marker + "\n")
    assert ("[Plots diff against main](https://example.com/artifact)" in body) == bool(plots_url)
    if scope == "false":
        assert body == f"{marker}\n**Nothing to reproduce yet:** this commit has no dvc.lock.\n"
    elif outcome == "success":
        assert diff in body
    else:
        assert f"> {error}\n" in body and "metrics diff" not in body


def test_a_sweep_job_passes_its_overrides_as_data(tmp_path):
    result, calls, _ = run_step(
        tmp_path,
        "sweep.yml",
        "experiment",
        "Run and share the experiment",
        {"matrix.name": "sweep-99-1", "matrix.overrides": INJECTION},
        ("python",),
    )
    assert result.returncode == 0, result.stderr
    assert not executed(result)
    assert calls == [
        [
            "python",
            "scripts/sweep_job.py",
            "--name",
            "sweep-99-1",
            "--dvc-remote",
            "ci",
            "--",
            "train.epochs=1",
            "$(echo",
            "INJECTED",
            ">&2)",
        ]
    ]


def script(path, cwd, *arguments, **environment):
    env = {name: value for name, value in os.environ.items() if name not in REMOTE_SETTINGS}
    return subprocess.run(
        [sys.executable, path, *arguments], cwd=cwd, env={**env, **environment}, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def sweep_repo(tmp_path_factory):
    """A clone of the pipeline with nothing run: all DVC needs to queue a sweep."""
    return make_pipeline_repo(tmp_path_factory.mktemp("sweep"), {})


def test_the_plan_is_dvcs_own_expansion_of_its_grid_syntax(sweep_repo):
    result = script(
        PLAN,
        sweep_repo,
        "--name",
        "sweep-5",
        "--",
        "model.name=custom_resnet,resnet18",
        "seed=range(0,2)",
        "train.max_lr=choice(0.01,find)",
    )
    assert result.returncode == 0, result.stderr
    matrix, names = result.stdout.splitlines()
    overrides = [entry["overrides"] for entry in json.loads(matrix.removeprefix("matrix="))["include"]]
    # Only what differs from params.yaml (seed 0, custom_resnet, find) is passed on.
    assert sorted(overrides) == sorted(
        [
            "train.max_lr=0.01",
            "",
            "seed=1 train.max_lr=0.01",
            "seed=1",
            "model.name=resnet18 train.max_lr=0.01",
            "model.name=resnet18",
            "seed=1 model.name=resnet18 train.max_lr=0.01",
            "seed=1 model.name=resnet18",
        ]
    )
    assert names == "names=" + " ".join(f"sweep-5-{number}" for number in range(1, 9))
    assert "No experiment tasks in the queue" in dvc(sweep_repo, "queue", "status").stdout


@pytest.mark.parametrize(
    "overrides, message",
    [
        ((), "nothing to sweep: give dvc exp run -S overrides, e.g. 'seed=range(0,3)'"),
        # The tracker's example, as the workflow splits it: refused by DVC before any job starts.
        (tuple(INJECTION.split()), "DVC refused the sweep: "),
    ],
)
def test_the_plan_refuses_bad_input_in_one_line(sweep_repo, overrides, message):
    result = script(PLAN, sweep_repo, "--name", "sweep-5", "--", *overrides)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}") and len(result.stderr.splitlines()) == 1
    assert result.stdout == "" and "INJECTED" not in result.stderr.replace(INJECTION, "")


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {},
            "secret DVC_REMOTE_URL is not set (Settings > Secrets and variables > Actions), e.g. s3://bucket/cifar-dvc",
        ),
        (
            {"DVC_REMOTE_URL": "azure://container/path"},
            "DVC_REMOTE_URL has scheme 'azure'; these workflows wire credentials for s3://, gs://, ssh:// remotes "
            "and directories (an absolute path) only",
        ),
        (
            {"DVC_REMOTE_URL": "s3://bucket/path", "AWS_ACCESS_KEY_ID": "id"},
            "DVC_REMOTE_URL (s3://...) needs secrets that are not set: AWS_SECRET_ACCESS_KEY",
        ),
        (
            {"DVC_REMOTE_URL": "gs://bucket/path", "GOOGLE_APPLICATION_CREDENTIALS_JSON": "{}", "DVC_EXTRAS": "s3"},
            "DVC_REMOTE_URL (gs://...) needs dvc's gs extra but DVC_EXTRAS is 's3': set it to gs",
        ),
        (
            {"DVC_REMOTE_URL": "ssh://host/path", "SSH_PRIVATE_KEY": "key"},
            "DVC_REMOTE_URL (ssh://...) needs secrets that are not set: SSH_KNOWN_HOSTS",
        ),
        (
            {
                "DVC_REMOTE_URL": "ssh://host/path",
                "SSH_PRIVATE_KEY": "key",
                "SSH_KNOWN_HOSTS": "host ssh-ed25519 AAAA",
                "DVC_EXTRAS": "ssh]; echo",
            },
            "repository variable DVC_EXTRAS is 'ssh]; echo': give pip extras of dvc, e.g. s3 or gs,ssh",
        ),
    ],
)
def test_check_remote_names_the_missing_setting_in_one_line(tmp_path, settings, message):
    result = script(CI_SETUP, tmp_path, "check-remote", **settings)
    assert (result.returncode, result.stderr) == (2, f"error: {message}\n")


def test_a_directory_remote_needs_no_credentials_and_no_extra(tmp_path):
    result = script(CI_SETUP, tmp_path, "check-remote", DVC_REMOTE_URL="/srv/dvc-cache/cifar-dvc", DVC_EXTRAS="s3")
    assert (result.returncode, result.stdout, result.stderr) == (0, "DVC remote: a directory, credentials set\n", "")


def test_add_remote_points_dvc_at_owner_only_key_files_and_keeps_s3_keys_in_the_environment(tmp_path):
    repo, keys, home = tmp_path / "repo", tmp_path / "runner-temp", tmp_path / "home"
    repo.mkdir()
    run(repo, "git", "init", "-q")
    dvc(repo, "init", "-q")

    def add_remote(**settings):
        result = script(CI_SETUP, repo, "add-remote", "--credentials-dir", str(keys), HOME=str(home), **settings)
        assert result.returncode == 0, result.stderr
        config = (repo / ".dvc/config.local").read_text()
        assert f"url = {settings['DVC_REMOTE_URL']}" in config
        return config

    gs_key = '{"type": "service_account"}'
    config = add_remote(DVC_REMOTE_URL="gs://bucket/path", DVC_EXTRAS="gs", GOOGLE_APPLICATION_CREDENTIALS_JSON=gs_key)
    assert f"credentialpath = {keys / 'gcs-credentials.json'}" in config
    assert (keys / "gcs-credentials.json").read_text() == gs_key + "\n"

    host_key = "host.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA"
    for _ in range(2):
        config = add_remote(
            DVC_REMOTE_URL="ssh://host.example/srv/dvc",
            DVC_EXTRAS="s3,ssh",
            SSH_PRIVATE_KEY="-----BEGIN KEY-----",
            SSH_KNOWN_HOSTS=host_key,
        )
    assert f"keyfile = {keys / 'ssh-private-key'}" in config
    assert (keys / "ssh-private-key").read_text() == "-----BEGIN KEY-----\n"
    assert (home / ".ssh/known_hosts").read_text() == host_key + "\n"
    for path in (keys / "gcs-credentials.json", keys / "ssh-private-key", home / ".ssh/known_hosts"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    config = add_remote(
        DVC_REMOTE_URL="s3://bucket/path", DVC_EXTRAS="s3", AWS_ACCESS_KEY_ID="id", AWS_SECRET_ACCESS_KEY="key"
    )
    assert config == "['remote \"ci\"']\n    url = s3://bucket/path\n"


def test_require_cuda_refuses_a_runner_without_a_gpu(tmp_path):
    result = script(CI_SETUP, tmp_path, "require-cuda", CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 2
    assert re.fullmatch(
        r"error: torch \S+ sees no CUDA GPU: this job trains and must run on a GPU runner .*; nothing was trained\n",
        result.stderr,
    )


@pytest.mark.full
def test_two_sweep_jobs_share_their_experiments_and_collect_gathers_both(published, tmp_path):
    origin, _ = published
    git_remote = tmp_path / "origin.git"
    run(tmp_path, "git", "init", "-q", "--bare", "--initial-branch=main", str(git_remote))
    run(origin, "git", "push", "-q", str(git_remote), "HEAD:refs/heads/main")
    # Overrides that only re-run cheap stages; the run cache restores the rest. (figures reads
    # evaluate's metrics, which name a flip-TTA accuracy only with evaluate.tta.)
    jobs = {"sweep-7-1": ("evaluate.tta=true", ["evaluate", "figures"]), "sweep-7-2": ("explain.images=2", ["explain"])}
    for name, (override, stages) in jobs.items():
        job = tmp_path / name
        run(tmp_path, "git", "clone", "-q", str(git_remote), str(job))
        result = run(job, sys.executable, SWEEP_JOB, "--name", name, "--", override, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.findall(r"Running stage '(\w+)'", result.stdout + result.stderr) == stages
        assert f"shared experiment {name}" in result.stdout
    refs = run(git_remote, "git", "for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    assert sorted(ref.rsplit("/", 1)[-1] for ref in refs) == sorted(jobs)

    collector = tmp_path / "collect"
    run(tmp_path, "git", "clone", "-q", str(git_remote), str(collector))
    result = run(collector, sys.executable, SWEEP_COLLECT, "--plots-out", str(tmp_path / "plots"), *jobs, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = result.stdout
    assert "| experiment | evaluate.tta | explain.images | accuracy | test_accuracy | seconds_per_epoch |" in report
    evaluate = json.loads((origin / paths.EVALUATE_METRICS).read_text())
    train = json.loads((origin / paths.TRAIN_METRICS).read_text())
    speed = json.loads((origin / paths.SPEED_METRICS).read_text())
    metrics = f"{evaluate['accuracy']:.4g} | {train['test_accuracy']:.4g} | {speed['seconds_per_epoch']:.4g} |"
    # Neither override changes the model: every row holds the baseline's metrics.
    assert f"| sweep-7-1 | true | 10 | {metrics}" in report
    assert f"| sweep-7-2 | false | 2 | {metrics}" in report
    tta_section = report.split("### metrics diff: sweep-7-1 against the baseline")[1].split("###")[0]
    assert "flip_tta_accuracy" in tta_section
    assert "### metrics diff: sweep-7-2 against the baseline\n\nno metric changed" in report
    assert (tmp_path / "plots/index.html").is_file()

    result = run(collector, sys.executable, SWEEP_COLLECT, *jobs, "sweep-7-3", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: experiments not on git remote 'origin': sweep-7-3 (")
    assert len(result.stderr.splitlines()) == 1 and "| sweep-7-2 |" in result.stdout
