"""Read a .tar/.tar.gz/.tar.xz/.tar.bz2/.zip only as a whole: every byte checked, within size limits.

Members are read into memory, not unpacked to disk: writing the JPEG mirror's 60,000 small
files through tarfile takes longer than reading them (docs/reliability.md, "Reading
archives", has the measurements), and only the images the run uses are decoded from there.
"""

from __future__ import annotations

import bisect
import bz2
import contextlib
import functools
import io
import lzma
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, NamedTuple

from cifar.errors import DataError, short_repr, unreadable
from cifar.ingest.images import git_lfs_pointer
from cifar.reading import zip_directory

# With the short forms GNU tar's --auto-compress names for the compressions read here.
SUFFIXES = (".tar", ".tar.gz", ".tgz", ".taz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".tbz", ".tb2", ".tz2", ".zip")

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
# Limits on what an archive's bookkeeping may cost before its members are read.
# CIFAR-10 is 60,000 images in 22 folders; more than three times that is no export of it,
# and each member costs about 0.5 KB of Python objects besides its data.
MAX_MEMBERS = 200_000
# A pax header or GNU long name holds a path (at most 4 KiB on Linux) and a few attributes.
MAX_EXTENDED_HEADER_BYTES = 1 << 20
# Pax records are parsed in Python at about 0.14 s of CPU per MiB of the smallest records: a
# flood of them within the 2 GiB cap took 221 s. 60,000 images with a pax header each (GNU
# tar's posix format: times, about 100 bytes) hold 6 MB; 64 MiB in all is at most 9 s.
MAX_EXTENDED_HEADERS_IN_ALL = 64 << 20
# zipfile builds a 0.5 KB object for every central-directory entry (46 bytes and the name)
# before any member can be checked; the JPEG mirror as a zip has about 6 MB of entries.
MAX_ZIP_DIRECTORY_BYTES = 16 << 20
# What a compressed tar may hold beyond what it unpacks to: its compression's headers and the
# stored blocks of data that does not compress, a few bytes in every thousand.
MAX_COMPRESSED_OVERHEAD = 1 << 20
# Streams (gzip members, bzip2 or xz streams) a compressed tar may hold: each costs a few
# microseconds of Python. bgzip writes a member per 64 KiB, pbzip2 a stream per 900 KB: at
# most 32,768 for the 2 GiB an archive may unpack to. NULs after the tar's end unpack a
# thousandfold, and let as many bytes of empty streams within MAX_COMPRESSED_OVERHEAD's
# allowance: 52 million of them took 277 s.
MAX_STREAMS = 100_000
# The memory xz's decoder may take: a dictionary of up to 128 MiB, twice `xz -9`'s, and the
# decoder's own few MiB. One of 4 GiB, valid to `xz -t`, kept every byte unpacked twice (4.5 GB
# at the 2 GiB limit).
MAX_XZ_DICTIONARY_BYTES = 128 << 20
MAX_XZ_DECODER_BYTES = MAX_XZ_DICTIONARY_BYTES + (8 << 20)

BLOCKSIZE = tarfile.BLOCKSIZE
# Where a GNU long name waits for its member beside the pax fields; no pax key has a space.
_GNU_LONG_NAME = "GNU long name"
_GNU_LONG_LINK = "GNU long link name"
# Each GNU long name header: its key among the fields before a member, and how a second one that
# names another is told.
_GNU_LONG_HEADERS = {
    tarfile.GNUTYPE_LONGNAME: (_GNU_LONG_NAME, "also named {} by a GNU long name before it"),
    tarfile.GNUTYPE_LONGLINK: (_GNU_LONG_LINK, "a link target also named {} by a GNU long link name before it"),
}
_EMPTY_BLOCK = bytes(BLOCKSIZE)
# pixz (`tar -I pixz`) writes an index of the members after the tar, from a block boundary
# on, behind this magic number; tar and tarfile stop at the end-of-archive marker before it.
_PIXZ_INDEX_MAGIC = struct.pack("<Q", 0xDBAE14D62E324CA6)
# Its members' names and offsets: 200,000 members of 80-byte names take 17 MB.
MAX_PIXZ_INDEX_BYTES = 32 << 20
# Member names as tarfile reads them on Linux: UTF-8, undecodable bytes kept as surrogates.
_NAME_ENCODING, _NAME_ERRORS = "utf-8", "surrogateescape"
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
# A number field as GNU tar reads one: octal digits after optional spaces, padded with spaces or NULs.
_OCTAL = re.compile(rb" *[0-7]*[ \0]*")
_GNU_VOLUME_LABEL = b"V"
_GNU_INCREMENTAL_FOLDER = b"D"
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_EXTENDED_TYPES = (*_PAX_TYPES, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a device or named pipe",
    tarfile.BLKTYPE: "a device or named pipe",
    tarfile.FIFOTYPE: "a device or named pipe",
    tarfile.GNUTYPE_SPARSE: "a GNU sparse file, which is not supported",
    _GNU_INCREMENTAL_FOLDER: "the folder listing of a GNU incremental archive (`tar -g`), which is not supported",
}


class _CorruptArchive(Exception):
    """The archive's structure is broken: damaged, cut short or not an archive at all."""


# zipfile unpacks a bzip2 or LZMA member with no bound on what one call unpacks: a 0.8 MB zip
# whose bzip2 member declared 1,000 bytes took 5.2 GB before its CRC failed.
_READABLE_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
# What a damaged archive raises while it is read, besides gzip's and bz2's OSErrors without
# errno: a zip's garbled version field gives NotImplementedError, a garbled name UnicodeDecodeError.
_CORRUPTION_ERRORS = (
    _CorruptArchive,
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
    UnicodeDecodeError,
)
_FIX = "extract it yourself and point data.source at the folder"


def read_members(archive: Path) -> dict[str, bytes]:
    """Every regular file in the archive, by its path inside it, read whole.

    A tar is read past its last member to the end of the file: tarfile alone stops at the
    first damaged header as if the archive ended there, and a compressed stream's checksum
    comes only at its end; a tar without its end-of-archive marker was cut short. Every zip
    member is read in full, so that its CRC is verified. Members must be folders and
    regular files inside the archive's own folder, each path at most once.
    """
    size = archive.stat().st_size
    limit = min(MAX_UNPACKED_BYTES, max(EXPANSION_FREE_BYTES, MAX_EXPANSION * size))
    try:
        if archive.name.lower().endswith(".zip"):
            return _read_zip(archive, limit)
        return _read_tar(archive, limit)
    except _CORRUPTION_ERRORS as error:
        raise _corrupt(archive, error) from None
    except OSError as error:
        if error.errno is None:
            raise _corrupt(archive, error) from None
        raise unreadable(archive, error, _FIX) from None


def _corrupt(archive: Path, error: Exception) -> DataError:
    # Before a name that does not fit: a gzipped zip named .zip was to be renamed .tar.gz.
    described = format_not_read(archive)
    if described:  # a 7-Zip archive named .zip was called corrupt, and "download or export it again" repeated it
        return DataError(f"{archive} is {described}")
    misnamed = _misnamed(archive)
    if misnamed:
        return DataError(f"{archive}: {misnamed}")
    compression = unread_compression(archive)
    if compression:  # a zstd tar named .tar.gz was called corrupt, and downloaded again
        return DataError(f"{archive} is {compression_not_read(compression)}")
    detail = " ".join(str(error).split())  # some errors span lines
    return DataError(f"{archive}: the archive is corrupt or truncated ({detail}); download or export it again")


# Compressions tar writes that are not read here, by their first bytes.
_UNREAD_COMPRESSIONS = (
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"LZIP", "lzip"),
    (b"\x1f\x9d", "compress"),
    (b"\x89LZO", "lzop"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\x02\x21\x4c\x18", "lz4"),  # `lz4 -l`: the legacy frame, as Linux's kernel images use
    (b"\x5d\x00\x00", "lzma"),
)
# Archive formats that are not read here, by their first bytes.
_UNREAD_ARCHIVES = (
    (b"7z\xbc\xaf\x27\x1c", "7-Zip"),
    (b"Rar!\x1a\x07", "RAR"),
    *((magic, "cpio") for magic in (b"070701", b"070702", b"070707", b"\xc7\x71", b"\x71\xc7")),
)
# zstd's and lz4's skippable frames: a magic number from 0x184D2A50 to 0x184D2A5F, then the
# frame's size. pzstd starts its files with one, before the first zstd frame.
_SKIPPABLE_FRAME = re.compile(rb"[\x50-\x5f]\x2a\x4d\x18(....)", re.DOTALL)


def format_not_read(path: Path) -> str | None:
    """What a file is by its first bytes, where download does not read it: an archive of another
    format, also under gzip, bzip2 or xz (`find | cpio -o | gzip`, named .tar.gz, was called
    corrupt, and downloaded again), or a file compressed twice, as a download saved without
    undoing the server's `Content-Encoding: gzip` is, or a Git LFS pointer file. None where it is
    none of these."""
    with path.open("rb") as raw:
        first = raw.read(BLOCKSIZE)
        pointer = git_lfs_pointer(first)
        if pointer:
            return pointer
        compression = next((each for each in _COMPRESSIONS if _starts_as(first, each)), None)
        if compression:
            raw.seek(0)
            try:
                with io.BufferedReader(_Streams(raw, path, compression), _CHUNK) as stream:
                    first = stream.read(BLOCKSIZE)
            except (DataError, EOFError, ValueError, lzma.LZMAError, zlib.error):
                return None  # damaged: the caller's own reading names it
            except OSError as error:
                if error.errno is not None:  # the disk's; bz2's and gzip's own ("Invalid data stream") have none
                    raise
                return None
    inner = next((each for each in _COMPRESSIONS if _starts_as(first, each)), None)
    if compression and (inner or first.startswith(_ZIP_MAGIC)):
        inside = f"a {inner.name} file" if inner else "a zip archive"
        return (
            f"compressed twice: a {compression.name} file that holds {inside} (as a download saved without undoing "
            f"the server's own compression is); decompress it once (`{compression.name} -dc` it into a new file) and "
            f"give that file, named as its contents are"
        )
    kind = next((name for magic, name in _UNREAD_ARCHIVES if first.startswith(magic)), None)
    if kind is None:
        return None
    return (
        f"a {f'{compression.name}-compressed ' if compression else ''}{kind} archive, which download does not read; "
        f"pack its files as .zip or .tar.gz instead, or unpack it and give the folder"
    )


def numpy_arrays(path: Path) -> bool:
    """Whether a file is a NumPy .npz: a zip of arrays (`name.npy`) alone, as np.savez writes, its
    list of members small. One without its suffix was to be renamed .zip, in vain; a zip of a
    class tree with a mean.npy first is none."""
    with path.open("rb") as stream:
        if stream.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
            return False
        if not 0 < zip_directory(stream).size <= _MOST_NPZ_DIRECTORY_BYTES:
            return False
        stream.seek(0)
        try:
            with zipfile.ZipFile(stream) as bundle:
                return all(name.endswith(".npy") for name in bundle.namelist())
        except (*_CORRUPTION_ERRORS, ValueError):  # a damaged zip: the caller's own reading names it
            return False


# A split file's list of arrays takes a few hundred bytes.
_MOST_NPZ_DIRECTORY_BYTES = 64 << 10


def unread_compression(path: Path) -> str | None:
    """The name of the compression a file's first bytes show, of those not read here."""
    with path.open("rb") as stream:
        first = stream.read(_CHUNK)
    while skippable := _SKIPPABLE_FRAME.match(first):
        first = first[skippable.end() + int.from_bytes(skippable[1], "little") :]
    found = next((name for magic, name in _UNREAD_COMPRESSIONS if first.startswith(magic)), None)
    return found or ("lzma" if _lzma_tar(first) else None)


def _lzma_tar(first: bytes) -> bool:
    """Whether a file starting with `first` is a tar in .lzma's format (`tar --lzma`, `xz
    --format=lzma`), which has no magic number: its header is the coder's settings, 0x5D by
    default, and sizes. Told by decoding its start to a tar header."""
    try:
        start = lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(first, BLOCKSIZE)
    except lzma.LZMAError:
        return False
    return _is_tar_header(start) or start == _EMPTY_BLOCK


def compression_not_read(compression: str) -> str:
    return (
        f"compressed with {compression}, which download does not read; recompress it with gzip, bzip2 or xz "
        f"(.tar.gz, .tar.bz2, .tar.xz), or unpack it and give the folder"
    )


def suffix_by_contents(path: Path) -> str | None:
    """The suffix that a file's first bytes call for: .zip, .tar, or a compressed tar's (by
    its compression); None where they are none of an archive's."""
    with path.open("rb") as stream:
        first = stream.read(BLOCKSIZE)
    if first.startswith(_ZIP_MAGIC):
        return ".zip"
    if _is_tar_header(first) or first == _EMPTY_BLOCK:
        return ".tar"
    return next((each.suffix for each in _COMPRESSIONS if first.startswith(each.magic)), None)


def _misnamed(archive: Path) -> str | None:
    """What an archive that failed to read is by its first bytes, where its name says otherwise
    (a zip named .tgz, a .tar.xz named .zip): it was called corrupt, and downloaded again."""
    by_contents = suffix_by_contents(archive)
    named_zip = archive.name.lower().endswith(".zip")
    if not named_zip and by_contents == ".zip":
        return "a zip archive by its contents, named as a tar; rename it to end in .zip"
    if named_zip and by_contents not in (None, ".zip"):
        return (
            "a tar archive by its contents (plain or compressed), named as a zip; rename it to end in .tar, or as "
            "its compression says (.tar.gz, .tar.bz2, .tar.xz)"
        )
    return None


def _read_tar(archive: Path, limit: int) -> dict[str, bytes]:
    with archive.open("rb") as raw, _decompressed(raw, archive) as stream:
        # A plain tar holds its members' bytes itself: a size past its end is a tar cut short.
        stored = archive.stat().st_size if stream is raw else None
        return _tar_members(stream, archive, limit, stored)


@contextmanager
def _decompressed(raw: BinaryIO, archive: Path) -> Iterator[BinaryIO]:
    """The tar inside: the file itself if it starts with a valid tar header, else by its
    compression's magic bytes (gzip, bzip2, xz), as tarfile.open detects them."""
    first = raw.read(BLOCKSIZE)
    raw.seek(0)
    also = next((compression for compression in _COMPRESSIONS if _starts_as(first, compression)), None)
    if also and (_is_tar_header(first) or _gnu_tar_reads_a_header(first)):
        # GNU tar takes such a file for a plain tar, `tar -z` and tarfile for a gzip file: a tar
        # hidden in a gzip header's extra field was imported instead of the one inside.
        raise _unsafe(
            archive,
            tarfile.nts(first[:100], _NAME_ENCODING, _NAME_ERRORS),
            f"the first member of a plain tar, whose header also starts a {also.name} file, and tools differ on "
            f"which archive it is",
        )
    if _is_tar_header(first) or first == _EMPTY_BLOCK:  # a tar of no members starts with its end marker
        yield raw
        return
    for compression in _COMPRESSIONS:
        if first.startswith(compression.magic):
            with io.BufferedReader(_Streams(raw, archive, compression), _CHUNK) as stream:
                yield stream
            return
    raise _CorruptArchive("not a tar file, plain or compressed with gzip, bzip2 or xz")


def _gnu_tar_reads_a_header(block: bytes) -> bool:
    """Whether GNU tar takes a block for a tar header by its checksum, which it reads past
    leading spaces and NULs (tarfile reads a leading NUL as 0, and the block as no header)."""
    digits = block[148:156].lstrip(b" \0").split(b"\0")[0].split(b" ")[0]
    if len(block) != BLOCKSIZE or not digits or not _OCTAL.fullmatch(digits):
        return False
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    signed = unsigned - 256 * sum(byte >= 0x80 for byte in block[:148] + block[156:])
    return int(digits, 8) in (unsigned, signed)


def _starts_as(first: bytes, compression: _Compression) -> bool:
    """Whether `first`, a file's first bytes, start a file of this compression."""
    if not first.startswith(compression.magic):
        return False
    try:
        compression.decompressor().decompress(first, 1)
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error):
        return False
    return True


