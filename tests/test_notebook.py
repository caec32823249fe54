"""README's notebook block runs as written, at a tiny size, so the documented calls cannot drift."""

import subprocess
import sys

import yaml

from installed import environment_with_package, installable_copy
from pipeline_repo import REPO, default_params, merge

# A few hundred synthetic images, two short epochs on the CPU, a ten-step range test.
TINY = {
    "data": {"source": "synthetic", "train_limit": 200, "test_limit": 100},
    "lr_find": {"num_iter": 10, "end_lr": 0.003},
    "train": {"epochs": 2, "batch_size": 50, "onecycle": {"max_at_epoch": 1}, "device": "cpu"},
}


def readme_notebook_block() -> str:
    section = (REPO / "README.md").read_text().split("## Use the library from a notebook", 1)[1]
    return section.split("```python", 1)[1].split("```", 1)[0]


def test_readme_shows_the_five_calls():
    lines = [line for line in readme_notebook_block().splitlines() if line.strip()]
    assert lines[0] == "import cifar" and len(lines[1:]) == 5
    assert [line.split(" = ")[0] for line in lines[1:]] == ["params", "data", "result", "report", "maps"]


# Run after README's block, in its namespace: what the five calls must have returned.
CHECKS = """
assert (len(data.train), len(data.test)) == (200, 100)
assert result.history["epoch"].tolist() == [1, 2] and len(result.step_lrs) == 2 * 200 // 50
assert 0 < result.max_lr <= 0.003, "the range test's pick, within its range"
assert report.metrics()["accuracy"] == report.accuracy and len(report.predicted) == 100
assert report.per_class(data.test.classes)["images"].sum() == 100
assert maps.shape == (10, 32, 32) and maps.min() >= 0 and maps.max() <= 1
assert not any(module._forward_hooks for module in result.model.modules()), "Grad-CAM hooks were left behind"
print(cifar.__file__)
"""


def test_readme_notebook_block_runs_as_written_at_a_tiny_size_with_the_package_installed(tmp_path):
    """`pip install .` then README's block, in a folder outside the checkout, as in Colab."""
    python = environment_with_package(tmp_path / "venv", installable_copy(tmp_path / "source"))
    notebook = tmp_path / "notebook"
    notebook.mkdir()
    (notebook / "params.yaml").write_text(yaml.safe_dump(merge(default_params(), TINY), sort_keys=False))
    result = subprocess.run(
        [python, "-c", readme_notebook_block() + CHECKS], cwd=notebook, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().startswith(str(tmp_path / "venv")), "cifar came from the installed package"
    assert list(notebook.iterdir()) == [notebook / "params.yaml"], "the notebook calls write no files"


def test_importing_the_package_loads_nothing_heavy():
    """Every stage imports `cifar`; the notebook calls (and torch with them) load on first use."""
    code = (
        "import sys, cifar; assert 'torch' not in sys.modules and 'cifar.notebook' not in sys.modules; "
        "assert cifar.Params is __import__('cifar.notebook').notebook.Params; "
        "assert not hasattr(cifar, 'no_such_call')"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
