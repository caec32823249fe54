"""bench/benchmark.py runs anywhere: on a tiny CPU subset it prints the full table."""

import subprocess
import sys

import pytest

from cifar.dataset import save_dataset
from cifar.sources import synthetic_split
from pipeline_repo import REPO

COLUMNS = ["approach", "model", "device", "s/epoch", "images/s", "peak GPU GiB", "test acc",
           "ours/reference", "ours/airbench", "note"]


@pytest.mark.full
def test_benchmark_prints_every_column_and_row_on_cpu(tmp_path):
    save_dataset({"train": synthetic_split(64, 0), "test": synthetic_split(40, 1)}, tmp_path / "cifar10")
    result = subprocess.run(
        [sys.executable, "-m", "bench.benchmark", "--data", str(tmp_path / "cifar10"),
         "--device", "cpu", "--epochs", "1", "--batch-size", "32"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == COLUMNS
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [(row[0], row[1]) for row in rows] == [
        ("ours", "custom_resnet"), ("reference", "custom_resnet"),
        ("ours", "resnet18"), ("reference", "resnet18"), ("airbench94", "airbench94"),
    ]
    for row in rows[:4]:
        assert row[2].startswith("cpu") and float(row[3]) > 0 and float(row[4]) > 0 and 0 <= float(row[6]) <= 1
        assert row[5] == "n/a"  # no GPU memory on a CPU
    assert rows[0][7].endswith("x") and rows[2][7].endswith("x")
    assert "needs CUDA" in rows[4][9]
    assert "64 training images" in result.stdout