class _Compression(NamedTuple):
    name: str
    suffix: str
    magic: bytes
    decompressor: Callable[[], Any]  # with the interface of lzma's and bz2's decompressors
    stream: str  # what the format calls one of the streams a file may hold
    padded_out_by: str  # what can make a file of this compression far larger than its data
    # NUL bytes between streams come in multiples of this; 0: NUL bytes of any number may follow
    # the last stream, as bzip2 and Python's bz2 read it.
    padding: int


class _GzipMember:
    """zlib's gzip reader, which checks a member's header, data and trailer in C, with the
    interface of lzma's and bz2's decompressors: they keep the input they have not used."""

    def __init__(self):
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._unused_input = b""

    @property
    def eof(self) -> bool:
        return self._inflater.eof

    @property
    def unused_data(self) -> bytes:
        return self._inflater.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._unused_input

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out = self._inflater.decompress(self._unused_input + data, max_length)
        self._unused_input = self._inflater.unconsumed_tail
        return out


_COMPRESSIONS = (
    _Compression(
        "gzip",
        ".tar.gz",
        b"\x1f\x8b",
        _GzipMember,
        "member",
        "overlong fields in a member's header (name, comment, extra field), or empty members",
        1,
    ),
    _Compression("bzip2", ".tar.bz2", b"BZh", bz2.BZ2Decompressor, "stream", "empty streams", 0),
    _Compression(
        "xz",
        ".tar.xz",
        b"\xfd7zXZ\x00",
        functools.partial(lzma.LZMADecompressor, lzma.FORMAT_XZ, memlimit=MAX_XZ_DECODER_BYTES),
        "stream",
        "empty streams, or blocks of a few bytes each",
        4,
    ),
)
_CHUNK = 1 << 16
# What one call of a decompressor may unpack. Asked for a whole member at once, bzip2 and xz
# unpacked it beside the buffer it was then copied into (4.1 GB for a 2 GiB member), and
# zipfile inflated up to 1 GiB for a member that declared 1,000 bytes.
_MOST_UNPACKED_A_CALL = 1 << 20


