"""bench/benchmark.py runs anywhere: on a tiny CPU subset it prints the full table."""

import ast
import re
import subprocess
import sys

import pytest

from bench.benchmark import airbench_log, measured, training_flops_per_image
from cifar.config import ModelConfig
from cifar.dataset import save_dataset
from cifar.ingest.sources import synthetic_split
from code_graph import declared_options
from pipeline_repo import REPO

COLUMNS = [
    "approach",
    "model",
    "device",
    "s/epoch",
    "images/s",
    "TFLOP/s",
    "s to acc",
    "peak GPU GiB",
    "test acc",
    "ours/reference",
    "ours/airbench",
    "note",
]
AIRBENCH_LOG = """|  run     |  epoch  |  train_loss  |  train_acc  |  val_acc  |  tta_val_acc  |  total_time_seconds  |
|      0  |      0  |      1.2000  |     0.5000  |   0.6000  |               |              0.5000  |
|         |      1  |      0.9000  |     0.7000  |   0.8000  |               |              0.8000  |
|         |      2  |      0.7000  |     0.8000  |   0.9000  |               |              1.1500  |
|         |   eval  |              |             |   0.9300  |       0.9400  |              1.2500  |
"""


def test_airbench_row_takes_its_own_training_time_and_tta_accuracy():
    assert airbench_log(AIRBENCH_LOG) == ([0.5, 0.8, 1.15], 0.94)


def test_a_failing_row_is_reported_not_raised():
    def fails():
        raise ModuleNotFoundError("No module named 'airbench'")

    row = measured(fails, "airbench94", "airbench94")
    assert row.seconds_per_epoch is None and row.note == "failed: ModuleNotFoundError: No module named 'airbench'"


def test_flops_of_a_training_step_are_counted_once_per_model():
    # 3x the forward pass: about 0.4 GFLOP forward for the custom ResNet at 32x32.
    assert 1e9 < training_flops_per_image(ModelConfig("custom_resnet")) < 5e9


@pytest.mark.full
def test_benchmark_prints_every_column_and_row_on_cpu(tmp_path):
    save_dataset({"train": synthetic_split(64, 0), "test": synthetic_split(40, 1)}, tmp_path / "cifar10")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.benchmark",
            "--data",
            str(tmp_path / "cifar10"),
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--batch-size",
            "32",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == COLUMNS
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [(row[0], row[1]) for row in rows] == [
        ("airbench94", "airbench94"),
        ("reference", "custom_resnet"),
        ("ours", "custom_resnet"),
        ("reference", "resnet18"),
        ("ours", "resnet18"),
    ]
    for row in rows[1:]:
        assert row[2].startswith("cpu") and float(row[3]) > 0 and float(row[4]) > 0 and float(row[5]) > 0
        assert row[7] == "n/a" and 0 <= float(row[8]) <= 1  # no GPU memory on a CPU
    assert rows[2][9].endswith("x") and rows[4][9].endswith("x") and rows[2][10] == "n/a"
    assert "needs CUDA" in rows[0][11]
    assert "64 training images" in result.stdout


def test_the_documented_epochs_default_is_the_code_default():
    source = REPO / "bench" / "benchmark.py"
    declaration = declared_options(source)["--epochs"]
    default = next(ast.literal_eval(keyword.value) for keyword in declaration.keywords if keyword.arg == "default")
    documented = re.compile(r"`--epochs`[^.()]*\(default (\d+)\)")
    page = (REPO / "docs" / "performance.md").read_text().split("## The benchmark", 1)[1]
    assert [int(n) for n in documented.findall(ast.get_docstring(ast.parse(source.read_text())))] == [default]
    assert [int(n) for n in documented.findall(page)] == [default]
