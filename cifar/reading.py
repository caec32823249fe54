"""Reading a file another stage wrote, in one bounded read that cannot hang.

A named pipe in an artifact's place would block open() until a writer came, and a device
(a symlink to /dev/zero) reports a size of 0, so a size check passes and the read never
ends. Every artifact a stage parses (JSON metrics, CSVs, the data manifest) is read here.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cifar.errors import DataError

# Metrics and manifests hold a dozen numbers or names: any such file cut at this size is no
# JSON a stage wrote, and is refused unparsed.
MAX_METRICS_BYTES = 64 << 10


def kind_of(mode: int) -> str:
    """What a file that is not a regular file is, in words, from its stat mode."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def read_artifact(path: str | Path, limit: int, fix: str, too_large: str | None = None) -> bytes:
    """The whole of the regular file at path, at most `limit` bytes; else a one-line DataError
    that ends in `fix`. `too_large` says what the limit stands for ("far more than 20 rows of
    predictions take"). Open errors (not found, no permission) are the caller's to word.

    O_NONBLOCK keeps open() of a named pipe from waiting for a writer; the kind is checked on
    the opened descriptor, so nothing swapped in after a check is read; and the read stops
    one byte past the limit whatever the file claims its size is.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    # fstat before wrapping it: Python's file object refuses a folder's descriptor with its own error.
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        os.close(descriptor)
        raise DataError(f"{path}: {kind_of(status.st_mode)}, not a regular file; {fix}")
    with os.fdopen(descriptor, "rb") as stream:
        # A file that says it is too large is refused unread; one that grows while read, at limit + 1.
        data = b"" if status.st_size > limit else stream.read(limit + 1)
    size = max(len(data), status.st_size)
    if size > limit:
        raise DataError(f"{path}: {size:,} bytes, {too_large or f'more than the {limit:,} it may take'}; {fix}")
    return data