class _Streams(io.RawIOBase):
    """The data of a compressed file's streams (gzip members, bzip2 or xz streams), one after
    another, as gzip, bzip2 and xz read them, and never far ahead of what they unpack to.

    No compressor writes more than a small fraction over data that does not compress, so a
    file that holds MAX_COMPRESSED_OVERHEAD bytes and a sixteenth more than it has unpacked
    to is padded out, and is refused there; so is one of more than MAX_STREAMS streams.
    Python's readers took any padding: gzip.open
    parses a member's header in Python, a byte of its name at a time (a 256 MiB name kept
    download busy for 24 s of CPU with nothing unpacked), and 27 million empty gzip members
    (520 MiB) took 114 s. lzma.open also took xz stream padding (NUL bytes, a multiple of
    four, valid per the xz format and accepted by `xz -t`) for the end of the file: the tar
    inside then looked cut short, and stray bytes at the end went unnoticed.
    """

    def __init__(self, raw: BinaryIO, archive: Path, compression: _Compression):
        self._raw = raw
        self._archive = archive
        self._compression = compression
        self._decompressor = compression.decompressor()
        self._pending = b""  # read from the file, not yet given to the decompressor
        self._read = 0  # bytes read from the file
        self._unpacked = 0
        self._streams = 1
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._ended:
            if self._decompressor.eof:
                self._next_stream()
                continue
            file_ended = False
            if self._pending:
                data, self._pending = self._pending, b""
            elif self._decompressor.needs_input:
                data = self._read_raw()
                file_ended = not data  # zlib may still hold output of the input it took, as gzip.py allows
            else:
                data = b""
            try:
                out = self._decompressor.decompress(data, min(len(buffer), _MOST_UNPACKED_A_CALL))
            except lzma.LZMAError as error:
                if str(error) != "Memory usage limit exceeded":
                    raise
                raise DataError(
                    f"{self._archive}: its xz stream has a dictionary of more than {MAX_XZ_DICTIONARY_BYTES >> 20} "
                    f"MiB, which would take as much memory again as it unpacks; recompress it with `xz -9` or less, "
                    f"or {_FIX}"
                ) from None
            if out:
                buffer[: len(out)] = out
                self._unpacked += len(out)
                return len(out)
            if file_ended and not self._decompressor.eof:  # lzma's own words for it, as gzip's
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        return 0

    def _read_raw(self, in_padding: bool = False) -> bytes:
        """The file's next bytes; `in_padding` where they are to be NUL bytes after a stream, which
        a refusal then names (NUL padding to 4 MiB was called empty streams)."""
        data = self._raw.read(_CHUNK)
        self._read += len(data)
        if self._read > MAX_COMPRESSED_OVERHEAD + self._unpacked * 17 // 16:
            compression = self._compression
            padded_out_by = f"NUL bytes after a {compression.stream}" if in_padding else compression.padded_out_by
            raise DataError(
                f"{self._archive}: its first {self._read:,} bytes unpack to only {self._unpacked:,}, far more than "
                f"{compression.name} needs for any data: the file is padded out ({padded_out_by}); recompress it, "
                f"or {_FIX}"
            )
        return data

    def _next_stream(self) -> None:
        compression, rest, padding = self._compression, self._decompressor.unused_data, 0
        while True:
            if compression.padding:
                kept = rest.lstrip(b"\0")
                padding, rest = padding + len(rest) - len(kept), kept
            if len(rest) >= len(compression.magic):
                break
            more = self._read_raw(in_padding=padding > 0)
            if not more:
                break
            rest += more
        at = self._read - len(rest)
        if compression.padding and padding % compression.padding:
            raise _CorruptArchive(
                f"{padding} NUL bytes of {compression.name} stream padding before byte {at}, not a multiple of "
                f"{compression.padding}"
            )
        if rest.startswith(compression.magic):
            self._streams += 1
            if self._streams > MAX_STREAMS:
                raise DataError(
                    f"{self._archive}: more than {MAX_STREAMS:,} {compression.name} {compression.stream}s, far more "
                    f"than {compression.name} needs for any data: the file is padded out ({compression.stream}s "
                    f"that hold little or nothing); recompress it, or {_FIX}"
                )
            self._decompressor, self._pending = compression.decompressor(), rest
        elif rest and (compression.padding or self._more_than_padding_follows(rest)):
            # bzip2 passes over whatever follows its last stream, with a warning: a .tar.gz or a
            # plain tar joined there, after NUL padding or a line of text, held images that went
            # unread without a word.
            raise _CorruptArchive(
                f"stray data after the {compression.name} {compression.stream} that ends at byte {at}"
            )
        else:
            self._ended = True

    def _more_than_padding_follows(self, rest: bytes) -> bool:
        """Whether anything but NUL bytes follows, as a tape's blocking pads a file out with them."""
        while not rest.strip(b"\0"):
            rest = self._read_raw(in_padding=True)
            if not rest:
                return False
        return True


