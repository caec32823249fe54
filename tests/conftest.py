import fcntl
import shutil
import signal

import pytest

from cifar.atomic import STOP_SIGNALS
from pipeline_repo import SMALL_SYNTHETIC, copy_of, dvc, make_pipeline_repo, push_results, run


@pytest.fixture(autouse=True)
def signal_handlers_as_they_were():
    """A stage's main run in-process (cifar.cli.run_stage) takes over its stop signals and
    ignores them once done, as a stage's process should; the test process must not keep that,
    or every subprocess started later would inherit the signals ignored."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, *STOP_SIGNALS)}
    # Each test starts as from a terminal: the suite run under nohup (SIGHUP ignored, which
    # stages then leave so), or after a fixture ran a stage in-process (which leaves Ctrl-C
    # ignored), is no reason for a stop-signal test to fail.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.fixture(scope="session")
def repro(tmp_path_factory, worker_id):
    """One `dvc repro` of the whole pipeline on synthetic data: (root, log). The run is made
    once, by the first xdist worker to need it, and each worker gets its own copy: a run
    costs about four minutes of both CI cores, and the copy under a second."""
    basetemp = tmp_path_factory.getbasetemp()
    # the parent is this session's, common to its workers
    shared = basetemp if worker_id == "master" else basetemp.parent
    made, log = shared / "pipeline-run", shared / "pipeline-run.log"
    with (shared / "pipeline-run.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers wait here; released on close
        if not log.exists():
            first = dvc(make_pipeline_repo(made, SMALL_SYNTHETIC), "repro")
            log.write_text(first.stdout + first.stderr)
    return copy_of((made, None), tmp_path_factory.mktemp("pipeline") / "repo"), log.read_text()


@pytest.fixture(scope="module")
def published(repro, tmp_path_factory):
    """The pipeline run, committed as README says, pushed with its run cache to a local remote:
    (root, remote). One per test module, as tests push more to their remote."""
    source, _ = repro
    base = tmp_path_factory.mktemp("published")
    root, remote = base / "origin", base / "remote"
    shutil.copytree(source, root, symlinks=True, ignore=shutil.ignore_patterns("dvc_plots", "chromium-profile"))
    remote.mkdir()
    dvc(root, "remote", "add", "--default", "storage", str(remote))
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "pipeline run")
    assert run(root, "git", "status", "--porcelain").stdout == "", "the commit left files behind"
    push_results(root)
    return root, remote


# The longest files first (in this order; the rest keep theirs): pytest-xdist hands out whole
# files in collection order, and with these last, one of two CI cores ran them alone for the
# last quarter of an hour while the other sat idle.
LONGEST_FILES = ("test_ci_local.py", "test_remote_and_experiments.py", "test_resilience.py", "test_stage_params.py")


def pytest_collection_modifyitems(items):
    # Marked by what they use rather than by hand, so a new one is never run against every
    # mutant by scripts/mutation.sh, which leaves out this marker.
    for item in items:
        if "repro" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.pipeline)
    items.sort(
        key=lambda item: LONGEST_FILES.index(item.path.name) if item.path.name in LONGEST_FILES else len(LONGEST_FILES)
    )
