import time

import pytest

from pipeline_repo import SMALL_SYNTHETIC, dvc, make_pipeline_repo


@pytest.fixture(scope="session")
def repro(tmp_path_factory):
    """One `dvc repro` of the whole pipeline on synthetic data: (root, log, seconds)."""
    root = make_pipeline_repo(tmp_path_factory.mktemp("pipeline"), SMALL_SYNTHETIC)
    started = time.perf_counter()
    first = dvc(root, "repro")
    return root, first.stdout + first.stderr, time.perf_counter() - started
