"""Read a .tar/.tar.gz/.tar.xz/.zip only as a whole: every byte checked, within size limits.

Members are read into memory, not unpacked to disk: writing the JPEG mirror's 60,000 small
files through tarfile takes longer than reading them (README, "Never lose a run", has the
measurements), and only the images the run uses are decoded from there.
"""

from __future__ import annotations

import lzma
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from cifar.errors import DataError

SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".zip")

# Limits on what an archive may unpack to, checked before each member is read, so a
# decompression bomb is refused instead of filling memory.
# The largest CIFAR-10 layout, all 60,000 images as PNG files in a tar, unpacks to about
# 260 MB; 2 GiB leaves room for larger exports.
MAX_UNPACKED_BYTES = 2 << 30
# 32x32 PNGs and JPEGs, like the official pickled pixels, hardly compress any further, so a
# real archive unpacks to a few times its size; a bomb unpacks to a thousand times or more.
MAX_EXPANSION = 50
# Up to this size any expansion is harmless, and small archives of tiny files expand more
# (a tar pads every file to 512 bytes and itself to 10 KiB).
EXPANSION_FREE_BYTES = 64 << 20

_READABLE_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
# What a damaged archive raises while it is read, besides gzip's and bz2's OSErrors without
# errno: a zip's garbled version field gives NotImplementedError, a garbled name UnicodeDecodeError.
_CORRUPTION_ERRORS = (
    tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, NotImplementedError, UnicodeDecodeError
)
_FIX = "extract it yourself and point data.source at the folder"


def read_members(archive: Path) -> dict[str, bytes]:
    """Every regular file in the archive, by its path inside it, read whole.

    A tar is read past its last member to the end of the file: tarfile alone stops at the
    first damaged header as if the archive ended there, and a compressed stream's checksum
    comes only at its end. Every zip member is read in full, so that its CRC is verified.
    Members must be folders and regular files inside the archive's own folder.
    """
    limit = min(MAX_UNPACKED_BYTES, max(EXPANSION_FREE_BYTES, MAX_EXPANSION * archive.stat().st_size))
    try:
        if archive.name.lower().endswith(".zip"):
            return _read_zip(archive, limit)
        return _read_tar(archive, limit)
    except _CORRUPTION_ERRORS as error:
        raise _corrupt(archive, error) from None
    except OSError as error:
        if error.errno is None:
            raise _corrupt(archive, error) from None
        raise DataError(f"{archive}: cannot read it ({error.strerror}); {_FIX}") from None


def _corrupt(archive: Path, error: Exception) -> DataError:
    detail = " ".join(str(error).split())  # some errors span lines
    return DataError(f"{archive}: the archive is corrupt or truncated ({detail}); download or export it again")


def _read_tar(archive: Path, limit: int) -> dict[str, bytes]:
    try:
        bundle = tarfile.open(archive)
    except tarfile.ReadError:  # its message lists every compression tried, one per line
        raise tarfile.ReadError("not a tar file, plain or compressed with gzip, bzip2 or xz") from None
    with bundle:
        members = {}
        for member in bundle:
            if not (member.isfile() or member.isdir()):
                kind = "a symbolic link" if member.issym() else "a hard link" if member.islnk() else "a device or named pipe"
                raise _unsafe(archive, member.name, kind)
            _check_name(archive, member.name)
            _check_size(archive, member.offset_data + member.size, limit)
            if member.isfile():
                members[str(PurePosixPath(member.name))] = bundle.extractfile(member).read()
        stream = bundle.fileobj
        # bundle.offset is where tarfile stopped: the end-of-archive marker, or a damaged header.
        stream.seek(bundle.offset)
        while chunk := stream.read(1 << 20):
            if chunk.strip(b"\0"):
                raise tarfile.ReadError(f"a damaged header or stray data from byte {bundle.offset} of the tar on")
            _check_size(archive, stream.tell(), limit)
    return members


def _read_zip(archive: Path, limit: int) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        for member in members:
            _check_name(archive, member.filename)
            # The unix file type, 0 where the zip's writer did not record one (Windows, Python).
            file_type = stat.S_IFMT(member.external_attr >> 16)
            if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _unsafe(archive, member.filename, "a symbolic link or special file")
            if member.flag_bits & 0x1:
                raise DataError(f"{archive}: member {member.filename[:200]!r} is encrypted; re-create the zip without a password")
            if member.compress_type not in _READABLE_ZIP_METHODS:
                method = zipfile.compressor_names.get(member.compress_type, member.compress_type)
                raise DataError(
                    f"{archive}: member {member.filename[:200]!r} uses compression method {method!r}, which Python cannot read; "
                    f"re-create the zip with plain deflate (e.g. `zip -r`)"
                )
        _check_size(archive, sum(member.file_size for member in members), limit)
        return {str(PurePosixPath(member.filename)): bundle.read(member) for member in members if not member.is_dir()}


def _check_name(archive: Path, name: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise _unsafe(archive, name, "its path leads outside the archive's folder")


def _unsafe(archive: Path, name: str, why: str) -> DataError:
    return DataError(
        f"{archive}: unsafe member {name[:200]!r} ({why}); the archive may hold only folders and regular files "
        f"below its own folder: re-create it from a plain folder of images"
    )


def _check_size(archive: Path, unpacked: int, limit: int) -> None:
    if unpacked <= limit:
        return
    if limit == MAX_UNPACKED_BYTES:
        why = f"more than {MAX_UNPACKED_BYTES / 2**30:g} GiB, the most it unpacks"
    else:
        why = f"more than {MAX_EXPANSION} times its size, as a decompression bomb does"
    raise DataError(f"{archive}: unpacks to {why}; if it is genuine, {_FIX}")