# A zip's first local file header; a self-extracting one, with a stub before it, is refused anyway.
_ZIP_MAGIC = b"PK\x03\x04"


def _starts_an_archive(data: bytes) -> bool:
    """Whether bytes begin as a compressed file or a zip does."""
    magics = (_ZIP_MAGIC, *(each.magic for each in _COMPRESSIONS), *(magic for magic, _ in _UNREAD_COMPRESSIONS))
    return data.startswith(magics)


def _is_tar_header(block: bytes) -> bool:
    try:
        tarfile.TarInfo.frombuf(block, _NAME_ENCODING, _NAME_ERRORS)
    except tarfile.HeaderError:
        return False
    return True


def _tar_members(stream: BinaryIO, archive: Path, limit: int, stored: int | None) -> dict[str, bytes]:
    """Every regular file of the tar, read to the end of the stream.

    Headers are read here, one 512-byte block at a time, and only their fixed fields are
    parsed by tarfile (TarInfo.frombuf); extended headers (pax, GNU long names) are read
    here within MAX_EXTENDED_HEADER_BYTES and parsed by _pax_fields. tarfile itself reads
    an extended header whole, whatever size it declares, and before Python 3.11.10 and
    3.12.6 parses pax headers in time quadratic in their length (CVE-2024-6232). `stored` is
    the size of a plain tar's file (None for a compressed one), which no member can outgrow.
    """
    members: dict[str, bytes] = {}
    folders: set[str] = set()
    position = 0  # bytes of the tar read so far
    global_fields: dict[str, str] = {}  # from pax global headers, for every later member
    pending: dict[str, str] = {}  # from the extended headers before the next member
    count = extended_bytes = 0
    while True:
        block = stream.read(BLOCKSIZE)
        if not block:
            raise _CorruptArchive(f"it ends at byte {position} without the end-of-archive marker: it was cut short")
        if block == _EMPTY_BLOCK:
            _check_end(stream, archive, position, limit)
            _refuse_a_file_that_is_a_folder(archive, members, folders)
            return members
        try:
            header = tarfile.TarInfo.frombuf(block, _NAME_ENCODING, _NAME_ERRORS)
        except tarfile.HeaderError:
            raise _CorruptArchive(f"a damaged header or stray data from byte {position} of the tar on") from None
        if _has_a_prefix_only_tarfile_reads(block) and header.type not in tarfile.GNU_TYPES:
            # tarfile put those bytes (times, in GNU tar's incremental headers) before the name,
            # as a POSIX name prefix: messages name the member as GNU tar lists it.
            header.name = header.name.removeprefix(tarfile.nts(block[345:500], _NAME_ENCODING, _NAME_ERRORS) + "/")
        position += BLOCKSIZE
        for field, what in ((block[124:136], "size"), (block[148:156], "checksum")):
            if not (_OCTAL.fullmatch(field) or (what == "size" and field[0] in (0x80, 0xFF))):  # or base-256
                # tarfile reads them with int(), which takes `0o` and `_`, and stops at a NUL that
                # GNU tar skips when it leads; GNU tar skips a header whose checksum it cannot
                # read: the bytes after it are another member to each.
                raise _unsafe(
                    archive,
                    header.name,
                    f"a {what} field, {field!r}, that tarfile and GNU tar read differently, and tools differ on "
                    f"which file it is",
                )
        if header.type in _EXTENDED_TYPES:
            if not 0 <= header.size <= MAX_EXTENDED_HEADER_BYTES:
                raise DataError(
                    f"{archive}: an extended header (pax or GNU long name) at byte {position - BLOCKSIZE} declares "
                    f"{header.size:,} bytes, more than the {MAX_EXTENDED_HEADER_BYTES >> 20} MiB any name or "
                    f"attributes need; the archive is damaged or hostile: {_FIX}"
                )
            extended_bytes += header.size
            if extended_bytes > MAX_EXTENDED_HEADERS_IN_ALL:
                raise DataError(
                    f"{archive}: its extended headers (pax or GNU long names) take more than "
                    f"{MAX_EXTENDED_HEADERS_IN_ALL >> 20} MiB in all, about ten times what names and times of "
                    f"60,000 images need; the archive is damaged or hostile: {_FIX}"
                )
            data, padding = _read_padded(stream, header.size, archive, position, limit, stored)
            if header.type in _PAX_TYPES and padding.strip(b"\0"):
                # tarfile parses the whole blocks, GNU tar the size declared: a path hidden in the
                # padding filed a dog as a cat for one tool alone.
                raise _unsafe(
                    archive,
                    header.name,
                    f"a pax header with records past the {len(data)} bytes it declares, which tarfile reads and GNU "
                    f"tar does not, and tools differ on which file it is",
                )
            if header.type == tarfile.XGLTYPE:
                fields = _pax_fields(data, position, archive)
                dropped = sorted(global_fields.keys() - fields.keys())
                if dropped:  # GNU tar's second global header replaces the first, tarfile's adds to it
                    raise DataError(
                        f"{archive}: the pax global header at byte {position - BLOCKSIZE} leaves out "
                        f"{', '.join(dropped)[:200]} of the one before it, which GNU tar then drops and tarfile keeps "
                        f"for every member after it; {_FIX}"
                    )
                global_fields |= fields
            elif header.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
                fields = _pax_fields(data, position, archive)
                if pending.get("path", fields.get("path")) != fields.get("path", pending.get("path")):
                    # Two pax headers naming one member: tarfile takes one, GNU tar the other.
                    raise _unsafe(
                        archive,
                        fields["path"],
                        f"also named {pending['path'][:200]!r} by a pax header before it, and tools differ on which",
                    )
                if pending.keys() - {_GNU_LONG_NAME, _GNU_LONG_LINK}:
                    # GNU tar reads the last alone, tarfile adds the first's fields (a path, a
                    # size) to it: a cat filed as a dog, or a member swallowing the next.
                    raise DataError(
                        f"{archive}: two pax headers before the member at byte {position + _padded(header.size)}, "
                        f"which GNU tar and tarfile combine differently, and tools differ on which file it is; {_FIX}"
                    )
                pending |= fields
            else:
                key, twice = _GNU_LONG_HEADERS[header.type]
                named = _gnu_long_name(data, padding, archive)
                if pending.get(key, named) != named:
                    # GNU tar takes the last, tarfile the first: which class, or which image a hard
                    # link copies (a dog or a cat), cannot be told.
                    raise _unsafe(
                        archive, named, f"{twice.format(repr(pending[key][:200]))}, and tools differ on which"
                    )
                pending[key] = named
            position += _padded(header.size)
            continue
        fields, pending = global_fields | pending, {}
        long_name = fields.pop(_GNU_LONG_NAME, None)
        if long_name is not None and fields.get("path", long_name) != long_name:
            # GNU tar and tarfile take the pax path, in either order; which one a tool shows
            # cannot decide the image's class.
            raise _unsafe(
                archive, long_name, f"also named {fields['path'][:200]!r} by a pax header, and tools differ on which"
            )
        long_link = fields.get(_GNU_LONG_LINK)
        if long_link is not None and fields.get("linkpath", long_link) != long_link:
            raise _unsafe(
                archive,
                long_link,
                f"a link target also named {fields['linkpath'][:200]!r} by a pax header, and tools differ on which",
            )
        # an empty long name names no file (tarfile's '', GNU tar's '.'): the header's name was imported
        name = fields.get("path", header.name if long_name is None else long_name)
        size = int(fields.get("size", header.size))
        count += 1
        if count > MAX_MEMBERS:
            raise _too_many_members(archive)
        if header.type == _GNU_VOLUME_LABEL and not size:  # `tar --label`: the archive's name, which tar skips
            continue
        linked = _hard_linked_copy(header, fields, size, members)
        if linked is not None:
            _check_name(archive, name, made_on_windows=False)
            if _folder_ending(name) == "'/.'":  # `tar xf` fails to make the link and leaves an empty folder
                raise _unsafe(archive, name, "a hard link whose name ends in '/.', which GNU tar cannot make")
            _add_member(members, name, linked, archive)
            continue
        if header.type not in (*_FILE_TYPES, tarfile.DIRTYPE):
            raise _unsafe(
                archive, name, _KINDS.get(header.type, f"a member of type {header.type!r}, which is not supported")
            )
        _check_name(archive, name, made_on_windows=False)
        if size < 0:
            raise _CorruptArchive(f"member {name[:200]!r} declares a negative size")
        why = _read_otherwise_by_gnu_tar(block, header, name, size, named_elsewhere="path" in fields or long_name)
        if why:
            raise _unsafe(archive, name, f"{why}, and tools differ on which file it is")
        if header.type == tarfile.DIRTYPE:
            # No data follows a folder's header, whatever size it declares: tar and tarfile read
            # the next block as a header, and skipping `size` bytes would hide the members there.
            folders.add(str(PurePosixPath(name)))
            continue
        data = _read_data(stream, size, archive, position, limit, stored)
        position += _padded(size)
        if header.type in _FILE_TYPES:
            _add_member(members, name, data, archive)


