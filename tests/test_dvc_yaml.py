"""dvc.yaml is honest: deps are exactly what each stage imports, outputs are where the stages
write (stages/paths.py), and every stage can use DVC's run cache. README's pipeline table
and the tests name the paths of stages/paths.py too, so none of them can drift."""

import ast
import fnmatch
import itertools
import re
import sys

import pytest
import yaml

from code_graph import MODULES, REPO, reachable

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
sys.path.insert(0, str(REPO))
from stages import paths  # noqa: E402

# The stages' outputs: every path they name but the params they read, the download cache
# and the resume checkpoint (scratch, never an output).
OUTPUTS = {
    value for name, value in vars(paths).items()
    if name.isupper() and name not in ("PARAMS", "DOWNLOAD_CACHE", "CHECKPOINT")
}

def declared(definition: dict, kind: str) -> dict[str, dict]:
    """A stage's outs, metrics or plots as {path: options}."""
    entries = {}
    for entry in definition.get(kind, []):
        path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
        entries[path] = options or {}
    return entries


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_its_script_and_the_modules_it_imports(stage):
    definition = STAGES[stage]
    module = definition["cmd"].split()[-1]
    assert definition["cmd"] == f"python -m {module}"
    # cifar/__init__.py only loads the notebook front end on attribute access, which no
    # stage makes; every other import counts, at a module's top or inside a function.
    imported = reachable(module, skip=frozenset({"cifar"}))
    code_deps = {d for d in definition["deps"] if d.startswith(("cifar", "stages"))}
    assert code_deps == {MODULES[name].relative_to(REPO).as_posix() for name in imported}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_uncached_output_is_a_metric_or_plot_so_the_run_cache_works(stage):
    """DVC skips the run cache for a stage with a `cache: false` out that is not a metric or
    plot, and for one with a `persist` out."""
    outs = declared(STAGES[stage], "outs")
    assert all(options.get("cache", True) and not options.get("persist") for options in outs.values()), outs


def test_dvc_yaml_declares_exactly_the_paths_the_stages_write():
    outputs = {
        path for definition in STAGES.values() for kind in ("outs", "metrics", "plots") for path in declared(definition, kind)
    }
    assert outputs == OUTPUTS


def readme_pipeline_paths() -> list[str]:
    """The paths README's pipeline table names, braces expanded: `a/{b,c}.x` is a/b.x, a/c.x."""
    table = (REPO / "README.md").read_text().split("## The pipeline", 1)[1].split("```", 2)[1]
    named = []
    for line in table.splitlines():
        words = line.split()
        if "->" in words:
            named.append(words[words.index("->") + 1])
        elif line.startswith(" ") and words and "/" in words[0]:
            named.append(words[0])
    expanded = []
    for path in named:
        parts = re.split(r"\{([^}]*)\}", path)
        choices = [[part] if index % 2 == 0 else part.split(",") for index, part in enumerate(parts)]
        expanded += ["".join(pieces) for pieces in itertools.product(*choices)]
    return expanded


def names_output(named: str, output: str) -> bool:
    """README names an output by its path, a pattern matching it, or a file inside it."""
    return named == output or fnmatch.fnmatch(output, named) or named.startswith(output + "/")


def test_readme_pipeline_table_names_exactly_the_stages_outputs():
    named = readme_pipeline_paths()
    assert len(named) > len(STAGES)
    assert [path for path in named if not any(names_output(path, output) for output in OUTPUTS)] == []
    assert sorted(output for output in OUTPUTS if not any(names_output(path, output) for path in named)) == []


def test_tests_take_the_stages_paths_from_stages_paths():
    """A test that spells out a path of stages/paths.py (alone or in a message) would miss its
    move; params.yaml is exempt, as tests write their own params files by that name."""
    named = {value: name for name, value in vars(paths).items() if name.isupper() and name != "PARAMS"}
    spelled = re.compile("|".join(rf"(?<![\w/.]){re.escape(value)}(?![\w.])" for value in named))
    found = []
    for test_file in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(test_file.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and spelled.search(node.value):
                found.append(f"{test_file.name}:{node.lineno}: {spelled.search(node.value).group()}")
    assert not found, "spelled out instead of paths.NAME:\n" + "\n".join(found)


def test_resume_checkpoints_are_ignored_by_git_and_dvc():
    folder = "/" + paths.CHECKPOINT.split("/")[0] + "/"
    assert folder in (REPO / ".gitignore").read_text().splitlines()
    assert folder in (REPO / ".dvcignore").read_text().splitlines()
