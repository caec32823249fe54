"""The parts of DVC's Python code the tests and CI call directly: `dvc exp run -S`'s override
writer, `dvc exp run --queue`'s sweep expansion, DVC's argument parser, and its YAML reader
(which `dvc params diff` and the run cache use). They are not
DVC's public API, so they are imported here alone; tests/test_dvc_upstream.py pins the DVC
version they were checked on.

    python tests/dvc_internals.py params.yaml KEY=VALUE ...   # set params as `-S` does
"""

import sys

from dvc.cli import DvcParserError, parse_args
from dvc.utils.hydra import apply_overrides, get_hydra_sweeps
from dvc.utils.serialize import parse_yaml

__all__ = ["DvcParserError", "apply_overrides", "get_hydra_sweeps", "parse_args", "parse_yaml"]

if __name__ == "__main__":
    apply_overrides(sys.argv[1], sys.argv[2:])
