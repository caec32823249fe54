"""Write outputs atomically: to a temporary sibling, then rename over the target.

A stage killed half-way leaves either the previous file or none, never a torn one, so DVC
never caches a half-written artifact. What a killed write leaves is its scratch folder,
`.NAME.partial-PID-XXXX` beside the target: git-ignored, safe to delete, and removed by
the next stage run (`remove_stale_scratch`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cifar.errors import OutputError, one_line

SCRATCH_MARK = ".partial-"
# How torch.save's C++ writer reports a full disk, without an errno: "[enforce fail at
# inline_container.cc:672] . unexpected pos 704 vs 598", or for a small file
# "basic_ios::clear: iostream error".
TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "iostream error")


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside target; on success rename it to target.

    Works for files and directories: whatever the caller creates at the yielded path
    replaces target in one rename.
    """
    target = Path(target)
    with _write_errors_as_output_error(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=_scratch_prefix(target.name), dir=target.parent))
        temporary = scratch / target.name
        try:
            yield temporary
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(temporary, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _write_errors_as_output_error(target: Path) -> Iterator[None]:
    """A failed write as one line: a full disk, a file-size limit, or a folder that is read-only or not a folder."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputError(f"disk full while writing {target}; free space and re-run") from None
        if error.errno == errno.EFBIG:
            raise OutputError(
                f"cannot write {target}: larger than the largest file this process may write (`ulimit -f`, or the "
                f"file system's own limit); raise that limit and re-run"
            ) from None
        raise OutputError(
            f"cannot write {target} ({error.strerror or one_line(error)}); make {target.parent} a folder "
            f"you may write to, and re-run"
        ) from None
    except RuntimeError as error:
        if any(failure in str(error) for failure in TORCH_WRITE_FAILURES):
            raise OutputError(
                f"disk full while writing {target} (torch: {one_line(error)}); free space and re-run"
            ) from None
        raise


def _scratch_prefix(name: str) -> str:
    return f".{name}{SCRATCH_MARK}{os.getpid()}-"


def scratch_folder(parent: Path, purpose: str) -> tempfile.TemporaryDirectory:
    """A temporary folder in parent, named like atomic_path's scratch, so that a killed
    process's leftover is swept by remove_stale_scratch too."""
    with _write_errors_as_output_error(parent / f"{_scratch_prefix(purpose)}*"):
        parent.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix=_scratch_prefix(purpose), dir=parent)


def remove_stale_scratch(folders: Iterable[str | Path]) -> list[Path]:
    """Delete the scratch folders in these folders whose writing process is gone; return them.

    A scratch folder of a live process is a write in progress (another stage run in the
    same workspace), so it stays.
    """
    removed = []
    for folder in folders:
        for scratch in sorted(Path(folder).glob(f".*{SCRATCH_MARK}*")):
            pid = scratch.name.rsplit(SCRATCH_MARK, 1)[1].split("-", 1)[0]
            if scratch.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
                shutil.rmtree(scratch, ignore_errors=True)
                removed.append(scratch)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(text)


def write_json(target: str | Path, data: dict) -> None:
    """Strict JSON: NaN and infinity are not JSON, and a strict reader would reject the whole file."""
    try:
        text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False)
    except ValueError:
        raise OutputError(
            f"{target}: not written, as JSON cannot store the NaN or infinity in {data}; the stage computed "
            f"a broken number: re-run it once its cause (a diverged model, bad data) is fixed"
        ) from None
    write_text(target, text + "\n")


def write_csv(target: str | Path, frame) -> None:
    """Write a pandas DataFrame without its index."""
    with atomic_path(target) as temporary:
        frame.to_csv(temporary, index=False)


def save_figure(target: str | Path, figure) -> None:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(target) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