def _hard_linked_copy(
    header: tarfile.TarInfo, fields: dict[str, str], size: int, members: dict[str, bytes]
) -> bytes | None:
    """The data of the earlier member a hard link names, which GNU tar writes for a file it
    meets a second time (a duplicate image, hard-linked): both tools extract its data, and
    both take a pax link path over a GNU long link name over the header's. A link carrying
    data stays refused."""
    if header.type != tarfile.LNKTYPE or size:
        return None
    target = fields.get("linkpath", fields.get(_GNU_LONG_LINK, header.linkname))
    if _folder_ending(target):  # a folder's name, which tar fails to link to; the lookup would drop the '/'
        return None
    return members.get(str(PurePosixPath(target)))


def _has_a_prefix_only_tarfile_reads(block: bytes) -> bool:
    """Only a POSIX ustar header has a name prefix at bytes 345 on; in an old GNU or V7 header
    those bytes are times or nothing, yet tarfile puts them before the name."""
    return block[257:263] != b"ustar\0" and block[345] != 0


def _read_otherwise_by_gnu_tar(
    block: bytes, header: tarfile.TarInfo, name: str, size: int, named_elsewhere: bool
) -> str | None:
    """Where GNU tar reads a member's header otherwise than tarfile, in words (the images
    would land in another class, or none, when extracted): a member tarfile imports as a cat
    that `tar xf` puts beside the tree, or leaves out while tar extracts it."""
    if not named_elsewhere and _has_a_prefix_only_tarfile_reads(block):
        return "in an old GNU or V7 header, whose bytes 345 on tarfile reads as a folder and GNU tar does not"
    if header.type == tarfile.DIRTYPE and block[156:157] == b"\0" and size:
        # An old-style folder (type NUL, a name ending in '/'): tar skips the data it
        # declares, tarfile reads it as the next headers.
        return f"an old-style folder entry that declares {size:,} bytes of data"
    ending = _folder_ending(name)
    if header.type in _FILE_TYPES and ending and PurePosixPath(name).parts:  # not './', nameless
        return f"a file whose name ends in {ending}, which GNU tar extracts as a folder"
    return None


