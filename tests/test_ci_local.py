"""The workflows run whole: scripts/ci_local.sh, the command docs/ci.md gives, plays every
scenario with nektos/act on this machine against a real SSH remote, and each outcome and
each comment the GitHub API stand-in received is checked here."""

import json
import subprocess

import pytest

from pipeline_repo import REPO
from stages import paths

SCENARIOS = ("c1", "c2", "d1", "d2", "e", "a", "b", "f")


@pytest.fixture(scope="module")
def local_ci(tmp_path_factory):
    work = tmp_path_factory.mktemp("ci-local")
    result = subprocess.run([REPO / "scripts/ci_local.sh", "--work", work], capture_output=True, text=True)
    (work / "ci_local.out").write_text(result.stdout + result.stderr)  # to read after the run
    report = json.loads((work / "report.json").read_text()) if (work / "report.json").exists() else None
    return result, report


pytestmark = pytest.mark.full


def test_every_scenario_ends_as_expected_and_the_table_says_so(local_ci):
    result, report = local_ci
    assert report, result.stdout + result.stderr
    failed = {name: outcome for name, outcome in report["scenarios"].items() if not outcome["as_expected"]}
    assert (result.returncode, list(report["scenarios"]), failed) == (0, list(SCENARIOS), {}), result.stdout[-4000:]
    table = result.stdout.split("\nscenario ")[1]
    for name in SCENARIOS:
        assert f"\n{name:9} as expected" in table


def test_no_results_yet_passes_with_an_explanation_not_a_failure(local_ci):
    _, report = local_ci
    fork, fresh = report["scenarios"]["c1"], report["scenarios"]["c2"]
    assert fork["jobs"] == fresh["jobs"] == {"reproduce/reproduce-from-cache": "success"}
    # A fork's token may not post: nothing was sent about pull request 1.
    assert not [request for request in report["requests"] if "/issues/1/" in request["path"]]
    (comment,) = fresh["comments"]
    assert comment.startswith(
        "<!-- cifar-dvc:reproduce-from-cache -->\n**Nothing to reproduce yet:** this commit has no dvc.lock"
    )
    # Nothing was installed: the job stopped after deciding there was nothing to do.
    assert not [step for step in fresh["steps"] if step["step"] == "Install dvc with the remote's extra"]


def test_the_second_dispatch_reuses_the_runner_and_resumes_the_killed_run(local_ci):
    _, report = local_ci
    first, second = report["scenarios"]["d1"], report["scenarios"]["d2"]
    assert first["checks"] == {"killed after its first checkpoint": True}
    assert second["checks"]["resumed from the checkpoint"]
    assert second["install_seconds"] <= 0.1 * first["install_seconds"], (
        first["install_seconds"],
        second["install_seconds"],
    )


def test_results_reach_a_protected_branch_through_a_pull_request_that_is_checked(local_ci):
    _, report = local_ci
    proposed = report["scenarios"]["e"]
    assert proposed["checks"]["protected main untouched"] and proposed["branch"].startswith("train/main/")
    (opened,) = [request for request in report["requests"] if request["path"].endswith("/pulls")]
    assert (opened["status"], opened["body"]["head"], opened["body"]["base"]) == (201, proposed["branch"], "main")
    statuses = [status for status in report["statuses"] if status["context"] == "cifar-dvc/reproduce"]
    assert [status["state"] for status in statuses] == ["success", "success", "success", "failure"]


def test_one_comment_carries_the_diffs_then_names_what_is_missing_from_the_remote(local_ci):
    _, report = local_ci
    green, missing = report["scenarios"]["a"], report["scenarios"]["b"]
    number = green["pull_request"]
    (reproduced,) = green["comments"]
    assert "### metrics diff against origin/main" in reproduced and "### params diff against origin/main" in reproduced
    assert "evaluate.tta" in reproduced.split("### params diff")[1]  # the dispatch's override
    (failed,) = missing["comments"]
    assert "**Not reproduced from the DVC remote; nothing was trained:**" in failed and paths.MODEL in failed
    # The remote's URL is a secret: named, never written out.
    assert report["work"] not in failed
    writes = [
        request["method"]
        for request in report["requests"]
        if f"/issues/{number}/" in request["path"] or request["method"] == "PATCH"
    ]
    assert writes.count("POST") == 1 and writes.count("PATCH") == 2
    assert missing["checks"]["nothing ran"]


def test_the_sweep_collects_both_experiments_of_the_grid(local_ci):
    _, report = local_ci
    sweep = report["scenarios"]["f"]
    assert sweep["jobs"]["sweep/plan"] == sweep["jobs"]["sweep/collect"] == "success"
    assert sweep["report"].startswith("## Sweep: 2 experiments on baseline")
    for misclassified in (4, 8):
        assert f"| {misclassified} |" in sweep["report"]
