"""Reading a file another stage wrote, in one bounded read that cannot hang.

A named pipe in an artifact's place would block open() until a writer came, and a device
(a symlink to /dev/zero) reports a size of 0, so a size check passes and the read never
ends. Every artifact a stage parses (JSON metrics, CSVs, the data manifest) is read here.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from cifar.errors import DataError, one_line, printable

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


def read_json_artifact(path: str | Path, limit: int, fix: str) -> object:
    """read_artifact's bytes, decoded as JSON. Malformed JSON is a ValueError, and so is JSON
    nested deeper than the decoder recurses (a few thousand brackets in a few KB), which the
    json module raises as a RecursionError."""
    data = read_artifact(path, limit, fix)
    try:
        return json.loads(data)
    except RecursionError as error:
        raise ValueError(str(error)) from None


# torch.save writes a record per tensor and a few of its own: a ResNet18 checkpoint with its
# optimizer state has 190, listed in 11.7 KB. zipfile makes a Python object of about 0.5 KB of
# each 46-byte entry, so a file of a million empty records would take ten times its size.
MAX_TORCH_DIRECTORY_BYTES = 1 << 20


def torch_file_problem(source: Path | bytes, max_structure_bytes: int) -> str | None:
    """Why `source` (a file, or bytes) is not as torch.save writes, in words; None if it may be.

    torch.save writes a zip of uncompressed records, each no larger than the file, while
    torch.load inflates a compressed record whole: a 1.5 MB file holding a deflated record of
    1.5 GB of zeros took 5 GB to load (2-core CPU, 2026-12-01). The pickled structure around
    the tensors (the data.pkl record) is at most `max_structure_bytes`: each byte of it can
    make a Python object of 64 bytes or more (20 MB of empty dicts took 2.3 GB). Checked
    here first, a load takes little more memory than the file's size.
    """
    with io.BytesIO(source) if isinstance(source, bytes) else source.open("rb") as stream:
        directory = zip_directory(stream)
        if directory.size > MAX_TORCH_DIRECTORY_BYTES:
            return f"its list of records takes {directory.size:,} bytes, where torch.save's take about 12 KB"
        if not directory.located_alike:
            return "its list of records is not where its end records say, so readers differ on which records it has"
        try:
            with zipfile.ZipFile(stream) as archive:
                records = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
            return f"not the zip archive torch.save writes: {one_line(error)}"
        size = stream.seek(0, os.SEEK_END)
    names = [record.filename.lower() for record in records]
    if len(set(names)) < len(names):
        return "two of its records have one name but for case, which readers tell apart differently"
    for record, name in zip(records, names):
        if record.compress_type != zipfile.ZIP_STORED or record.file_size != record.compress_size:
            return f"its record {printable(record.filename)[:80]!r} is compressed, which torch.save never does"
        # torch's reader finds a record by its name in any case: DATA.PKL is the pickle too.
        if name.endswith("data.pkl") and record.file_size > max_structure_bytes:
            return (
                f"its pickled structure takes {record.file_size:,} bytes, more than the {max_structure_bytes:,} "
                f"it needs"
            )
    if sum(record.file_size for record in records) > size:
        return "its records claim more bytes than the file holds"
    return None


class ZipDirectory(NamedTuple):
    size: int  # of the central directory (the list of members), in bytes
    located_alike: bool  # whether every reader finds the directory in one place
    data_after_it: bool  # whether bytes but NULs follow the end record and its comment


def zip_directory(stream: BinaryIO) -> ZipDirectory:
    """A zip's central directory (its list of members), from its end records alone
    (APPNOTE.TXT 4.3.14-4.3.16); of size 0, located alike, without a readable end record,
    which zipfile refuses.

    Hand-written because zipfile has no public way to read the end record alone, and parses
    the whole directory into Python objects before it says how many members there are.
    Readers disagree where the records do: Python 3.11's zipfile takes the zip64 record right
    before the locator whatever the locator says (a 0-byte directory there hid 462 MB of
    members), and a directory that does not end where its end record begins as found there
    (as if data came before the zip); torch's reader (miniz) takes the stated places.
    """
    # The end record is followed by a comment of up to 64 KiB.
    stream.seek(max(0, stream.seek(0, os.SEEK_END) - _END_RECORD.size - 0xFFFF))
    tail = stream.read()
    # The last signature with a whole record after it, as torch's reader and zipfile take it:
    # a signature's bytes inside the end record itself (its directory offset) are none.
    end = tail.rfind(_END_SIGNATURE, 0, len(tail) - _END_RECORD.size + len(_END_SIGNATURE))
    if end < 0:
        return ZipDirectory(0, True, False)
    entries, size, offset, comment_length = _END_RECORD.unpack_from(tail, end)[4:8]
    # zipfile and unzip pass over what follows the comment: an archive joined there went unread.
    data_after_it = bool(tail[end + _END_RECORD.size + comment_length :].strip(b"\0"))
    end_offset = stream.tell() - len(tail) + end
    locator = end - _ZIP64_LOCATOR.size
    if not (locator >= 0 and tail.startswith(_ZIP64_LOCATOR_SIGNATURE, locator)):
        return ZipDirectory(size, offset + size == end_offset, data_after_it)
    before_locator = end_offset - _ZIP64_LOCATOR.size - _ZIP64_END_RECORD.size
    pointed = _ZIP64_LOCATOR.unpack_from(tail, locator)[2]
    records = {}
    for position in {before_locator, pointed}:
        stream.seek(max(position, 0))
        record = stream.read(_ZIP64_END_RECORD.size)
        if len(record) == _ZIP64_END_RECORD.size and record.startswith(_ZIP64_END_SIGNATURE):
            records[position] = _ZIP64_END_RECORD.unpack(record)[7:10]
    # 0xFFFFFFFF says "see the zip64 record" (a genuine zip64 zip was refused as a 4 GiB directory)
    stated = 0 if size == 0xFFFFFFFF and records else size
    largest = max([stated, *(record[1] for record in records.values())])
    entries64, size64, offset64 = records.get(before_locator, (None, None, None))
    # Each field of the end record is the zip64 record's or says "see the zip64 record": a zip64
    # record of 301 members and an end record of 300 had zipfile read 301 and unzip 300.
    alike = (
        pointed == before_locator
        and offset64 is not None
        and offset64 + size64 == before_locator
        and entries in (entries64, 0xFFFF)
        and size in (size64, 0xFFFFFFFF)
        and offset in (offset64, 0xFFFFFFFF)
    )
    return ZipDirectory(largest, alike, data_after_it)


_END_SIGNATURE, _ZIP64_LOCATOR_SIGNATURE, _ZIP64_END_SIGNATURE = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
# signature, disk numbers, entries (2), directory size and offset, comment length
_END_RECORD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk, offset of the zip64 end record, disks
_ZIP64_END_RECORD = struct.Struct("<4sQ2H2L4Q")  # signature, its size, versions, disks, entries (2), directory size


def walk(top: str | os.PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk(top) top-down, without following links, but without recursing: Python 3.11's
    os.walk recurses once per level (3.12's does not), and a folder nested 1,100 deep in
    cifar/ ended every stage in RecursionError. A folder that cannot be listed is passed over,
    and the subfolders list may be pruned in place, as os.walk's."""
    folders = [os.fspath(top)]
    while folders:
        folder = folders.pop()
        subfolders, files, linked = [], [], set()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        is_folder, is_link = entry.is_dir(), entry.is_symlink()
                    except OSError:
                        is_folder = is_link = False
                    (subfolders if is_folder else files).append(entry.name)
                    if is_link:
                        linked.add(entry.name)
        except OSError:
            continue
        yield folder, subfolders, files
        folders.extend(os.path.join(folder, name) for name in reversed(subfolders) if name not in linked)