def _folder_ending(name: str) -> str | None:
    """How a name ends that makes it a folder's to tar and unzip (the trailing '/' or '/.',
    quoted), which a path drops: `cat/0000.jpg/.` was imported as cat/0000.jpg, which `tar xf`
    leaves an empty folder."""
    if name.endswith("/"):
        return "'/'"
    if name.split("/")[-1] == "." and name != ".":
        return "'/.'"
    return None


def _read_data(stream: BinaryIO, size: int, archive: Path, position: int, limit: int, stored: int | None) -> bytes:
    """A member's data, read with the padding to the next 512-byte block, within the size limit."""
    return _read_padded(stream, size, archive, position, limit, stored)[0]


def _read_padded(
    stream: BinaryIO, size: int, archive: Path, position: int, limit: int, stored: int | None
) -> tuple[bytes, bytes]:
    if stored is not None and position + size > stored:
        raise _CorruptArchive(
            f"a member at byte {position} declares {size:,} bytes, more than the {stored - position:,} left in the "
            f"file: it was cut short"
        )
    _check_size(archive, position + _padded(size), limit)
    data = stream.read(size)
    padding = stream.read(_padded(size) - size)
    if len(data) + len(padding) < _padded(size):
        raise _CorruptArchive(
            f"it ends at byte {position + len(data) + len(padding)}, inside a member: it was cut short"
        )
    return data, padding


def _gnu_long_name(data: bytes, padding: bytes, archive: Path) -> str:
    """A GNU long name or link name, up to its NUL. GNU tar and tarfile read on into the padding
    where the header declares fewer bytes than the name takes (`tra` for train/cat/0020.png),
    other tools stop there: an image dropped unseen, or a hard link to a dog filed as a cat."""
    declared, read_on = data.split(b"\0", 1)[0], (data + padding).split(b"\0", 1)[0]
    if declared != read_on:
        raise _unsafe(
            archive,
            read_on.decode(_NAME_ENCODING, _NAME_ERRORS),
            f"a GNU long name that runs past the {len(data)} bytes its header declares, where tools differ on where "
            f"it ends, and so on which file it is",
        )
    return declared.decode(_NAME_ENCODING, _NAME_ERRORS)


