"""A virtual environment with the `cifar` package installed from a copy of this checkout, as
`pip install .` leaves a notebook's environment."""

import subprocess
import sys
import sysconfig
from pathlib import Path

from pipeline_repo import copy_from_checkout

# What `pip install .` reads: the build settings, the pins it installs, the package.
PACKAGE_FILES = ("pyproject.toml", "requirements-stages.txt", "README.md", "cifar")


def installable_copy(folder: Path) -> Path:
    """The package's files copied to folder: pip builds in the source tree, never in the checkout."""
    return copy_from_checkout(folder, PACKAGE_FILES)


def environment_with_package(folder: Path, source: Path) -> Path:
    """A new virtual environment in folder with `pip install source` done; its python.

    The dependencies are the pinned ones of this interpreter's environment, seen through a
    .pth line rather than installed again (gigabytes of torch), so only the package is new."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True)
    python = folder / "bin/python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            source,
        ],
        check=True,
        capture_output=True,
    )
    return python
