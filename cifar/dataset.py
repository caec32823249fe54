"""The dataset's on-disk format, the one every stage after download reads.

A folder with `train.npz` and `test.npz`, each holding `images` (uint8, N x 32 x 32 x 3),
`labels` (int64) and `classes` (names, index = label), plus a manifest of their SHA-256
so that damage is caught on load. Where the images come from is `cifar.ingest.sources`' concern.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar.atomic import atomic_path
from cifar.config import IMAGE_SIZE, SPLIT_SIZES
from cifar.errors import DataError, one_line, short_repr, unreadable
from cifar.reading import kind_of, read_json_artifact, zip_directory

SPLITS = ("train", "test")
# CIFAR-10 training-set channel statistics, in [0, 1] units: what every loader normalises by
# and every saved model records.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8, N x H x W x C
    labels: np.ndarray  # int64, N
    classes: tuple[str, ...]
    # The SHA-256 of the file load_split read it from, taken as it read it: the manifest, read
    # again later, may be of a split that download wrote meanwhile. None for a split made in memory.
    sha256: str | None = None
    # Each image's file, where download read it from a class tree (a refusal names them).
    files: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.labels)


def per_class_quota(limit: int, num_classes: int) -> list[int]:
    """How many images of each class a class-balanced subset of `limit` takes."""
    base, extra = divmod(limit, num_classes)
    return [base + (index < extra) for index in range(num_classes)]


def first_of_each_class(labels: np.ndarray, classes: tuple[str, ...], limit: int | None, what: str) -> np.ndarray:
    """Indices of the first images of each class, `limit` in all (None: all), in order."""
    if limit is None:
        return np.arange(len(labels))
    chosen = []
    for label, quota in enumerate(per_class_quota(limit, len(classes))):
        indices = np.flatnonzero(labels == label)
        if len(indices) < quota:
            raise DataError(
                f"{what} = {limit} asks for {quota} images of class {classes[label]!r} "
                f"but the source has {len(indices)}; lower {what} to at most "
                f"{largest_balanced_subset(labels, len(classes)):,}, or set it to null to take every image"
            )
        chosen.append(indices[:quota])
    return np.sort(np.concatenate(chosen))


def largest_balanced_subset(labels: np.ndarray, num_classes: int) -> int:
    """The most images a class-balanced subset takes: as many of each class as the smallest has."""
    return num_classes * int(np.bincount(labels, minlength=num_classes).min())


def class_balanced_subset(split: Split, limit: int | None, what: str) -> Split:
    """The first images of each class, `limit` in all, in their original order."""
    keep = first_of_each_class(split.labels, split.classes, limit, what)
    files = tuple(split.files[index] for index in keep) if split.files else None
    return Split(split.images[keep], split.labels[keep], split.classes, files=files)


MANIFEST = "manifest.json"
# The manifest names two files and their digests: 200 bytes.
MAX_MANIFEST_BYTES = 64 << 10
FIX = "re-create it with `dvc repro download` (or `dvc checkout` to restore it from the cache)"
# A split's file holds at most the split's every image (uint8) and label (int64), plus class
# names and the .npy headers; anything larger is refused before it is hashed or loaded.
IMAGE_BYTES = IMAGE_SIZE * IMAGE_SIZE * 3
SPLIT_FILE_SLACK_BYTES = 1 << 20
# A classifier tells apart at least two classes; CIFAR-10 has ten, and a thousand (ImageNet's
# count) is far beyond any split the download stage writes, whose model would grow with it.
MAX_CLASSES = 1000
# CIFAR-10's longest name has 10 characters; evaluate's tables hold two names a row.
MAX_CLASS_NAME_CHARS = 100


def check_same_classes(classes: tuple[str, ...], whose: str, split: Split, split_path: str, fix: str) -> None:
    """Refuse to pair a model or split with a split whose label ids name other classes: each
    label would silently stand for another class."""
    if tuple(classes) != split.classes:
        raise DataError(
            f"{whose} has classes {', '.join(classes)} but {split_path} has {', '.join(split.classes)}, so each "
            f"label id would name another class; {fix}"
        )


def file_digest(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def refuse_to_replace_what_it_did_not_write(folder: str | Path) -> None:
    """Refuse a dataset folder holding anything save_dataset does not write: the run replaces the
    folder whole, and a tree kept there went with it, however it reached the import (through
    bind and overlay mounts of it whose layers the mount table names otherwise, a FUSE view)."""
    written = {f"{name}.npz" for name in SPLIT_SIZES} | {MANIFEST}
    try:
        with os.scandir(folder) as entries:  # the first hundred named are enough to say what is there
            others = sorted(entry.name for entry in itertools.islice(entries, 100) if entry.name not in written)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):  # none yet, or a file, which writing it names
            return
        raise DataError(
            f"{folder}: cannot be listed ({error.strerror}), so whether it holds more than what download writes "
            f"there cannot be told; move it out of the way (a run replaces it) and run again"
        ) from None
    if others:
        named = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise DataError(
            f"{folder} holds {named}, which download did not write: a run replaces the folder, and what it holds "
            f"with it (`dvc repro` removes it before download runs); move that out of {folder} (point data.source "
            f"there if it is the data) and run again"
        )


def save_dataset(splits: dict[str, Split], folder: str | Path) -> None:
    """One .npz per split and a manifest of their SHA-256, so damage is caught on load.

    A failed write (a full disk, no permission) is atomic_path's one-line error, and the
    previous data stays.
    """
    with atomic_path(folder) as scratch:
        scratch.mkdir()
        for name, split in splits.items():
            np.savez(scratch / f"{name}.npz", images=split.images, labels=split.labels, classes=np.array(split.classes))
        digests = {f"{name}.npz": file_digest(scratch / f"{name}.npz") for name in splits}
        (scratch / MANIFEST).write_text(json.dumps(digests, indent=2) + "\n", encoding="utf-8")


def split_digest(folder: str | Path, name: str) -> str:
    """The split's recorded SHA-256 (what load_split verifies): identifies the data a run saw."""
    return read_json_artifact(Path(folder) / MANIFEST, MAX_MANIFEST_BYTES, FIX)[f"{name}.npz"]


