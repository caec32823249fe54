"""`python -m stages` names no stage: say how to run one, not Python's "No module named
stages.__main__"."""

import sys

print(
    "error: `python -m stages` runs no stage; run one as `python -m stages.NAME` (NAME a stage in dvc.yaml: "
    "download, train, ...), or the whole pipeline with `dvc repro`",
    file=sys.stderr,
)
sys.exit(2)
