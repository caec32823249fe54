"""README's CPU figures come from `python -m bench.cpu_run`: README's recipe is the one it runs,
its numbers and pictures are the ones in docs/cpu-run/ (results.json and the PNGs), and
the stage timing it records follows DVC's log."""

import json
import re
import shlex
import sys

from bench.cpu_run import FIGURES, RESULTS, recipe_command, run_logging_stage_times
from pipeline_repo import REPO

README = (REPO / "README.md").read_text()
RUN = REPO / "docs" / "cpu-run"


def section(title: str) -> str:
    return README.split(f"\n{title}\n", 1)[1].split("\n#", 1)[0]


def test_readmes_cpu_recipe_is_the_one_cpu_run_runs():
    block = section("### On a CPU").split("```bash\n", 1)[1].split("```", 1)[0]
    assert shlex.split(block.replace("\\\n", " ")) == recipe_command("/path/to/cifar10-jpeg.tar.xz")
    assert json.loads((RUN / RESULTS).read_text())["command"] == shlex.join(
        recipe_command("/path/to/cifar10-jpeg.tar.xz")
    )


def test_readmes_cpu_numbers_quote_the_results_file():
    results = json.loads((RUN / RESULTS).read_text())
    text = " ".join(section("### On a CPU").split())
    accuracies = [f"{value:.3f}" for value in results["test_accuracy_by_epoch"]]
    quoted = [
        f"Measured {results['date']}",
        f"{results['machine']['cores']}-core {results['machine']['cpu']}",
        f"load average {results['machine']['load_average_before']} before and "
        f"{results['machine']['load_average_after']} after",
        f"{round(results['seconds']['total'])} s for all six stages",
        f"lr_find picked {results['lr_find']['max_lr']:.3g} (`{results['lr_find']['pick']}`)",
        "test accuracy by epoch " + ", ".join(accuracies[:-1]) + f", **{accuracies[-1]}**",
        f"torch {results['torch']}",
    ]
    for fragment in quoted:
        assert fragment in text, fragment


def test_readme_shows_exactly_the_pictures_cpu_run_writes():
    shown = set(re.findall(r"\(docs/cpu-run/([\w.]+\.png)\)", README))
    written = {figure.rsplit("/", 1)[1] for figure in FIGURES}
    assert shown == written
    assert all((RUN / name).is_file() for name in written)


def test_stage_seconds_run_from_each_running_stage_line_to_the_next(capsys):
    script = (
        "print(\"Running stage 'download':\"); print('> python -m stages.download'); print(\"Running stage 'train':\")"
    )
    seconds = run_logging_stage_times([sys.executable, "-c", script], REPO)
    assert list(seconds) == ["download", "train", "total"]
    assert seconds["total"] >= seconds["download"] + seconds["train"] - 0.1
    assert "> python -m stages.download" in capsys.readouterr().out
