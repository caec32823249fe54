"""The code's style: `ruff check` and `ruff format --check` pass on the whole checkout, with
the settings in pyproject.toml and the ruff that requirements.txt pins."""

import subprocess
import sys

import pytest

from code_graph import REPO


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_reports_nothing(command):
    # --no-cache: ruff would otherwise write .ruff_cache/ into the checkout.
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache", "."], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, f"ruff {' '.join(command)}:\n{result.stdout}{result.stderr}"