def recorded_split_problem(recorded: object, split: Split, folder: str | Path, name: str) -> str | None:
    """Why a split's SHA-256 that an artifact records (`{name}_sha256`) is not the digest of
    `split`, loaded from `folder`, if it is not: whatever was made from it was made from other data."""
    key = f"{name}_sha256"
    if not isinstance(recorded, str) or not re.fullmatch("[0-9a-f]{64}", recorded):
        return f"{key} = {short_repr(recorded)} is not a SHA-256 digest (64 lowercase hexadecimal digits)"
    if recorded != split.sha256:
        return f"{key} is not the SHA-256 of {Path(folder) / name}.npz as it is now: it was made from other data"
    return None


# np.savez writes a stored member per array, listed in 169 bytes here. zipfile makes a Python
# object of about 0.5 KB of each 46-byte entry: 1.8 million empty members (142 MB) took train
# 554 MiB more than a split's file of its size.
MAX_SPLIT_DIRECTORY_BYTES = 64 << 10


def _is_a_member_numpy_reads(member: zipfile.ZipInfo) -> bool:
    encrypted = member.flag_bits & 0x1
    return not encrypted and member.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def load_split(folder: str | Path, name: str) -> Split:
    """Read one split back, checking it is what the download stage wrote."""
    path = Path(folder) / f"{name}.npz"
    if not path.is_file():
        found = "not found" if not path.exists() else f"{kind_of(path.stat().st_mode)}, not a regular file"
        raise DataError(f"{path}: {found}; {FIX}")
    most = SPLIT_SIZES[name] * (IMAGE_BYTES + 8) + SPLIT_FILE_SLACK_BYTES
    if path.stat().st_size > most:
        raise DataError(
            f"{path}: {path.stat().st_size:,} bytes, more than the {most:,} of {SPLIT_SIZES[name]:,} images; {FIX}"
        )
    try:
        expected = split_digest(folder, name)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{Path(folder) / MANIFEST}: missing or unreadable ({one_line(error)}); {FIX}") from None
    try:
        # One open file for the digest and the arrays: download may replace the split in between.
        stream = path.open("rb")
    except OSError as error:
        raise unreadable(path, error, FIX) from None
    with stream:
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
        if digest != expected:
            raise DataError(
                f"{path}: contents differ from the download stage's checksum (truncated or modified); {FIX}"
            )
        directory_size = zip_directory(stream).size
        if directory_size > MAX_SPLIT_DIRECTORY_BYTES:
            raise DataError(
                f"{path}: its list of members takes {directory_size:,} bytes, where np.savez's takes about 200; {FIX}"
            )
        stream.seek(0)
        try:
            with np.load(stream, allow_pickle=False) as stored:
                members = stored.zip.infolist()
                # Members may be compressed: what they unpack to is checked before they are.
                unpacked = sum(member.file_size for member in members)
                if unpacked > most:
                    raise DataError(
                        f"{path}: unpacks to {unpacked:,} bytes, more than the {most:,} of {SPLIT_SIZES[name]:,} "
                        f"images; {FIX}"
                    )
                unread = next((member for member in members if not _is_a_member_numpy_reads(member)), None)
                if unread:
                    raise DataError(
                        f"{path}: its member {short_repr(unread.filename)} is encrypted or compressed otherwise than "
                        f"np.savez and np.savez_compressed write; {FIX}"
                    )
                arrays = {key: stored[key] for key in ("images", "labels", "classes")}
        # numpy refuses to allocate an array whose header declares more than memory can hold.
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, zlib.error, EOFError, MemoryError) as error:
            raise DataError(f"{path}: unreadable or truncated ({one_line(error)}); {FIX}") from None
    not_arrays = [key for key, array in arrays.items() if not isinstance(array, np.ndarray)]
    if not_arrays:  # numpy hands over a member without a .npy header as its bytes
        raise DataError(f"{path}: its member {not_arrays[0]}.npy is not a .npy array; {FIX}")
    if arrays["classes"].ndim != 1 or arrays["classes"].dtype.kind != "U":
        raise DataError(
            f"{path}: class names are {arrays['classes'].dtype} {arrays['classes'].shape}, expected a list of text; "
            f"{FIX}"
        )
    names = arrays["classes"]
    if not 2 <= len(names) <= MAX_CLASSES:  # before a string is made of each: 250 million empty names took 2.9 GB
        raise DataError(f"{path}: {len(names)} class names, expected 2 to {MAX_CLASSES} (CIFAR-10 has 10); {FIX}")
    points = names.astype(names.dtype.newbyteorder("<")).view("<u4") if names.dtype.itemsize else np.zeros(0)
    if ((points > 0x10FFFF) | ((points >= 0xD800) & (points <= 0xDFFF))).any():  # str() of one failed in C
        raise DataError(f"{path}: class names hold code points that are not Unicode characters; {FIX}")
    split = Split(arrays["images"], arrays["labels"], tuple(str(name) for name in names), digest)
    images, labels = split.images, split.labels
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise DataError(f"{path}: images are {images.dtype} {images.shape}, expected uint8 N x 32 x 32 x 3; {FIX}")
    if labels.dtype != np.int64 or labels.shape != (len(images),):
        raise DataError(
            f"{path}: labels are {labels.dtype} {labels.shape}, expected int64 of length {len(images)}; {FIX}"
        )
    if len(images) == 0:
        raise DataError(f"{path}: holds no images; {FIX}")
    too_long = next((name for name in split.classes if len(name) > MAX_CLASS_NAME_CHARS), None)
    if too_long:  # a row of evaluate's tables holds two names, and figures refuses rows over 1 KiB
        raise DataError(
            f"{path}: class name {short_repr(too_long)} has {len(too_long):,} characters, more than the "
            f"{MAX_CLASS_NAME_CHARS} a class name may take; {FIX}"
        )
    # A carriage return split evaluate's CSV rows, and a lone surrogate was refused as a path the
    # locale cannot encode; names are printed, written to CSV and drawn.
    unprintable = next((name for name in split.classes if not name.isprintable()), None)
    if unprintable is not None:
        raise DataError(f"{path}: class name {ascii(unprintable)[:120]} is not printable text; {FIX}")
    if not all(split.classes) or len(set(split.classes)) < len(split.classes):
        # Two labels of one name: a model trained on them was saved, and every later stage refused it.
        raise DataError(
            f"{path}: class names {short_repr(list(split.classes))} are not all different and non-empty; {FIX}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(split.classes)):
        raise DataError(
            f"{path}: label ids must lie in 0..{len(split.classes) - 1}, found {labels.min()}..{labels.max()}; {FIX}"
        )
    # download takes images of every class into both splits; a class without test images made
    # evaluate write an empty per-class accuracy, which figures then blamed on evaluate.
    absent = np.flatnonzero(np.bincount(labels, minlength=len(split.classes)) == 0)
    if len(absent):
        raise DataError(f"{path}: holds no images of class {short_repr(split.classes[absent[0]])}; {FIX}")
    return split
