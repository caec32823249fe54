"""scripts/mutation.sh's settings in pyproject.toml name code and tests that exist, so a moved
module or test file fails here rather than scoring nothing."""

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOL = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]


def test_every_mutated_module_and_selected_test_file_exists():
    mutmut = TOOL["mutmut"]
    for path in mutmut["only_mutate"]:
        assert (REPO / path).is_file(), path
        assert any(path.startswith(f"{source}/") for source in mutmut["source_paths"]), (
            f"{path} is outside source_paths"
        )
    for path in mutmut["pytest_add_cli_args_test_selection"]:
        assert (REPO / path).is_file(), path


def test_every_scored_function_is_defined_in_its_module():
    for path, functions in TOOL["mutation"]["functions"].items():
        assert path in TOOL["mutmut"]["only_mutate"], path
        tree = ast.parse((REPO / path).read_text())
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert set(functions) <= defined, f"{path} defines none of {sorted(set(functions) - defined)}"


def test_a_module_that_is_not_mutated_is_refused_with_the_fix():
    result = subprocess.run(
        [sys.executable, "scripts/mutation.py", "cifar/nowhere.py"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"mutation.py: error: cifar/nowhere.py is not mutated; name one of {', '.join(TOOL['mutmut']['only_mutate'])} "
        "or add it to [tool.mutmut] only_mutate in pyproject.toml"
    )


# Collects the tests mutmut selects, as mutmut does (its extra arguments last), and prints each
# test's name and whether it uses the repro fixture, which runs the whole DVC pipeline.
COLLECT_AS_MUTMUT = """
import json, sys, pytest
class Record:
    selected, deselected = {}, {}
    def pytest_collection_modifyitems(self, items):
        Record.selected = {item.nodeid: "repro" in item.fixturenames for item in items}
    def pytest_deselected(self, items):
        Record.deselected |= {item.nodeid: "repro" in item.fixturenames for item in items}
pytest.main(sys.argv[1:], plugins=[Record()])
print(json.dumps([{k: v for k, v in Record.selected.items() if k not in Record.deselected}, Record.deselected]))
"""


def test_no_test_that_runs_the_dvc_pipeline_is_run_against_mutants():
    mutmut = TOOL["mutmut"]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            COLLECT_AS_MUTMUT,
            "--collect-only",
            "-qq",
            "-p",
            "no:cacheprovider",
            *mutmut["pytest_add_cli_args_test_selection"],
            *mutmut["pytest_add_cli_args"],
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    selected, deselected = json.loads(result.stdout.splitlines()[-1])
    assert selected, result.stdout + result.stderr
    assert not [test for test, runs_pipeline in selected.items() if runs_pipeline]
    # Left out by mutmut's arguments, not by chance: the selected files do hold such tests.
    assert any(deselected.values())
