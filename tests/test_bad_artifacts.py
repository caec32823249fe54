"""Bad artifacts and failed writes, built on the fly: each is refused with one line naming
the problem and the fix (or, for leftovers, cleaned up), and the previous outputs stay
byte for byte as they were."""

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from cifar.atomic import atomic_path, remove_stale_scratch
from cifar.cli import run_stage

REPO = Path(__file__).resolve().parents[1]

KILLED_MID_WRITE = """
import os, signal
from cifar.atomic import atomic_path
with atomic_path("models/model.pt") as temporary:
    temporary.write_bytes(b"half a model")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_write_killed_midway_leaves_ignored_scratch_that_the_next_stage_run_removes(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    Path("models").mkdir()
    Path("models/model.pt").write_bytes(b"previous model")
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE], env=os.environ | {"PYTHONPATH": str(REPO)})
    assert killed.returncode == -signal.SIGKILL
    assert Path("models/model.pt").read_bytes() == b"previous model"
    leftover, = (path for path in Path("models").iterdir() if path.name != "model.pt")
    assert leftover.name.startswith(".model.pt.partial-")
    assert subprocess.run(["git", "check-ignore", "-q", f"models/{leftover.name}"], cwd=REPO).returncode == 0

    caplog.set_level(logging.INFO)
    run_stage(lambda: None, ["models"])
    assert not leftover.exists()
    assert caplog.messages == [f"removed {leftover}, left by an interrupted write"]
    assert Path("models/model.pt").read_bytes() == b"previous model"


def test_the_scratch_of_a_write_in_progress_is_kept(tmp_path):
    with atomic_path(tmp_path / "model.pt") as temporary:
        temporary.write_bytes(b"in progress")
        assert remove_stale_scratch([tmp_path]) == []
    assert (tmp_path / "model.pt").read_bytes() == b"in progress"
