"""The parts of DVC's Python code the tests and CI call directly: `dvc exp run -S`'s override
writer, `dvc exp run --queue`'s sweep expansion, DVC's argument parser, its YAML reader
(which `dvc params diff` and the run cache use) and its reading of dvc.yaml with the paths
table filled in. They are not
DVC's public API, so they are imported here alone; tests/test_dvc_upstream.py pins the DVC
version they were checked on.

    python tests/dvc_internals.py params.yaml KEY=VALUE ...   # set params as `-S` does
"""

import sys
from pathlib import Path

from dvc.cli import DvcParserError, parse_args
from dvc.dvcfile import load_file
from dvc.repo import Repo
from dvc.utils.hydra import apply_overrides, get_hydra_sweeps
from dvc.utils.serialize import parse_yaml

__all__ = ["DvcParserError", "apply_overrides", "get_hydra_sweeps", "parse_args", "parse_yaml", "resolved_pipeline"]


REPO = Path(__file__).resolve().parents[1]


def resolved_pipeline(root: Path = REPO) -> dict:
    """dvc.yaml as DVC reads it, `${paths.NAME}` filled in from its paths table: `stages`,
    `plots` (the top-level charts) and `artifacts`."""
    with Repo(str(root)) as repo:
        resolver = load_file(repo, "dvc.yaml").resolver
        return {
            "stages": resolver.resolve()["stages"],
            "plots": resolver.resolve_plots(),
            "artifacts": resolver.resolve_artifacts(),
        }


if __name__ == "__main__":
    apply_overrides(sys.argv[1], sys.argv[2:])