def _padded(size: int) -> int:
    return -(-size // BLOCKSIZE) * BLOCKSIZE


def _check_end(stream: BinaryIO, archive: Path, position: int, limit: int) -> None:
    """After a tar's first empty block: the second one, then nothing but zeros to the end of
    the stream (tar pads to 10 KiB records; a bomb could hide there), or zeros, pixz's index of
    the members and zeros."""
    second = stream.read(BLOCKSIZE)
    if not second:
        raise _CorruptArchive(
            f"it ends at byte {position + BLOCKSIZE}, inside the end-of-archive marker: it was cut short"
        )
    if second != _EMPTY_BLOCK:
        raise _CorruptArchive(f"a damaged header or stray data from byte {position} of the tar on")
    end = position + 2 * BLOCKSIZE
    index: bytearray | None = None
    while chunk := stream.read(1 << 20):
        data_at = len(chunk) - len(chunk.lstrip(b"\0"))
        if index is not None:
            index += chunk
        elif data_at < len(chunk):
            # Reads of whole MiBs from a block boundary: an index's magic never spans two chunks.
            if (end + data_at) % BLOCKSIZE or not chunk.startswith(_PIXZ_INDEX_MAGIC, data_at):
                raise _CorruptArchive(f"a damaged header or stray data from byte {position} of the tar on")
            index = bytearray(chunk[data_at:])
        end += len(chunk)
        _check_size(archive, end, limit)
        if index is not None and len(index) > MAX_PIXZ_INDEX_BYTES:
            raise _CorruptArchive(f"a damaged header or stray data from byte {position} of the tar on")
    if index is not None and not _is_a_pixz_index(index):
        # A second tar after the index (`cat a.tar.xz b.tar.xz` of pixz's) would be passed over.
        raise _CorruptArchive(f"a damaged header or stray data from byte {position} of the tar on")


def _is_a_pixz_index(data: bytearray) -> bool:
    """Whether `data` is pixz's index as it writes it: its magic number, each member's name and
    NUL and 8-byte offset, an empty name and the tar's length, then nothing but zeros."""
    at = len(_PIXZ_INDEX_MAGIC)
    while (name_end := data.find(b"\0", at)) >= 0 and name_end + 9 <= len(data):
        if name_end == at:  # the empty name
            return not data[name_end + 9 :].strip(b"\0")
        at = name_end + 9
    return False


def _pax_fields(data: bytes, position: int, archive: Path) -> dict[str, str]:
    """The pax fields that decide a member's name and size, from the "LENGTH KEY=VALUE\n"
    records of a pax header whose data starts at byte `position` of the tar.

    Parsed here, in linear time, as tarfile's parser is quadratic before Python 3.11.10 (see
    _tar_members). Other fields (times, owners, attributes) do not matter to an import.
    """
    fields = {}
    start = 0
    while start < len(data) and data[start] != 0:  # tarfile too stops at NUL padding
        # LENGTH counts the whole record; in a header of at most 1 MiB it has at most 7 digits.
        space = data.find(b" ", start, start + 8)
        digits = data[start:space] if space > start else b""
        length = int(digits) if digits.isdigit() else 0
        record = data[start : start + length]
        key, equals, value = record[len(digits) + 1 : -1].partition(b"=")
        if not (equals and key and len(record) == length and record.endswith(b"\n")):
            raise _CorruptArchive(f"a malformed pax header record at byte {position + start} of the tar")
        if key.startswith(b"GNU.sparse."):  # `tar -S --format=posix`: a sound archive, called corrupt before
            raise DataError(
                f"{archive}: a GNU sparse member (its pax header at byte {position - BLOCKSIZE}), which is not "
                f"supported; re-create the tar without --sparse (-S)"
            )
        if key == b"size" and not (value.isdigit() and len(value) <= 20):
            raise _CorruptArchive(f"a malformed pax size {short_repr(value)} at byte {position + start} of the tar")
        if key in (b"path", b"size", b"linkpath"):
            fields[key.decode()] = value.decode(_NAME_ENCODING, _NAME_ERRORS)
        start += length
    return fields


def _read_zip(archive: Path, limit: int) -> dict[str, bytes]:
    located_alike = _check_zip_directory(archive)
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        if len(members) > MAX_MEMBERS:
            raise _too_many_members(archive)
        # zipfile reads from the end record back and skips whatever precedes the first member:
        # the whole of the first of two joined zips, whose images would go unread.
        skipped = min((member.header_offset for member in members), default=0)
        if skipped < 0:  # as Info-ZIP writes zip64 to a pipe: unzip and 7z call it damaged
            raise DataError(
                f"{archive}: its end records place its members {-skipped:,} bytes before the file's start: they are "
                f"damaged; re-create the zip (written to a file, not a pipe)"
            )
        if skipped:
            raise DataError(
                f"{archive}: {skipped:,} bytes come before its first member (two zips joined into one, or a "
                f"self-extracting stub), and would be skipped unread; re-create the zip from a plain folder of images"
            )
        if not located_alike:  # a zip64 end record of 301 members: zipfile imported one unzip does not list
            raise DataError(
                f"{archive}: its end records disagree on its list of members (how many, or where), and unzip and "
                f"Python's zipfile read different members from it; re-create the zip from a plain folder of images"
            )
        for member in members:
            member.filename = _name_as_unzip_reads(member)
            _check_name(archive, member.filename, made_on_windows=member.create_system != _UNIX)
            if not member.filename:  # zipfile's is_dir() below raised IndexError
                raise _unsafe(archive, member.filename, "a file without a name")
            ending = _folder_ending(member.filename)
            if ending and (member.file_size or not member.is_dir()):
                # zipfile and unzip take a name ending in '/' for a folder and drop its data: an image lost unseen.
                raise _unsafe(
                    archive, member.filename, f"a file whose name ends in {ending}, which unzip makes a folder"
                )
            _check_unicode_path_field(archive, member)
            # The unix file type, 0 where the zip's writer did not record one (Windows, Python).
            file_type = stat.S_IFMT(member.external_attr >> 16)
            if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _unsafe(archive, member.filename, "a symbolic link or special file")
            if member.flag_bits & 0x1:
                raise DataError(
                    f"{archive}: member {member.filename[:200]!r} is encrypted; re-create the zip without a password"
                )
            if member.compress_type not in _READABLE_ZIP_METHODS:
                method = zipfile.compressor_names.get(member.compress_type, member.compress_type)
                raise DataError(
                    f"{archive}: member {member.filename[:200]!r} uses compression method {method!r}, which download "
                    f"does not read; re-create the zip with plain deflate (e.g. `zip -r`)"
                )
        _check_size(archive, sum(member.file_size for member in members), limit)
        found: dict[str, bytes] = {}
        for member in members:
            if not member.is_dir():
                _add_member(found, member.filename, _zip_member_data(bundle, member), archive)
        folders = {str(PurePosixPath(member.filename)) for member in members if member.is_dir()}
        _refuse_a_file_that_is_a_folder(archive, found, folders)
        return found


def _name_as_unzip_reads(member: zipfile.ZipInfo) -> str:
    """A member's name as unzip reads it on Linux: `zip -r` there stores UTF-8 names without the
    UTF-8 flag, which zipfile decodes as DOS's code page ('cafÃ©.jpg' for 'café.jpg', sorted
    elsewhere, so data.test_limit chose other images). Bytes that are not UTF-8 (a Latin-1
    name) are kept as the folder import lists them once unzipped: as surrogates."""
    if member.flag_bits & 0x800 or member.create_system != _UNIX:
        return member.filename
    return member.filename.encode("cp437").decode("utf-8", "surrogateescape")


# The `create_system` of a zip member written on Unix (APPNOTE.TXT 4.4.2).
_UNIX = 3


def _zip_member_data(bundle: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    """A member's data, unpacked a bounded part at a time into one buffer of its declared size,
    and its CRC checked."""
    with bundle.open(member) as opened:
        data = io.BufferedReader(_BoundedReads(opened)).read(member.file_size)
        opened.read(1)  # zipfile checks the CRC once the member's end is read, also of an empty one
    return data


class _BoundedReads(io.RawIOBase):
    """A file read at most _MOST_UNPACKED_A_CALL bytes a call."""

    def __init__(self, source: BinaryIO):
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._source.read(min(len(buffer), _MOST_UNPACKED_A_CALL))
        buffer[: len(data)] = data
        return len(data)


# Info-ZIP's Unicode Path extra field (APPNOTE.TXT 4.6.9): a second, UTF-8 name for a member.
_UNICODE_PATH_FIELD = 0x7075


def _check_unicode_path_field(archive: Path, member: zipfile.ZipInfo) -> None:
    """Refuse a member whose Unicode Path extra field names another path: zipfile ignores the
    field and `unzip` uses it, so the two would file the image under different classes. A field
    that names the header's own name, written in a DOS code page (`数据集/train/cat` in GBK, as
    Info-ZIP writes it on a Windows whose code page is not UTF-8: version 1, the CRC-32 of the
    header's name, no UTF-8 flag), is that name in Unicode, and read so (refused, "re-create the
    zip" wrote the same zip again). Hand-written because zipfile leaves extra fields unparsed."""
    extra, position = member.extra, 0
    while position + 4 <= len(extra):
        tag, size = struct.unpack("<HH", extra[position : position + 4])
        field = extra[position + 4 : position + 4 + size]
        if tag == _UNICODE_PATH_FIELD and len(field) > 5:  # a version byte and the name's CRC-32 come first
            other = field[5:].decode("utf-8", "replace")
            if other == member.filename:
                pass
            elif _the_same_name(member, field):
                _check_name(archive, other, made_on_windows=member.create_system != _UNIX)
                member.filename = other
            else:
                raise DataError(
                    f"{archive}: member {member.filename[:200]!r} also calls itself {other[:200]!r} (its Unicode "
                    f"Path field), and tools disagree on which name, so on which class; re-create the zip from a "
                    f"plain folder of images"
                )
        position += 4 + size


# The DOS code pages a zip's header names are written in where not in UTF-8.
_DOS_CODE_PAGES = (
    "cp437", "cp737", "cp775", "cp850", "cp852", "cp855", "cp857", "cp858", "cp860", "cp861", "cp862", "cp863",
    "cp864", "cp865", "cp866", "cp869", "cp874", "cp932", "cp936", "cp949", "cp950", "gbk", "gb18030", "big5",
)  # fmt: skip


def _the_same_name(member: zipfile.ZipInfo, field: bytes) -> bool:
    """Whether a version 1 Unicode Path field names the header's own name, which it was written
    beside, in a DOS code page (unzip ignores one of another version, or beside a UTF-8 name)."""
    if field[0] != 1 or member.flag_bits & 0x800:
        return False
    header_name = member.orig_filename.encode("cp437")  # zipfile's decoding, where the UTF-8 flag is off
    if field[1:5] != zlib.crc32(header_name).to_bytes(4, "little"):
        return False
    name = field[5:].decode("utf-8", "replace")
    for page in _DOS_CODE_PAGES:
        with contextlib.suppress(UnicodeEncodeError):
            if name.encode(page) == header_name:
                return True
    return False


def _check_zip_directory(archive: Path) -> bool:
    """Refuse a zip whose central directory is larger than MAX_ZIP_DIRECTORY_BYTES before
    zipfile parses that directory, or one followed by more than NUL padding; whether every
    reader finds the directory in one place."""
    with archive.open("rb") as stream:
        directory = zip_directory(stream)
    if directory.size > MAX_ZIP_DIRECTORY_BYTES:
        raise DataError(
            f"{archive}: its list of members takes {directory.size:,} bytes, more than the {MAX_ZIP_DIRECTORY_BYTES:,} "
            f"a zip of at most {MAX_MEMBERS:,} members needs; if it is genuine, {_FIX}"
        )
    if directory.data_after_it:  # a .tar.gz joined after the zip: its images went unread without a word
        raise DataError(
            f"{archive}: data follows the zip's end record (another archive joined after it?), which unzip and "
            f"zipfile pass over unread; re-create the zip from a plain folder of images"
        )
    return directory.located_alike


def _add_member(members: dict[str, bytes], name: str, data: bytes, archive: Path) -> None:
    """A second member of the same path, other bytes, would silently replace the first: a poisoned
    label. The same bytes again (`tar -czf x.tar.gz train train/cat`) are the same image."""
    if not PurePosixPath(name).parts:  # '', '.' or './' name the archive's own folder, never a file
        raise _unsafe(archive, name, "a file without a name, where only folders may be '.'")
    path = str(PurePosixPath(name))
    if members.get(path, data) != data:
        raise DataError(
            f"{archive}: member {name[:200]!r} appears twice, with other contents, and which copy is meant cannot be "
            f"told; "
            f"re-create the archive from a plain folder of images"
        )
    members[path] = data


def _refuse_a_file_that_is_a_folder(archive: Path, files: dict[str, bytes], folders: set[str]) -> None:
    """A path that is both a file and a folder (a folder member at an image's path, or a file
    where images have their class folder): tools differ on which it is. tar replaced the image
    with an empty folder, unzip stopped, and the import took the image.

    A file that is the folder of another member (`cat/0000.jpg` beside `cat/0000.jpg/sub/`) is
    found by where its name and a '/' would sort among the names: a set of every member's
    folders took memory that grows with the square of a name's depth (2.4 GB for one member
    50,000 folders deep, in a 1.2 MB tar)."""
    names = sorted(files.keys() | folders)
    clash = sorted(folders & files.keys()) or [name for name in sorted(files) if _holds_a_member(names, name)]
    if clash:
        raise DataError(
            f"{archive}: member {clash[0][:200]!r} is both a file and a folder, and tools differ on which it is; "
            f"re-create the archive from a plain folder of images"
        )


def _holds_a_member(sorted_names: list[str], folder: str) -> bool:
    """Whether a name of `sorted_names` (files and folders) lies below `folder`."""
    below = bisect.bisect_left(sorted_names, folder + "/")
    return below < len(sorted_names) and sorted_names[below].startswith(folder + "/")


def _too_many_members(archive: Path) -> DataError:
    return DataError(
        f"{archive}: more than {MAX_MEMBERS:,} members, far more than CIFAR-10's 60,000 images; keep only the train/ "
        f"and test/ trees in it, {MAX_MEMBERS:,} members at most"
    )


def _check_name(archive: Path, name: str, made_on_windows: bool) -> None:
    """Refuse a member name tools read otherwise. `made_on_windows`: a zip member from a system
    other than Unix, whose '\\' unzip reads as '/'."""
    if "\0" in name:  # a pax path may hold one; tar cuts the name there, Python does not
        raise _unsafe(archive, name, "a NUL byte in its name, where tools cut it short")
    path = PurePosixPath(name)
    folders = path.parts[:-1]
    if made_on_windows and "\\" in name:
        # unzip takes it for '/', as some Windows tools mean it; here it would be one name
        # outside any class folder, an image left out without a word.
        raise DataError(
            f"{archive}: member {name[:200]!r} holds '\\', which unzip reads as a folder separator in a zip made "
            f"on Windows; re-create the zip with '/' between folders, as `zip -r` does, and no '\\' in a file or "
            f"folder name"
        )
    # tar, and unzip for a zip made on Unix, keep it in the name: a class folder's `cat\0019.png`,
    # written by `tar -c` or `zip -r` on Linux, is an image of that class (refused, with the advice
    # to do what had written it)
    if "\\" in name and (len(folders) < 2 or any("\\" in folder for folder in folders)):
        raise DataError(
            f"{archive}: member {name[:200]!r} holds '\\' outside the file names in class folders, where some "
            f"Windows tools write it between folders and tar and unzip read it as part of a name; re-create the "
            f"archive with '/' between folders, and no '\\' in a folder name"
        )
    if path.is_absolute():
        raise _unsafe(archive, name, "an absolute path, outside the archive's folder")
    if ".." in path.parts:
        # Refused even where it would land inside (a/../b): an unpacker following it may not.
        raise _unsafe(archive, name, "its path climbs up with '..'")


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
