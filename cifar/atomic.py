"""Write outputs atomically: to a temporary sibling, then rename over the target.

A stage killed half-way leaves either the previous file or none, never a torn one, so DVC
never caches a half-written artifact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside target; on success rename it to target.

    Works for files and directories: whatever the caller creates at the yielded path
    replaces target in one rename.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    temporary = scratch / target.name
    try:
        yield temporary
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(temporary, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(text)


def write_json(target: str | Path, data: dict) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=False) + "\n")


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
