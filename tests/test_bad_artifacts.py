"""Bad artifacts and failed writes, built on the fly: each is refused with one line naming
the problem and the fix (or, for leftovers, cleaned up), and the previous outputs stay
byte for byte as they were."""

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cifar.atomic import atomic_path, remove_stale_scratch, write_json
from cifar.cli import run_stage
from cifar.config import ModelConfig
from cifar.errors import OutputError
from cifar.models import save_trained

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


def onto_a_full_disk(monkeypatch, owner, writer: str, path_argument: int) -> None:
    """Make owner.writer write to /dev/full, where every write fails as on a full disk."""
    real = getattr(owner, writer)

    def write(*arguments, **options):
        Path(arguments[path_argument]).symlink_to("/dev/full")
        return real(*arguments, **options)

    monkeypatch.setattr(owner, writer, write)


def save_model(parameters: int) -> None:
    save_trained("models/model.pt", nn.Linear(parameters, 1), ModelConfig(), ("a", "b"))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    ("target", "owner", "writer", "path_argument", "write", "detail"),
    [
        # torch reports the same failure in two ways, depending on the file's size.
        ("models/model.pt", torch, "save", 1, lambda: save_model(10), " (torch: basic_ios::clear: iostream error)"),
        ("models/model.pt", torch, "save", 1, lambda: save_model(10_000), " (torch: [enforce fail at inline_container.cc:"),
        ("metrics/evaluate.json", Path, "write_text", 0, lambda: write_json("metrics/evaluate.json", {"loss": 1.0}), ""),
    ],
)
def test_a_full_disk_fails_in_one_line_and_keeps_the_previous_output(
    tmp_path, monkeypatch, target, owner, writer, path_argument, write, detail
):
    monkeypatch.chdir(tmp_path)
    Path(target).parent.mkdir()
    Path(target).write_bytes(b"previous")
    onto_a_full_disk(monkeypatch, owner, writer, path_argument)
    with pytest.raises(OutputError) as refused:
        write()
    message = str(refused.value)
    assert message.startswith(f"disk full while writing {target}{detail}") and message.endswith("; free space and re-run")
    assert "\n" not in message
    assert [path.name for path in Path(target).parent.iterdir()] == [Path(target).name]
    assert Path(target).read_bytes() == b"previous"
