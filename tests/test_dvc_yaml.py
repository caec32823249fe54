"""dvc.yaml is honest: deps are exactly what each stage imports, outputs are where the stages
write (stages/paths.py), and every stage can use DVC's run cache."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

LIST_IMPORTS = """
import json, runpy, sys
runpy.run_module(sys.argv[1], run_name="imported_by_test")
print(json.dumps(sorted(
    m.__file__ for name, m in list(sys.modules.items())
    if name.split(".")[0] in ("cifar", "stages") and getattr(m, "__file__", None)
)))
"""


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
    listed = subprocess.run(
        [sys.executable, "-c", LIST_IMPORTS, module], cwd=REPO, capture_output=True, text=True, check=True
    )
    imported = {Path(p).resolve().relative_to(REPO).as_posix() for p in json.loads(listed.stdout.splitlines()[-1])}
    code_deps = {d for d in definition["deps"] if d.startswith(("cifar", "stages"))}
    script = module.replace(".", "/") + ".py"  # runpy runs it under another name
    assert code_deps == (imported | {script}) - {"cifar/__init__.py"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_uncached_output_is_a_metric_or_plot_so_the_run_cache_works(stage):
    """DVC skips the run cache for a stage with a `cache: false` out that is not a metric or
    plot, and for one with a `persist` out."""
    outs = declared(STAGES[stage], "outs")
    assert all(options.get("cache", True) and not options.get("persist") for options in outs.values()), outs


def test_dvc_yaml_declares_exactly_the_paths_the_stages_write():
    sys.path.insert(0, str(REPO))
    from stages import paths

    written = {
        value for name, value in vars(paths).items()
        if name.isupper() and name not in ("PARAMS", "DATA", "DOWNLOAD_CACHE", "CHECKPOINT")
    } | {paths.DATA}
    outputs = {
        path for definition in STAGES.values() for kind in ("outs", "metrics", "plots") for path in declared(definition, kind)
    }
    assert outputs == written


def test_resume_checkpoints_are_ignored_by_git_and_dvc():
    from stages import paths

    folder = "/" + paths.CHECKPOINT.split("/")[0] + "/"
    assert folder in (REPO / ".gitignore").read_text().splitlines()
    assert folder in (REPO / ".dvcignore").read_text().splitlines()
