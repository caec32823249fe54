"""dvc.yaml's deps are honest: each stage lists exactly the cifar/ modules its script imports."""

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
sys.path.insert(0, "stages")
runpy.run_path(sys.argv[1], run_name="imported_by_test")
print(json.dumps(sorted(
    m.__file__ for name, m in list(sys.modules.items())
    if name.split(".")[0] in ("cifar", "paths") and getattr(m, "__file__", None)
)))
"""


def as_dep(path: Path) -> str:
    """How dvc.yaml names a module: cifar/models/* as the folder, the rest as files."""
    relative = path.resolve().relative_to(REPO).as_posix()
    return "cifar/models" if relative.startswith("cifar/models/") else relative


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_its_script_and_the_modules_it_imports(stage):
    definition = STAGES[stage]
    script = definition["cmd"].split()[-1]
    listed = subprocess.run(
        [sys.executable, "-c", LIST_IMPORTS, script], cwd=REPO, capture_output=True, text=True, check=True
    )
    imported = {as_dep(Path(p)) for p in json.loads(listed.stdout.splitlines()[-1])} - {"cifar/__init__.py"}
    code_deps = {d for d in definition["deps"] if d.startswith(("cifar", "stages"))}
    assert code_deps == imported | {script}
