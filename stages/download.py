"""download: CIFAR-10 from data.source (official | local path | synthetic) into data/cifar10/."""

if not __package__:  # `python stages/download.py` leaves the repository root, and cifar/, off sys.path
    raise SystemExit("error: run it from the repository root as `python -m stages.download` (or `dvc repro download`)")

import logging
from pathlib import Path

from cifar.cli import run_stage, workspace_copied
from cifar.config import load_params
from cifar.dataset import refuse_to_replace_what_it_did_not_write, save_dataset
from cifar.ingest.sources import import_dataset
from stages import paths

log = logging.getLogger("download")


def main() -> None:
    params = load_params(paths.PARAMS)
    outputs, workspace = paths.output_paths(), workspace_copied()
    if workspace:  # `dvc exp apply` puts the copy's outputs in the workspace's place, and its data with them
        outputs += tuple(workspace / output.relative_to(paths.REPO) for output in outputs)
    splits = import_dataset(params.data, params.seed, Path(paths.DOWNLOAD_CACHE), outputs, workspace)
    refuse_to_replace_what_it_did_not_write(paths.DATA)
    save_dataset(splits, paths.DATA)
    sizes = ", ".join(f"{name} {len(split)}" for name, split in splits.items())
    log.info(
        "wrote %s from %s: %s images, %d classes", paths.DATA, params.data.source, sizes, len(splits["train"].classes)
    )


if __name__ == "__main__":
    run_stage(main, **paths.as_declared("download"))
