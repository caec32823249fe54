"""CIFAR-10 from a source into `cifar.dataset.Split`s.

Sources: the official archive through torchvision (md5-checked download), a local copy
(the official archive or its extracted batches, or a class-per-folder tree or archive of
one), or a generated synthetic set.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import itertools
import logging
import os
import re
import shlex
import stat
import sys
import time
import unicodedata
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from cifar.atomic import scratch_folder, stop_signals_held
from cifar.cli import in_a_dvc_workspace_copy
from cifar.config import SPLIT_SIZES, DataConfig
from cifar.dataset import SPLITS, Split, class_balanced_subset, first_of_each_class, largest_balanced_subset
from cifar.errors import READ_ACCESS_FIX, DataError, first_folder_not_searchable, memory_limits_set, printable
from cifar.ingest import archives
from cifar.ingest.images import GIT_LFS_PULL, MAX_IMAGE_FILE_BYTES, decode_image, git_lfs_pointer, read_image
from cifar.ingest.synthetic import synthetic_split
from cifar.reading import kind_of

log = logging.getLogger(__name__)

# Index = label, as in the official archive's batches.meta.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
OFFICIAL_FOLDER = "cifar-10-batches-py"
# What `dvc exp run --temp` copies: a folder `dvc add` tracked, committed, was missing there, and
# tracking it with DVC was advised.
# A queued experiment's copy is made when it is queued: committing later changes nothing in it.
DVC_COPY_HOLDS = (
    "the files git tracked when the experiment was run or queued, and of the data DVC tracks only what a stage "
    "depends on"
)
DVC_COPY_FIX = "give data.source as an absolute path, or commit the data with git and run or queue the experiment again"

EXPECTED_LAYOUT = (
    "expected the official cifar-10-python.tar.gz (or its extracted cifar-10-batches-py "
    "folder), or a class-per-folder tree train/<class>/*.png|jpg and test/<class>/*.png|jpg, "
    "or a .tar/.tar.gz/.tar.xz/.tar.bz2/.zip archive of that tree"
)


def import_dataset(
    config: DataConfig, seed: int, download_dir: Path, keep_out: tuple[Path, ...] = (), workspace: Path | None = None
) -> dict[str, Split]:
    """Both splits from the configured source, limited as configured.

    download_dir holds the official archive and the scratch folders of downloads and
    official-batch imports (cifar.atomic.scratch_folder; the stages sweep what a killed run left).
    A local source, or the tree or batches a folder source leads to, may not lie in `keep_out`, the
    pipeline's outputs, which a run replaces. `workspace`: the one DVC runs this stage in a copy of.
    """
    limits = {"train": config.train_limit, "test": config.test_limit}
    if config.source == "synthetic":
        return {
            name: synthetic_split(limits[name] or SPLIT_SIZES[name], seed=seed + index)
            for index, name in enumerate(SPLITS)
        }
    if config.source == "official":
        splits = download_official(download_dir)
    else:
        path = _local_path(config.source)
        leaving = _link_leaving_dvcs_copy(path)
        # Wherever it leads from the copy (the workspace's own data/cifar10, which was then named
        # as the output the source lies in), it is not where it led from the workspace.
        if leaving:
            raise _leads_out_of_dvcs_copy(path, leaving)
        in_workspace = workspace / path if workspace is not None and not path.is_absolute() else None
        if in_workspace is not None:
            _refuse_what_the_copy_cannot_hold(path, workspace, in_workspace)
        if in_workspace is not None and not os.path.exists(path) and os.path.exists(in_workspace):
            # a committed link to git-ignored data was "a drive not mounted"
            raise DataError(
                f"data.source = {config.source!r} is in the workspace but not in the copy of the workspace that DVC "
                f"runs this experiment in, which holds {DVC_COPY_HOLDS}; {DVC_COPY_FIX}"
            )
        outputs = _Outputs(keep_out)
        output = outputs.holding(path)
        if output:  # a source kept in data/cifar10 (where fast.ai's cifar10.tgz unpacks)
            raise DataError(
                f"data.source = {config.source!r} lies in {output}, one of the pipeline's outputs: a run replaces it, "
                f"and the data with it (`dvc repro` removes it before download runs); move the data out of {output} "
                f"and point data.source there"
            )
        splits = import_local(path, limits, download_dir, outputs, in_workspace)
    splits = {name: class_balanced_subset(splits[name], limits[name], f"data.{name}_limit") for name in SPLITS}
    for name, split in splits.items():
        # Every later stage refuses a split file beyond CIFAR-10's size, and advised running
        # download again, which wrote the same one (53,000 train images of a tree with copies).
        if len(split.labels) > SPLIT_SIZES[name]:
            # At most what a class-balanced subset can take: CIFAR-10's size was advised where one
            # class held fewer than a tenth of it, and that limit was refused in turn.
            fitting = min(SPLIT_SIZES[name], largest_balanced_subset(split.labels, len(split.classes)))
            raise DataError(
                f"data.source = {config.source!r}: its {name} split holds {len(split.labels):,} images, more than "
                f"CIFAR-10's {SPLIT_SIZES[name]:,}, the most the stages read; set data.{name}_limit to at most "
                f"{fitting:,}, or remove the extra images (copies, or another data set's)"
            )
    _refuse_repeated_test_images(splits, config.source)
    return splits


def _refuse_repeated_test_images(splits: dict[str, Split], source: str) -> None:
    """A test image the test split holds twice, or the training split holds too: each copy
    counted as one more independent test of the model (its accuracy, and train's check that it
    learned more than chance), and one it trained on as a test of what it never saw. CIFAR-10
    repeats none (checked on its 60,000 images); a training split may repeat its own. Told by
    pixels: a PNG of a JPEG's pixels is the same image."""
    test, train = splits["test"], splits["train"]
    trained_on = {_pixels_digest(image): index for index, image in enumerate(train.images)}
    seen: dict[bytes, int] = {}
    repeated, in_training = [], []
    for index, image in enumerate(test.images):
        digest = _pixels_digest(image)
        if digest in seen:
            repeated.append((_image_named(test, "test", seen[digest]), _image_named(test, "test", index)))
        if digest in trained_on:
            in_training.append((_image_named(train, "train", trained_on[digest]), _image_named(test, "test", index)))
        seen.setdefault(digest, index)
    for pairs, problem, fix in (
        (repeated, "the same image more than once", "remove the copies"),
        (in_training, "images its train split holds too", "remove them from one of the splits"),
    ):
        if pairs:
            raise DataError(
                f"data.source = {source!r}: its test split holds {problem} ({len(pairs):,}, as {pairs[0][0]} and "
                f"{pairs[0][1]}): the test accuracy, and train's check that the model learned more than chance, "
                f"would count each as an independent test on an image it never saw; {fix}"
            )


def _image_named(split: Split, name: str, index: int) -> str:
    return split.files[index] if split.files else f"{name} image {index} (a {split.classes[split.labels[index]]})"


def _pixels_digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(image.tobytes(), digest_size=16).digest()


def _refuse_what_the_copy_cannot_hold(path: Path, workspace: Path, in_workspace: Path) -> None:
    """A relative data.source in DVC's copy of `workspace` that leads elsewhere from there than
    from the workspace through `..` (`../beside`, which git cannot hold), lies in a git repository
    of its own (a submodule, which DVC leaves empty), or is gone from the workspace since the
    experiment was queued: each was "commit the data with git", or no fix at all."""
    copy, there = Path.cwd().resolve(), os.path.realpath(in_workspace)
    leads_to = os.path.realpath(path)
    if ".." in path.parts and not f"{leads_to}{os.sep}".startswith(f"{copy}{os.sep}") and leads_to != there:
        raise DataError(
            f"data.source = {str(path)!r} climbs out of the repository with `..`, and from the copy of the workspace "
            f"that DVC runs this experiment in (inside .dvc/tmp/exps) it leads to {leads_to}, not to {there}; give "
            f"data.source as an absolute path"
        )
    inside = Path(os.path.normpath(in_workspace))
    nested = next(
        (
            folder
            for folder in itertools.takewhile(lambda each: each != workspace, (inside, *inside.parents))
            if os.path.lexists(folder / ".git")
        ),
        None,
    )
    copied = Path(os.path.relpath(nested, workspace)) if nested else None
    if copied and not _holds_anything(copied):
        raise DataError(
            f"data.source = {str(path)!r} lies in {copied}, a git repository of its own (a submodule, or a clone "
            f"inside this one), which DVC leaves empty in the copy of the workspace that it runs this experiment in; "
            f"give data.source as an absolute path ({inside})"
        )
    if os.path.exists(path) and (
        not os.path.exists(in_workspace) or os.path.isdir(path) != os.path.isdir(in_workspace)
    ):
        now = (
            "gone"
            if not os.path.lexists(in_workspace)
            else "a symbolic link to nothing"
            if not os.path.exists(in_workspace)
            else "a folder, not a file"
            if os.path.isdir(in_workspace)
            else "a file, not a folder"
            if os.path.isfile(in_workspace)
            else f"{kind_of(os.stat(in_workspace).st_mode)}, not a folder"
        )
        raise DataError(
            f"data.source = {str(path)!r} is in the copy of the workspace that DVC runs this queued experiment in, "
            f"but the workspace's is {now} (moved, removed or replaced since it was queued); put the data back, or "
            f"queue the experiment again with data.source where the data is now"
        )


def _holds_anything(folder: Path) -> bool:
    """Whether `folder` is one with an entry; one that cannot be listed counts as holding some (the
    import names what it cannot read)."""
    try:
        with os.scandir(folder) as entries:
            return any(True for _ in entries)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True


def _local_path(source: str) -> Path:
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", source)
    if scheme and not os.path.lexists(source):  # the address was called a missing file, its `//` made one `/`
        raise DataError(
            f"data.source = {source!r} is an address ({scheme[0]}), and download reads files and folders only; "
            f"write 'official' for CIFAR-10 from its site, or download the file yourself and give its path"
        )
    try:
        path = Path(source).expanduser()
    except RuntimeError:  # `~name/...` where no user is called name
        user = source.split("/")[0]
        raise DataError(
            f"data.source = {source!r}: there is no user {user[1:]!r} to expand {user}; write the path out"
        ) from None
    # Under a C or POSIX locale without UTF-8 mode, file names are ASCII: every os call on
    # a path with é or ü would end in a UnicodeEncodeError.
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        raise DataError(
            f"data.source = {source!r} cannot be a file name in this locale's encoding "
            f"({sys.getfilesystemencoding()}); use a UTF-8 locale (export LC_ALL=C.UTF-8) or an ASCII path"
        ) from None
    return path


# Seconds to wait before each retry of a failed download.
RETRY_DELAYS = (2, 8, 30)
# The official archive's size. A cached file larger than it, or empty, is no copy of it, and is
# fetched again unread: torchvision's md5 check read a sparse 200 GiB one for over 300 s (and a
# link to /proc/self/pagemap, empty to stat, without end).
OFFICIAL_ARCHIVE_BYTES = 170_498_071


def download_official(download_dir: Path) -> dict[str, Split]:
    """The official archive via torchvision, md5-checked, then its batches (md5-checked too).

    The archive is fetched into a scratch folder and moved into download_dir only once its
    md5 matches, so an interrupted or corrupt download never stays behind.
    """
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    archive = download_dir / CIFAR10.filename
    _refuse_what_stands_in_its_place(archive)
    if not (_could_be_the_official_archive(archive) and check_integrity(str(archive), CIFAR10.tgz_md5)):
        archive.unlink(missing_ok=True)
        _fetch_with_retries(CIFAR10.url, archive, CIFAR10.tgz_md5)
    return import_local(archive, {"train": None, "test": None}, download_dir)


def _refuse_what_stands_in_its_place(archive: Path) -> None:
    """A folder (a user's notes in it), a named pipe or a device where the archive is kept: "Is a
    directory; check that it exists and that you may read and write it"."""
    try:
        mode = archive.lstat().st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise DataError(
            f"{archive}: {kind_of(mode)}, where download keeps the official archive it fetches; move it elsewhere "
            f"and re-run"
        )


def _could_be_the_official_archive(path: Path) -> bool:
    """Whether a cached file may be the official archive, by what stat says (a named pipe there
    would block the md5 check at open())."""
    try:
        found = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(found.st_mode) and 0 < found.st_size <= OFFICIAL_ARCHIVE_BYTES


def _fetch_with_retries(url: str, target: Path, md5: str) -> None:
    from torchvision.datasets.utils import download_url

    failures = []
    for attempt, delay in enumerate((*RETRY_DELAYS, None), start=1):
        try:
            with scratch_folder(target.parent, "download") as scratch:
                # torchvision raises if the md5 does not match; the scratch folder then goes.
                download_url(url, scratch, filename=target.name, md5=md5)
                os.replace(Path(scratch) / target.name, target)
            return
        except Exception as error:  # network errors come in many types (URLError, socket, ssl, md5)
            failures.append(f"{type(error).__name__}: {error}")
            log.warning("download attempt %d of %d failed (%s)", attempt, len(RETRY_DELAYS) + 1, failures[-1])
        if delay is not None:
            time.sleep(delay)
    raise DataError(
        f"could not download CIFAR-10 from {url} after {len(failures)} attempts (last: {failures[-1]}); "
        f"without network, point data.source at a local copy, e.g. "
        f"`dvc exp run -S data.source=/path/to/cifar-10-python.tar.gz` ({EXPECTED_LAYOUT})"
    )


def other_unicode_spelling(path: Path) -> Path | None:
    """The path as it exists with some of its names composed otherwise in Unicode (é as one code
    point or as e and an accent): both print alike, so "no such file" beside a visible folder
    said nothing. Name by name, as a folder and a file in it (or two accents in one name) may
    differ, and back again where a folder's twin in the other form holds the rest."""
    names = path.parts[1:] if path.anchor else path.parts
    wanted = {unicodedata.normalize("NFC", name) for name in names}
    # At most as many entries listed in all as a folder import lists: a typo beside a million
    # files took 272 MB and 2 s to refuse, with each name kept.
    room = archives.MAX_MEMBERS
    # Depth first without recursion (a path may have more names than Python's recursion limit),
    # each folder once per depth: twin spellings linked to one folder made the search 2**depth.
    pending, seen, by_composed_name = [(Path(path.anchor or "."), 0)], set(), {}
    while pending:
        place, depth = pending.pop()
        try:
            found = place.stat()  # followed: a link to nothing is no spelling to offer
        except OSError:
            continue
        if depth == len(names):
            if place != path:
                return place
            continue
        folder = found.st_dev, found.st_ino
        if (folder, depth) in seen:
            continue
        seen.add((folder, depth))
        if folder not in by_composed_name:  # each folder listed once, however many depths reach it
            by_composed_name[folder] = {}
            try:
                with os.scandir(place) as entries:
                    for entry in entries:
                        room -= 1
                        if room < 0:
                            return None
                        composed = unicodedata.normalize("NFC", entry.name)
                        if composed in wanted:
                            by_composed_name[folder].setdefault(composed, []).append(entry.name)
            except OSError:  # not a folder, or one that may not be listed: no spelling in it
                pass
        name = names[depth]
        twins = by_composed_name[folder].get(unicodedata.normalize("NFC", name), [])
        spellings = [name, *sorted(set(twins) - {name})]  # as typed first: "." and ".." are never listed
        pending.extend((place / spelling, depth + 1) for spelling in reversed(spellings))
    return None


def import_local(
    path: Path,
    limits: dict[str, int | None],
    scratch_parent: Path,
    outputs: _Outputs | None = None,
    in_workspace: Path | None = None,
) -> dict[str, Split]:
    """A folder, or an archive read whole into memory and checked (see cifar.ingest.archives).

    An archive of the official batches is written into a scratch folder inside
    scratch_parent for torchvision, which reads and md5-checks them from disk. `in_workspace`:
    where `path`, in DVC's copy of the workspace, lies in the workspace, whose must be the same.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        # `ls` lists it: "no such file" with the layouts was no fix, nor, in DVC's copy of the
        # workspace, which holds a link git tracks, "track it with git".
        link = _link_to_nothing_on_the_way(path)
        if link:
            what = "is a symbolic link to" if link == path else f"is reached through {link}, a symbolic link to"
            target, end = os.readlink(link), os.path.realpath(link)
            # `~/data -> ~/usb -> /media/usb`: the link in between, which exists, was said not to
            leads = target if os.path.normpath(os.path.join(link.parent, target)) == end else f"{target}, then {end}"
            raise DataError(
                f"data.source = {str(path)!r} {what} {leads}, which does not exist (a drive not mounted, or the data "
                f"moved); mount it, or point data.source at where the data is"
            ) from None
        # where the workspace lacks it too (a committed folder deleted), the workspace's own line
        if (
            not path.is_absolute()
            and in_a_dvc_workspace_copy()
            and (in_workspace is None or os.path.lexists(in_workspace))
        ):
            raise DataError(
                f"data.source = {str(path)!r}: no such file or directory in the copy of the workspace that DVC runs "
                f"this experiment in, which holds {DVC_COPY_HOLDS}; {DVC_COPY_FIX}"
            ) from None
        respelled = other_unicode_spelling(path)
        if respelled:
            raise DataError(
                f"data.source = {str(path)!a}: no such file or directory, but {str(respelled)!a} is: the "
                f"same letters composed otherwise in Unicode, which print alike; write that spelling in params.yaml, "
                f"in double quotes (YAML reads the same escapes)"
            ) from None
        keyword = str(path).strip().lower()
        if keyword in ("official", "synthetic"):  # `Synthetic` was called a missing path, the keywords unnamed
            raise DataError(
                f"data.source = {str(path)!r}: no such file or directory; for the keyword, write {keyword!r} "
                f"(lowercase, no spaces)"
            ) from None
        raise DataError(f"data.source = {str(path)!r}: no such file or directory; {EXPECTED_LAYOUT}") from None
    except OSError as error:
        raise _cannot_read_source(path, error) from None
    if stat.S_ISDIR(mode):
        return _import_folder(path, path, limits, outputs or _Outputs(()), in_workspace)
    if not stat.S_ISREG(mode):
        raise DataError(
            f"data.source = {str(path)!r} is {kind_of(mode)}, not an archive or a folder; {EXPECTED_LAYOUT}"
        )
    if in_workspace is not None:  # an archive replaced after `dvc exp run --queue` imported the queued one
        _refuse_a_differing_copy(
            path,
            (path.parent, {path.name: _fingerprint(path, archives.MAX_UNPACKED_BYTES)}),
            (in_workspace.parent, {path.name: _fingerprint(in_workspace, archives.MAX_UNPACKED_BYTES)}),
        )
    named_an_archive = path.name.lower().endswith(archives.SUFFIXES)
    try:
        # a zip by its contents, but "name it .zip" (or, named .tar.gz, ".zip") was advised in vain
        numpy_arrays = path.suffix.lower() == ".npz" or archives.numpy_arrays(path)
    except OSError as error:
        raise _cannot_read_source(path, error) from None
    if numpy_arrays:
        raise DataError(
            f"data.source = {str(path)!r} is a NumPy .npz file of arrays, which download does not import; "
            f"{EXPECTED_LAYOUT}"
        )
    if not named_an_archive:
        try:
            described = archives.format_not_read(path)
            by_contents, compression = archives.suffix_by_contents(path), archives.unread_compression(path)
        except OSError as error:
            raise _cannot_read_source(path, error) from None
        if described:  # a .7z or .cpio was called a file but not an archive
            raise DataError(f"data.source = {str(path)!r} is {described}")
        if by_contents:  # a gzip tar saved or linked without its suffix was called no archive
            raise DataError(
                f"data.source = {str(path)!r} is a {by_contents} archive by its contents, but its name does not say "
                f"so; name it (or a link to it) to end in {by_contents}"
            )
        if compression:  # a .tar.zst was called no archive at all
            raise DataError(f"data.source = {str(path)!r} is {archives.compression_not_read(compression)}")
        raise DataError(f"data.source = {str(path)!r} is a file but not an archive; {EXPECTED_LAYOUT}")
    log.info("reading and checking %s", path)
    members = archives.read_members(path)
    # Only the batch files, which torchvision reads: a stray with a 300-byte name failed to be
    # written, and the line advised freeing space. A folder of that name without one (a class
    # tree kept in it, a README beside it; a copy emptied in Finder, its .DS_Store left) is none.
    batches = {
        name: data
        for name, data in members.items()
        if PurePosixPath(name).parent.name == OFFICIAL_FOLDER
        and PurePosixPath(name).name in OFFICIAL_BATCH_NAMES
        and not _macos_metadata(PurePosixPath(name).parts, data)
    }
    batch_names = {PurePosixPath(name).name for name in batches}
    tree_root = next(iter(_class_tree_roots(name for name in members if name not in batches)), None)
    batch_folders = sorted({str(PurePosixPath(name).parent) for name in batches})
    if len(batch_folders) > 1:  # their files were merged by name
        _refuse_two_official_folders(path, [f"{path}:{folder}" for folder in batch_folders])
    if batches:
        if tree_root is not None and batch_names >= set(OFFICIAL_BATCH_NAMES):
            folder = PurePosixPath(next(iter(batches))).parent
            _refuse_batches_beside_a_tree(path, f"{path}:{folder}", f"{path}:{tree_root}")
        with scratch_folder(scratch_parent, "extract") as scratch:
            folder = Path(scratch) / OFFICIAL_FOLDER
            try:
                folder.mkdir()
                for name, data in batches.items():
                    (folder / PurePosixPath(name).name).write_bytes(data)
            except OSError as error:
                raise DataError(
                    f"{path}: cannot write its batches into {scratch} ({error.strerror}); free space there "
                    f"or extract it yourself and point data.source at the folder"
                ) from None
            tree_inside = tree_root is not None and f"{tree_root}/".startswith(f"{batch_folders[0]}/")
            return _load_official_batches(Path(scratch), path, tree_inside)
    return read_class_folders(_archive_tree(members, path), limits)


def _import_folder(
    root: Path,
    source: Path,
    limits: dict[str, int | None],
    outputs: _Outputs,
    in_workspace: Path | None,
    find_only: bool = False,
) -> dict[str, Split] | Path:
    """The splits of the tree (or official batches) the search finds in `root`; with `find_only`,
    that folder. In DVC's copy of the workspace `in_workspace` is where `root` is in the workspace,
    where the search must find the same (see _refuse_what_the_copy_lacks)."""
    if in_workspace is not None:
        _refuse_what_the_copy_lacks(root, source, outputs, in_workspace)
    listing = _Listing(source)
    try:
        # The search passes over folders it cannot read, as in /proc, but not data.source itself:
        # of mode 000 (or 644, listed but not searched), it was "no train/ and test/ folders found in it".
        listing.names(root)
        os.stat(os.path.join(root, "."))
        # A class tree kept in a folder named cifar-10-batches-py is no set of batches.
        # A folder of that name without any of the batch files (a class tree kept in one, or in
        # one of its folders) is none.
        official = _find_folders(root, _holds_official_batches, listing)
        if len(official) > 1:  # an old copy beside the genuine one: which was read went unsaid
            _refuse_two_official_folders(source, [str(folder) for folder in official])
        found = _find_folders(root, lambda folder: any(_is_folder(folder / name) for name in SPLITS), listing)
        trees = [folder for folder in found if _is_a_tree(folder)]
        # A train/ and test/ pair without an image (configs/train/base/config.yaml) is no second tree.
        with_images = [tree for tree in trees if any(_holds_class_images(tree / name, listing) for name in SPLITS)]
        trees = with_images or trees
        broken = _link_to_no_folder(root, listing, (OFFICIAL_FOLDER, *SPLITS))
        if broken:  # a cifar-10-batches-py or train/ link to a moved folder was passed over, and another copy read
            raise _leads_out_of_dvcs_copy(source, broken) or DataError(
                f"data.source = {str(source)!r}: {broken} is a symbolic link that leads to no folder; point it "
                f"at the folder it stands for, or data.source at that folder"
            )
        blocked = _folders_not_searched(root, listing) if official or trees else []
        if blocked:  # a second tree there, which the user may not search, was passed over
            raise DataError(
                f"data.source = {str(source)!r}: {blocked[0]} cannot be searched, so whether it holds another copy "
                f"of the data cannot be told; {READ_ACCESS_FIX}"
            )
        if official:
            if with_images and not _batch_files_problem(official[0]):
                _refuse_batches_beside_a_tree(source, official[0], with_images[0])
            _refuse_a_tree_in_an_output(
                official[0], source, outputs, [official[0] / name for name in OFFICIAL_BATCH_NAMES]
            )
            if find_only:
                return official[0]
            return _load_official_batches(official[0].parent, source, bool(_subfolders(official[0], listing)))
        if not trees:
            blocked = _folders_not_searched(root, listing)
            if blocked:  # a link to a folder the user may not search was passed over: "no train/ and test/"
                raise DataError(
                    f"data.source = {str(source)!r}: {blocked[0]} cannot be searched, and the train/ and test/ "
                    f"folders, found nowhere else, may lie in it; {READ_ACCESS_FIX}"
                )
            # `raw/cifar10 -> ../../datasets/cifar10`, a drive not mounted or, in DVC's copy of the
            # workspace, a relative link that leaves it: "no train/ and test/", the layout the user has
            stray = _first_link_out_of_dvcs_copy(root, listing) or _link_to_no_folder(root, listing)
            if stray:
                raise _leads_out_of_dvcs_copy(source, stray) or DataError(
                    f"data.source = {str(source)!r}: no train/ and test/ folders found in it or up to two folders "
                    f"below it, and {stray}, where they may lie, is a symbolic link that leads to no folder (a "
                    f"drive not mounted, or the data moved); point it at the folder it stands for, or data.source "
                    f"at that folder"
                )
            # The official batches in a folder of another name, or an archive beside them, were
            # answered with the generic line, which names as expected what lies there.
            searched = [root, *_subfolders(root, listing)]
            batches = next((folder for folder in searched if (folder / "data_batch_1").is_file()), None)
            if batches:
                raise DataError(
                    f"data.source = {str(source)!r}: "
                    f"{_batches_elsewhere(str(batches), f'rename that folder to {OFFICIAL_FOLDER}')}"
                )
            packed = [name for name in listing.names(root) if name.lower().endswith(archives.SUFFIXES)]
            if packed:
                raise DataError(
                    f"data.source = {str(source)!r}: no train/ and test/ folders found in it or up to two folders "
                    f"below it, but it holds {_folder_names(packed, 3)}; set data.source to the archive itself"
                )
            if not root.is_absolute() and in_a_dvc_workspace_copy():  # its data git-ignored, so not copied
                raise DataError(
                    f"data.source = {str(source)!r}: no train/ and test/ folders found in it or up to two folders "
                    f"below it in the copy of the workspace that DVC runs this experiment in, which holds "
                    f"{DVC_COPY_HOLDS}; {DVC_COPY_FIX}"
                )
            raise DataError(
                f"data.source = {str(source)!r}: no train/ and test/ folders found in it or up to two folders below "
                f"it; {EXPECTED_LAYOUT}"
            )
        halves = [
            folder
            for folder in found
            if folder not in trees and any(_holds_class_images(folder / split, listing) for split in SPLITS)
        ]
        _check_one_tree(
            source, [str(tree.relative_to(root)) for tree in trees], [str(half.relative_to(root)) for half in halves]
        )
        # and each split and class folder, which a bind mount of an output's may stand in for (`-v
        # data/cifar10/train:/src/train`, or one for each class folder)
        splits = [trees[0] / split for split in SPLITS]
        _refuse_a_tree_in_an_output(
            trees[0], source, outputs, [*splits, *(each for split in splits for each in _subfolders(split, listing))]
        )
        if find_only:
            return trees[0]
        return read_class_folders(_folder_tree(trees[0], listing), limits)
    except OSError as error:
        where, fix = error.filename, ""
        if error.errno in (errno.EACCES, errno.EPERM):
            # Where a folder cannot be searched (`chmod -R 644`), the file it holds was named,
            # and `chmod u+rX` on it failed the same way.
            where = first_folder_not_searchable(root, Path(error.filename)) or where
            fix = f"; {READ_ACCESS_FIX}"
        raise DataError(
            f"{where}: cannot read it ({error.strerror}) while importing data.source = {str(source)!r}{fix}"
        ) from None


def _refuse_what_the_copy_lacks(root: Path, source: Path, outputs: _Outputs, in_workspace: Path) -> None:
    """A folder source in DVC's copy of the workspace (`root`), which holds only what git and DVC
    check out, against the same folder in the workspace: the search must find the same tree (or
    official batches) in both, with the same files the import reads, byte for byte. Images not yet
    committed were left out without a word (190 of 200 imported), also behind a link; a git-ignored
    second tree, refused in the workspace, was passed over in the copy; a git-ignored class folder
    was refused as train/ and test/ disagreeing; cat/ and dog/ swapped after `dvc exp run --queue`
    (every image of the same size) imported the old labels. Files the import does not read
    (`.DS_Store`, macOS's `._` files, an archive or previews beside the tree) may differ. What the
    workspace's import refuses (a folder inside a class folder, a bind mount of one class folder on
    another, which DVC copies as files) is refused as a run there refuses it."""
    there = _import_folder(in_workspace, source, {}, _Outputs(()), None, find_only=True)
    in_the_workspace = there.relative_to(in_workspace)
    workspaces = _files_read(there, source)
    try:
        found = _import_folder(root, source, {}, outputs, None, find_only=True)
    except DataError:
        found = None
    if found is None or found.relative_to(root) != in_the_workspace:
        raise DataError(
            f"data.source = {str(source)!r}: the workspace's {root / in_the_workspace} is not in the copy of the "
            f"workspace that DVC runs this experiment in, which holds {DVC_COPY_HOLDS}; {DVC_COPY_FIX}"
        )
    _refuse_a_differing_copy(source, (found, _files_read(found, source)), (there, workspaces))


# Files by their paths in a folder, each with its size and a digest of its contents (_fingerprint).
_Fingerprints = dict[str, tuple[int, bytes]]


def _refuse_a_differing_copy(
    source: Path, copied: tuple[Path, _Fingerprints], workspaces: tuple[Path, _Fingerprints]
) -> None:
    """The files an import reads, each with its size and digest by its path in a folder, in DVC's
    copy of the workspace (`copied`) and in the workspace, must agree."""
    (found, ours), (there, theirs) = copied, workspaces
    differing = sorted(name for name in ours.keys() | theirs.keys() if ours.get(name) != theirs.get(name))
    if not differing:
        return
    first = found / differing[0]
    # DVC checks out no Git LFS file into its copy, and left the workspace's as pointers too (DVC
    # 3.67): neither fix below would help.
    for path in (first, there / differing[0]):
        pointer = git_lfs_pointer(_start(path))
        if pointer:
            raise DataError(f"data.source = {str(source)!r}: {path} is {pointer}")
    if first.suffix.lower() in IMAGE_SUFFIXES and os.path.lexists(there / differing[0]):
        # what the workspace refuses the image for (a named pipe, 100 GB), not "commit it", which git cannot
        read_image(there / differing[0])
    files = f"{len(differing):,} file{'s' * (len(differing) > 1)} ({first} first)"
    raise DataError(
        f"data.source = {str(source)!r} differs in the copy of the workspace that DVC runs this experiment in "
        f"from the workspace's in {files}, as the copy holds {DVC_COPY_HOLDS}; {DVC_COPY_FIX}"
    )


def _files_read(found: Path, source: Path) -> _Fingerprints:
    """The files an import of `found` reads, by their paths in it, each with its size and a digest
    of what the import may read of it: the official batches, or the images of the class tree as
    the import builds it (refusing what it refuses)."""
    if found.name == OFFICIAL_FOLDER:
        read, most = [found / name for name in OFFICIAL_BATCH_NAMES], MAX_BATCH_FILE_BYTES
    else:
        tree = _folder_tree(found, _Listing(source))
        read = [Path(image.name) for split in tree.files.values() for folder in split.values() for image in folder]
        most = MAX_IMAGE_FILE_BYTES
    return {str(path.relative_to(found)): _fingerprint(path, most) for path in read}


def _fingerprint(path: Path, most: int) -> tuple[int, bytes]:
    """A file's size and the digest of its first `most` + 1 bytes, past which the import reads
    nothing (it refuses the file). Where it is no plain file or cannot be read, which the import
    names, its size alone: opening a named pipe would wait for a writer."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            return -1, b""
        with path.open("rb") as stream:
            while chunk := stream.read(min(1 << 20, most + 1 - stream.tell())):
                digest.update(chunk)
    except OSError:
        return -1, b""
    return status.st_size, digest.digest()


def _start(path: Path) -> bytes:
    """A plain file's first bytes, enough to tell what it is; none where it is no such file."""
    with contextlib.suppress(OSError):
        if stat.S_ISREG(path.stat().st_mode):
            with path.open("rb") as stream:
                return stream.read(archives.BLOCKSIZE)
    return b""


def _leads_out_of_dvcs_copy(source: Path, link: Path) -> DataError | None:
    """The refusal for a link git tracks, to data beside the workspace, where DVC runs the stage
    in a copy of the workspace: "a drive not mounted" was said of it, or, where the copy lies
    deeper, "no train/ and test/" of the folder it then led to (the workspace's own data/)."""
    if not (in_a_dvc_workspace_copy() and _leads_out_of_the_copy(link)):
        return None
    leads = f"to {os.path.realpath(link)} instead" if os.path.exists(link) else "nowhere"
    return DataError(
        f"data.source = {str(source)!r}: {link} is a symbolic link to {os.readlink(link)}, relative to where it "
        f"lies, and in the copy of the workspace that DVC runs this experiment in it leads {leads}; make the link "
        f"absolute, or give data.source as an absolute path"
    )


def _link_leaving_dvcs_copy(path: Path) -> Path | None:
    """The first link on the way to path, or path itself, that git tracks with a relative target
    leading out of DVC's copy of the workspace, wherever it then leads."""
    if not in_a_dvc_workspace_copy():
        return None
    on_the_way = [*(folder for folder in reversed(path.parents) if folder != Path(".")), path]
    with contextlib.suppress(OSError):
        return next((each for each in on_the_way if each.is_symlink() and _leads_out_of_the_copy(each)), None)
    return None


def _leads_out_of_the_copy(link: Path) -> bool:
    """A link inside DVC's copy of the workspace (the working folder) whose relative target leaves
    it: from the workspace it led to data beside it (`../outside/cifar.tar.gz`)."""
    copy, target = os.getcwd(), os.readlink(link)
    inside = os.path.commonpath((copy, os.path.abspath(link))) == copy
    leads_to = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(link)), target))
    return inside and not os.path.isabs(target) and os.path.commonpath((copy, leads_to)) != copy


def _link_to_nothing_on_the_way(path: Path) -> Path | None:
    """The first folder on the way to path, or path itself, that is a link to nothing: `~/usb`
    with the drive it leads to not mounted made the archive inside "no such file"."""
    on_the_way = [folder for folder in reversed(path.parents) if folder != Path(".")]
    try:
        return next((each for each in [*on_the_way, path] if each.is_symlink() and not each.exists()), None)
    except OSError:  # a folder on the way that cannot be searched: the generic line
        return None


def _cannot_read_source(path: Path, error: OSError) -> DataError:
    if error.errno == errno.ELOOP:  # "Too many levels of symbolic links", with the layouts for a fix
        first = _first_link_that_loops(path)
        looping = _the_loop_it_leads_into(first) if first else path
        through = f", and {first} leads into it" if first and looping != first else ""
        return DataError(
            f"data.source = {str(path)!r}: {looping} is a symbolic link that loops (it leads back to itself)"
            f"{through}; point it at the data, or data.source at where the data is"
        )
    if error.errno not in (errno.EACCES, errno.EPERM):
        return DataError(f"data.source = {str(path)!r}: cannot read it ({error.strerror}); {EXPECTED_LAYOUT}")
    # A folder on the way that cannot be searched: the readable archive in it was named. Where
    # that is a link, the folder on the way it leads: `chmod -R u+rX` on the link failed alike.
    where = first_folder_not_searchable(Path(path.anchor or "."), path.absolute() if path.anchor else path)
    if where is None or where.is_symlink():
        where = first_folder_not_searchable(Path("/"), Path(os.path.realpath(path))) or where
    where = where or path
    return DataError(f"data.source = {str(path)!r}: cannot read {where} ({error.strerror}); {READ_ACCESS_FIX}")


def _first_link_that_loops(path: Path) -> Path | None:
    on_the_way = [*(folder for folder in reversed(path.parents) if folder != Path(".")), path]
    return next((each for each in on_the_way if each.is_symlink() and _loops(each)), None)


def _the_loop_it_leads_into(link: Path) -> Path:
    """The link that leads back to itself, followed from `link`: `data -> nas/cifar` with `nas -> nas`
    named data, which does not loop, and never nas, which does."""
    seen = []
    while link not in seen and len(seen) < 64:  # the kernel gives up after 40 links
        seen.append(link)
        try:
            further = _first_link_that_loops(Path(os.path.join(link.parent, os.readlink(link))))
        except OSError:  # a folder on the way that may not be searched: the link as far as it was followed
            return link
        if further is None:
            return link
        link = further
    return link


def _loops(link: Path) -> bool:
    try:
        os.stat(link)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def _batches_elsewhere(folder: str, fix: str) -> str:
    return (
        f"{folder} holds official batch files (data_batch_1 ...), which are read only from a folder named "
        f"{OFFICIAL_FOLDER}, as in the official archive; {fix}, or use the official cifar-10-python.tar.gz"
    )


def _refuse_a_tree_in_an_output(found: Path, source: Path, outputs: _Outputs, within: Iterable[Path] = ()) -> None:
    """A tree unpacked into data/cifar10, reached from data/ or through a link, was imported,
    then replaced with the folder download writes, exit 0: the user's images were gone. So were
    the batches that a folder of links to them (`cp -rs`) led to."""
    for path, output in ((path, outputs.holding(path, with_folders_above=path == found)) for path in (found, *within)):
        if output:
            raise DataError(
                f"data.source = {str(source)!r} leads to {path}, in {output}, one of the pipeline's outputs: a run "
                f"replaces it, and the data with it (`dvc repro` removes it before download runs); move the data out "
                f"of {output} and point data.source there"
            )


class _Outputs:
    """The pipeline's outputs, which a run replaces, and whether a source reaches into one: by
    path, as links resolve; by device and inode, as a bind mount shows an output's folder under
    another path (docker `-v data/cifar10/train:/src/train`); or through an overlay mount one of
    whose layers is in an output. The mount table's order misled where mounts were stacked or
    moved (`mount --move` over a tmpfs)."""

    def __init__(self, paths: tuple[Path, ...]):
        self.paths = paths
        # resolved once: each class folder's check resolved all 27 outputs again
        self._resolved = [(_named(output), os.path.realpath(output)) for output in paths]
        self._held: dict[tuple[int, ...], str] | None = None
        self._mounts: list[_Mount] | None = None

    def holding(self, path: Path, with_folders_above: bool = True, through: frozenset[str] = frozenset()) -> str | None:
        """The output that path lies in. A file counts by its inode only where it is itself a
        mount point: a hard link to an output's file outlives the run. `through`: the overlays
        on the way here (see _layers)."""
        where = os.path.realpath(path)
        held = self._by_path(where)
        places = [Path(where), *(Path(where).parents if with_folders_above else ())]
        for place in places if not held else ():
            try:
                status = os.stat(place)
            except OSError:
                continue
            if stat.S_ISDIR(status.st_mode) or (
                place == Path(where) and any(mount.point == where for mount in self.mounts())
            ):
                held = self._identities().get(_identity(status))
                if held:
                    break
        mount = self._showing(where)
        if not held and mount is not None and mount.layers and mount.point not in through:
            through |= {mount.point}
            looked_in = (self.holding(Path(layer), False, through) for layer in _layers(mount, where))
            held = next(filter(None, looked_in), None)
        return held

    def _by_path(self, where: str) -> str | None:
        return next((named for named, at in self._resolved if os.path.commonpath((at, where)) == at), None)

    def _showing(self, where: str) -> _Mount | None:
        """The mount that shows `where`: the innermost one on it or a folder above it that no
        later mount hides."""
        holding = [mount for mount in self.mounts() if os.path.commonpath((mount.point, where)) == mount.point]
        on_top = [mount for mount in holding if _on_top(mount)]
        return max(reversed(on_top), key=lambda mount: len(mount.point), default=None)

    def mounts(self) -> list[_Mount]:
        if self._mounts is None:
            self._mounts = mount_table()
        return self._mounts

    def _identities(self) -> dict[tuple[int, ...], str]:
        """The identity of each output, of each folder in one (not through links) and of each of
        its files that a mount shows elsewhere, each naming its output; read once, breadth first,
        its other files passed over: a data set of 400,001 files kept beside the tree in
        data/cifar10 used up a budget of entries before the tree's own folders were reached."""
        if self._held is None:
            self._held, room = {}, OUTPUT_ENTRIES_LOOKED_AT
            mounted_files = self._files_mounted()
            pending = collections.deque((os.path.realpath(output), _named(output)) for output in self.paths)
            while pending:
                place, output = pending.popleft()
                # A folder passed over (one the user may not read, or at a path past the system's
                # longest) hid the class folders in it that a bind mount showed as the source.
                try:
                    status = os.lstat(place)
                    self._held.setdefault(_identity(status), output)
                    if not stat.S_ISDIR(status.st_mode):
                        continue
                    with os.scandir(place) as entries:
                        for entry in entries:
                            room -= 1
                            if room < 0:
                                raise _too_much_in_an_output(output)
                            if entry.is_dir(follow_symlinks=False) or entry.inode() in mounted_files:
                                pending.append((entry.path, output))
                except OSError as error:
                    if error.errno not in (errno.ENOENT, errno.ENOTDIR):  # not there (yet), or gone meanwhile
                        raise _cannot_look_through(place, output, error) from None
        return self._held

    def _files_mounted(self) -> set[int]:
        """The inode numbers of the files that a mount shows (a docker `-v` of one file)."""
        inodes = set()
        for mount in self.mounts():
            with contextlib.suppress(OSError):
                status = os.stat(mount.point)
                if not stat.S_ISDIR(status.st_mode):
                    inodes.add(status.st_ino)
        return inodes


# What an output may hold for the check that a source does not lead into it: a run writes three
# files in data/cifar10, one in each other output; data kept there is refused before this many.
OUTPUT_ENTRIES_LOOKED_AT = 4 * archives.MAX_MEMBERS


def _cannot_look_through(place: str, output: str, error: OSError) -> DataError:
    readable = error.errno in (errno.EACCES, errno.EPERM)
    return DataError(
        f"{place}: cannot be looked through ({error.strerror}), so whether data.source leads into {output}, one of "
        f"the pipeline's outputs, cannot be told; move what you keep there out of {output} (a run replaces it)"
        f"{', or ' + READ_ACCESS_FIX if readable else ''}"
    )


def _too_much_in_an_output(output: str) -> DataError:
    return DataError(
        f"{output}, one of the pipeline's outputs, holds more than {OUTPUT_ENTRIES_LOOKED_AT:,} files and folders, "
        f"far more than a run writes there, so whether data.source leads into it (through a mount) cannot be told; "
        f"move what you keep there out of {output} (a run replaces it) and run again"
    )


@dataclass(frozen=True)
class _Mount:
    point: str
    device: int
    layers: tuple[str, ...]  # an overlay's lower and upper folders, absolute (none for other mounts)


def _on_top(mount: _Mount) -> bool:
    """Whether the mount is the one its folder shows, not one hidden under a later mount there."""
    try:
        return os.stat(mount.point).st_dev == mount.device
    except OSError:
        return False


def _layers(mount: _Mount, where: str) -> list[str]:
    """Where the overlay `mount`, which shows `where`, has it from: the same path in each of its
    layers, looked at in turn (through a layer that is itself an overlay of an output too). Only
    the mount that shows `where`: a container's root overlay, whose layers lie outside it, was
    looked through for data on a volume mounted over it, and refused. The mount table keeps a
    layer's path as it was given: relative (placed from a folder it does not name) or since
    moved (the project renamed), it cannot be looked in; but the root's own layers (a container's
    image), which hold no output a run replaces, are passed over where they cannot be seen."""
    for layer in mount.layers if mount.point != "/" else ():
        if not os.path.isabs(layer):
            raise DataError(
                f"the overlay mounted at {mount.point} names its layer {layer} by a relative path, which the mount "
                f"table cannot place, so whether data.source shows one of the pipeline's outputs through it cannot "
                f"be told; mount the overlay again with its layers' absolute paths"
            )
        if not _there(layer):
            raise DataError(
                f"the overlay mounted at {mount.point} has {layer} as a layer, which is no longer there (moved since "
                f"it was mounted?), so whether data.source shows one of the pipeline's outputs through it cannot be "
                f"told; mount the overlay again with its layers where they are now"
            )
    placed = [layer for layer in mount.layers if os.path.isabs(layer) and _there(layer)]
    return [os.path.join(layer, os.path.relpath(where, mount.point)) for layer in placed]


def _there(path: str) -> bool:
    """Whether path names something, though perhaps in a folder this user may not search."""
    try:
        os.lstat(path)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _named(output: Path) -> str:
    """As the user knows it: data/cifar10, or, outside the working folder (the workspace of DVC's
    copy of it), its absolute path."""
    relative = os.path.relpath(output)
    return str(output) if relative.startswith("..") else relative


def mount_table() -> list[_Mount]:
    """Each mount in /proc/self/mountinfo (none where it cannot be read, off Linux)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as table:
            lines = table.read().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        fields, _, after = (part.split() for part in line.partition(" - "))
        device = re.fullmatch(r"(\d+):(\d+)", fields[2]) if len(fields) > 4 else None
        if device and len(after) > 2:
            layers = _overlay_layers(after[2]) if after[0] == "overlay" else ()
            mounts.append(_Mount(_unescaped(fields[4]), os.makedev(int(device[1]), int(device[2])), layers))
    return mounts


def _overlay_layers(options: str) -> tuple[str, ...]:
    """`lowerdir=/a:/b,upperdir=/c`, or Linux 6.8's `lowerdir+=/a,lowerdir+=/b`, with `:` and `,`
    in a folder's name escaped by a backslash (the table's own escapes, `\\134` for one, undone
    first)."""
    values = re.findall(r"(?:^|,)(lowerdir|upperdir|datadir)(\+?)=((?:\\.|[^,\\])*)", _unescaped(options))
    layers = [
        re.sub(r"\\(.)", r"\1", layer)
        for _, one_each, value in values
        for layer in ([value] if one_each else re.split(r"(?<!\\):", value))
    ]
    return tuple(layers)


def _unescaped(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda code: chr(int(code[1], 8)), field)


def _holds_official_batches(folder: Path) -> bool:
    """By one of the batch files' names; one that cannot be searched counts, and reading it names
    the fix: of mode 644 (listed, not searched), it was passed over, and a tree beside it imported.
    Each name looked up: listing the folder whole took 531 MiB for 1,500,000 entries."""
    if folder.name != OFFICIAL_FOLDER:
        return False
    for name in OFFICIAL_BATCH_NAMES:
        try:
            os.lstat(folder / name)
            return True
        except PermissionError:
            return True
        except OSError:
            continue
    return False


def _lists_one_of(folder: Path, names: tuple[str, ...]) -> bool:
    """Whether the folder lists one of names, reading at most as many entries as a source may hold."""
    try:
        with os.scandir(folder) as entries:
            return any(entry.name in names for entry in itertools.islice(entries, archives.MAX_MEMBERS))
    except OSError:
        return False


def _folders_not_searched(root: Path, listing: _Listing) -> list[Path]:
    """Where the search (root and up to two folders below it, as _find_folders) could not look:
    a folder that cannot be searched but lists cifar-10-batches-py, train or test, and a user's
    link on to a folder that cannot be searched, named as the first folder on the way that
    refuses. Not /proc's own (`/proc/1/cwd`), whose links cannot even be read."""
    wanted = (OFFICIAL_FOLDER, *SPLITS)
    blocked, level, seen = [], [root], set()
    for depth in range(3):
        below = []
        for folder in level:
            try:
                os.stat(os.path.join(_spelled(folder), "."))
            except PermissionError:
                # each such folder listed once: 2,000 links to one of 190,000 files took minutes
                with contextlib.suppress(OSError):
                    identity = _identity(os.stat(_spelled(folder)))
                    if identity in seen:
                        continue
                    seen.add(identity)
                if _lists_one_of(folder, wanted):
                    blocked.append(folder)
                continue
            except OSError:
                continue
            if depth < 2:
                kinds = _kinds_or_none(folder, listing)
                below += [folder / name for name in kinds.folders]
                blocked += kinds.blocked
                continue
            for path in _entries_named(folder, wanted):  # two folders below, only where train/ and test/ would be found
                try:
                    path.is_dir()
                except PermissionError:
                    blocked += filter(None, [_refusing_on_the_way(path)])
                except OSError:
                    pass
        level = below
    return blocked


def _refuse_two_official_folders(source: Path, folders: list[str]) -> None:
    raise DataError(
        f"data.source = {str(source)!r} holds {len(folders)} {OFFICIAL_FOLDER} folders ({', '.join(folders[:4])}), "
        f"and which one is meant cannot be told; keep only one of them in data.source"
    )


def _is_a_tree(folder: Path) -> bool:
    return all(_is_folder(folder / name) for name in SPLITS)


def _class_tree_roots(names: Iterable[str]) -> list[PurePosixPath]:
    """The folders of an archive that hold images in class folders of both train/ and test/ (a
    `docs/test/figures/plot.jpg` beside the official batches is no tree)."""
    splits_by_root: dict[PurePosixPath, set[str]] = {}
    for name in names:
        parts = PurePosixPath(name).parts
        if len(parts) >= 3 and parts[-3] in SPLITS and PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES:
            splits_by_root.setdefault(PurePosixPath(*parts[:-3]), set()).add(parts[-3])
    return [root for root, splits in splits_by_root.items() if splits == set(SPLITS)]


def _refuse_batches_beside_a_tree(source: Path, batches: object, tree: object) -> None:
    """An old cifar-10-batches-py below a class tree was imported in its place, without a word."""
    raise DataError(
        f"data.source = {str(source)!r} holds both the official batches ({batches}) and a class-folder tree "
        f"({tree}), and which one is meant cannot be told; keep only one of them in data.source"
    )


def _link_to_no_folder(root: Path, listing: _Listing, wanted: tuple[str, ...] | None = None) -> Path | None:
    """The first link that leads nowhere or loops: named as one of `wanted`, in root or up to two
    folders below it; or, where wanted is None, of any name in root or one folder below it, where
    a tree inside them would have been found (but /proc's, which cannot be read). The first only:
    3,000 links to a folder of 3,000 links to nothing are 9 million paths."""
    if wanted is None:
        folders = _root_and_level_one(root, listing)
        links = (folder / name for folder in folders for name in _kinds_or_none(folder, listing).to_nothing)
    else:
        links = (path for folder in listing.searched(root) for path in _entries_named(folder, wanted))
    return next((link for link in links if wanted is None or _leads_nowhere(link)), None)


def _first_link_out_of_dvcs_copy(root: Path, listing: _Listing) -> Path | None:
    """In DVC's copy of the workspace, the first link git tracks in root or one folder below it
    whose relative target leaves the copy: one that then led to the workspace's own data/ was
    passed over, and "no train/ and test/" said."""
    if not in_a_dvc_workspace_copy():
        return None
    listed = (path for folder in _root_and_level_one(root, listing) for path in _listed_or_none(folder, listing))
    return next((path for path in listed if _can_read_link(path) and _leads_out_of_the_copy(path)), None)


def _root_and_level_one(root: Path, listing: _Listing) -> Iterator[Path]:
    """root and the folders in it, each folder once, by the first path to it: one reached again by
    another (3,000 links to a folder of 3,000 entries) holds the same links, looked at once."""
    seen = set()
    for folder in [root, *_subfolders(root, listing)]:
        with contextlib.suppress(OSError):
            identity = _identity(os.stat(_spelled(folder)))
            if identity not in seen:
                seen.add(identity)
                yield folder


def _listed_or_none(folder: Path, listing: _Listing) -> Iterator[Path]:
    try:
        return listing(folder)
    except OSError:
        return iter(())


def _spelled(folder: Path) -> str:
    """The folder's path as a string that the Path does not keep: 190,000 folders at a 3.8 KB
    path, each keeping its own once looked at, took 870 MB."""
    return os.path.join(*folder.parts) if folder.parts else "."  # data.source `.` has none


def _refusing_on_the_way(link: Path) -> Path | None:
    """The first folder that cannot be searched on the way of a user's link on to one; none for
    /proc's own links (`/proc/1/cwd`), which cannot even be read."""
    try:
        os.readlink(link)
    except OSError:
        return None
    return first_folder_not_searchable(Path("/"), Path(os.path.realpath(link))) or link


def _kinds_or_none(folder: Path, listing: _Listing) -> _Kinds:
    try:
        return listing.kinds_of(folder)
    except OSError:  # unreadable: named by the search for folders that cannot be searched
        return _Kinds([], [], [])


def _can_read_link(path: Path) -> bool:
    try:
        os.readlink(path)
    except OSError:
        return False
    return True


def _leads_nowhere(path: Path) -> bool:
    """A link to nothing, or one that loops; not one to a folder the user may not search."""
    try:
        return path.is_symlink() and not path.exists()
    except PermissionError:
        return False


def _entries_named(folder: Path, names: tuple[str, ...]) -> list[Path]:
    return [folder / name for name in names if os.path.lexists(folder / name)]


def _first_unreadable_batch(folder: Path) -> Path | None:
    for name in OFFICIAL_BATCH_NAMES:
        try:
            with open(folder / name, "rb") as batch:
                while batch.read(1 << 20):
                    pass
        except OSError:
            return folder / name
    return None


@dataclass(frozen=True)
class ImageFile:
    """One image of a class-folder tree, in a folder or inside an archive."""

    name: str  # its path, or its name in the archive (ClassTree.named_within comes before it)
    decode: Callable[[], np.ndarray]
    # Alike for files that hold the same bytes, each decoded once: a folder's file by device and
    # inode, an archive's member by its data (hard links share their target's).
    contents: Hashable


@dataclass(frozen=True)
class ClassTree:
    """train/<class>/* and test/<class>/*: each split's image files by class folder, sorted."""

    root: str  # as messages name it
    files: dict[str, dict[str, list[ImageFile]]]
    # Files in train/, test/ or a class folder that are not imported (not named .png, .jpg or
    # .jpeg, or outside a class folder), as messages name them: logged, never silently dropped.
    skipped: tuple[str, ...] = ()
    # What messages put before each file's name: "archive:" inside an archive, whose path each
    # of 200,000 members' names held (a 3.6 KB path took download 690 MB more).
    named_within: str = ""


@dataclass(frozen=True)
class _Kinds:
    folders: list[str]
    to_nothing: list[str]
    blocked: list[Path]


class _Listing:
    """Sorted folder listings, at most archives.MAX_MEMBERS entries in all: a tree of millions
    of files is refused before its listing fills memory (Path.iterdir lists a folder whole)."""

    def __init__(self, source: Path):
        self.source = source
        self.room = archives.MAX_MEMBERS
        # Each folder listed once: the searches that look again (for links to nothing, folders
        # that cannot be searched) counted a 50,000-file folder beside the tree four times. By
        # name: the entries' full paths, 190,000 of them 3.8 KB long, took 1.6 GB.
        # A folder reached again (`raw-1 ... raw-30 -> raw`, bind mounts) is listed, and what its
        # entries are found, once: thirty links to a folder of 190,000 files beside the tree took
        # four minutes of examining the same files again.
        self.listed: dict[tuple[int, ...], list[str]] = {}
        self.kinds: dict[tuple[int, ...], _Kinds] = {}
        self.counted: set[tuple[int, int]] = set()
        self.search: list[Path] | None = None

    def searched(self, root: Path) -> list[Path]:
        """root and its folders up to two levels below it, by every path that leads to them, at
        most archives.MAX_MEMBERS: a folder listed once may be reached by many (3,000 links to a
        folder of 3,000 links made 9 million paths to look in, 2 GB and minutes)."""
        if self.search is None:
            level_one = _subfolders(root, self)
            search = [root, *level_one]
            for folder in level_one:
                below = _subfolders(folder, self)
                if len(search) + len(below) > archives.MAX_MEMBERS:
                    raise self._too_many()
                search += below
            self.search = search
        return self.search

    def __call__(self, folder: Path) -> Iterator[Path]:
        """Its entries, for the searches, one at a time: Path's child of folder shares its parts,
        where Path(entry.path) held a copy of them each."""
        return (folder / name for name in self.names(folder))

    def names(self, folder: Path) -> list[str]:
        identity = _identity(os.stat(_spelled(folder)))
        if identity not in self.listed:
            self.listed[identity] = sorted(entry.name for entry in self._read(folder))
        return self.listed[identity]

    def kinds_of(self, folder: Path) -> _Kinds:
        """What the folder's entries are, by name: folders (through links too), links that lead
        nowhere, and the first folder that cannot be searched on the way of a link on to one."""
        identity = _identity(os.stat(_spelled(folder)))
        if identity not in self.kinds:
            kinds = self.kinds[identity] = _Kinds([], [], [])
            for path in self(folder):
                try:
                    if path.is_dir():
                        if path.name != "__MACOSX":  # unzipping a Finder zip leaves a copy of attributes
                            kinds.folders.append(path.name)
                    elif _leads_nowhere(path) and _can_read_link(path):  # not /proc's, which cannot be read
                        kinds.to_nothing.append(path.name)
                except PermissionError:
                    kinds.blocked.extend(filter(None, [_refusing_on_the_way(path)]))
                except OSError:
                    pass
        return self.kinds[identity]

    def _read(self, folder: Path) -> Iterator[os.DirEntry]:
        status = os.stat(_spelled(folder))
        again = (status.st_dev, status.st_ino) in self.counted
        self.counted.add((status.st_dev, status.st_ino))
        with os.scandir(_spelled(folder)) as scan:
            for entry in scan:
                self.room -= not again
                if self.room < 0:
                    raise self._too_many()
                yield entry

    def _too_many(self) -> DataError:
        return DataError(
            f"data.source = {str(self.source)!r}: more than {archives.MAX_MEMBERS:,} files and folders to look "
            f"through, far more than CIFAR-10's 60,000 images; point it at a folder that holds only the train/ and "
            f"test/ trees, {archives.MAX_MEMBERS:,} files and folders at most ({EXPECTED_LAYOUT})"
        )

    def tree_entries(self, folder: Path) -> list[os.DirEntry]:
        """A folder of the class tree, sorted, whose links are refused: `train/dog -> cat`, or
        `train/dog/x.png -> ../cat/0000.png`, imported cat images labelled dog."""
        entries = sorted(self._read(folder), key=lambda entry: entry.name)
        for entry in entries:
            if entry.is_symlink():
                _refuse_link(Path(entry.path), self.source)
        return entries


def _holds_class_images(split: Path, listing: _Listing) -> bool:
    """Whether a train/ or test/ folder holds a class folder with an image file in it (macOS's
    ._ files beside images, which unpacking a Mac's tar leaves, are none)."""
    return _is_folder(split) and any(
        path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("._")
        for folder in _subfolders(split, listing)
        for path in listing(folder)
    )


def _refuse_link(link: Path, source: Path) -> None:
    if _DVC_CACHE_FILE.search(os.path.realpath(link)):
        # `dvc add` under `cache.type: symlink`: "point data.source at the real tree" named one
        # that does not exist, DVC's cache being files by their contents' hash
        raise DataError(
            f"{link} -> {os.readlink(link)}: a symbolic link into DVC's cache (`cache.type: symlink`) inside "
            f"data.source = {str(source)!r}, which the import does not follow; turn the links into copies with "
            f"`dvc unprotect {shlex.quote(str(source))}` and re-run"
        )
    raise DataError(
        f"{link} -> {os.readlink(link)}: a symbolic link inside data.source = {str(source)!r}, which could file one "
        f"class's images under another's label; copy the files in, or point data.source at the real tree"
    )


# A file of DVC 3's cache, named by the MD5 of its contents (DVC 2's lacks `files/md5/`).
_DVC_CACHE_FILE = re.compile(r"/(?:files/md5/)?[0-9a-f]{2}/[0-9a-f]{30}$")


def _folder_tree(root: Path, listing: _Listing) -> ClassTree:
    files: dict[str, dict[str, list[ImageFile]]] = {split: {} for split in SPLITS}
    skipped = []
    # The folders by device and inode: `train/dog` a bind mount of `train/cat` (no link to
    # refuse) imported the cat images labelled dog.
    folders: dict[tuple[int, ...], str] = {}
    for split in SPLITS:
        if (root / split).is_symlink():
            _refuse_link(root / split, listing.source)
        _refuse_a_folder_seen_before(str(root / split), (root / split).stat(), folders)
        for folder in listing.tree_entries(root / split):
            if not folder.is_dir():
                skipped.append(folder.path)
                continue
            _refuse_a_folder_seen_before(folder.path, folder.stat(), folders)
            images = files[split][folder.name] = []
            for entry in listing.tree_entries(Path(folder.path)):
                path = Path(entry.path)
                if entry.is_dir():
                    raise _nested_folder(str(path), folder.path)
                if entry.name.startswith("._") and entry.is_file() and _starts_apple_double(path):
                    continue  # as in an archive: macOS's tar extracts one beside each file
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    images.append(ImageFile(str(path), partial(read_image, path), _file_identity(entry)))
                else:
                    skipped.append(entry.path)
    return ClassTree(str(root), files, tuple(sorted(skipped)))


def _file_identity(entry: os.DirEntry) -> Hashable:
    """A file's inode, alike for its hard links; its path for a file of one link, and where it
    cannot be read (a dangling link), which reading it then names. A share whose inode numbers
    repeat across its folders (CIFS `serverino`, 9p over several file systems) handed one
    image's pixels to hundreds of other files, each of one link."""
    try:
        status = entry.stat()
    except OSError:
        return ("path", entry.path)
    if status.st_nlink < 2:
        return ("path", entry.path)
    return ("inode", *_identity(status))


def _identity(status: os.stat_result) -> tuple[int, ...]:
    """Device and inode, and what a share whose inode numbers repeat tells apart by: a bind
    mount's folder and its source agree on all of it."""
    return status.st_dev, status.st_ino, status.st_mtime_ns, status.st_ctime_ns


def _nested_folder(name: str, class_folder: str) -> DataError:
    """Images one folder too deep: the class is read from the folder that holds them, and
    reading a subfolder's images, or leaving them out without a word, would each be a guess."""
    return DataError(
        f"{name}: a folder inside class folder {class_folder}, which may hold only image files; "
        f"move its images up into {class_folder}, or remove it"
    )


# How far below an archive's root its train/ and test/ folders may lie: `tar czf cifar.tar.gz
# /home/user/cifar` stores them three folders down. (In a folder, two: each level searched is
# a listing of folders on disk.)
ARCHIVE_TREE_DEPTH = 8


def _archive_tree(members: dict[str, bytes], archive: Path) -> ClassTree:
    """The class-folder tree at the archive's root or up to ARCHIVE_TREE_DEPTH folders below it."""
    trees: dict[tuple[str, ...], dict[str, dict[str, list[ImageFile]]]] = {}
    skipped: dict[tuple[str, ...], list[str]] = {}  # by tree, as ClassTree.skipped
    nested: dict[tuple[str, ...], tuple[str, str]] = {}  # by tree: a member inside a class folder's subfolder
    for name in sorted(members):
        parts = PurePosixPath(name).parts
        if _macos_metadata(parts, members[name]):
            continue
        for depth in range(min(ARCHIVE_TREE_DEPTH + 1, len(parts) - 1)):
            split, folder, file = parts[depth], parts[depth + 1], parts[depth + 2 :]
            if split not in SPLITS:
                continue
            prefix = parts[:depth]
            if not file:  # a file in train/ or test/ itself
                skipped.setdefault(prefix, []).append(name)
            elif len(file) > 1:
                class_folder = "/".join(parts[: depth + 2])
                nested.setdefault(prefix, (f"{archive}:{class_folder}/{file[0]}", f"{archive}:{class_folder}"))
            else:
                images = trees.setdefault(prefix, {name: {} for name in SPLITS})[split].setdefault(folder, [])
                if PurePosixPath(file[0]).suffix.lower() in IMAGE_SUFFIXES:
                    decoder = partial(_decode_member, members, name, archive)
                    images.append(ImageFile(name, decoder, ("member", id(members[name]))))
                else:
                    skipped.setdefault(prefix, []).append(name)
    complete = [prefix for prefix, files in trees.items() if all(files[split] for split in SPLITS)]
    # A train/ and test/ pair without an image (configs/train/base/config.yaml) is no second tree.
    complete = [prefix for prefix in complete if _holds_images(trees[prefix])] or complete
    if not complete:
        batch = next((name for name in members if PurePosixPath(name).name == "data_batch_1"), None)
        if batch:
            where = f"{archive}:{PurePosixPath(batch).parent}".removesuffix(":.")
            raise DataError(
                f"data.source = {str(archive)!r}: "
                f"{_batches_elsewhere(where, f'pack them in a folder named {OFFICIAL_FOLDER}')}"
            )
        packed = [name for name in members if name.lower().endswith(archives.SUFFIXES)]
        if packed:  # a dataset site's zip of cifar-10-python.tar.gz was told that archive was expected
            raise DataError(
                f"data.source = {str(archive)!r}: no train/ and test/ folders found at its root or up to "
                f"{ARCHIVE_TREE_DEPTH} folders below it, but it holds {_folder_names(packed, 3)}; unpack that "
                f"archive and set data.source to it"
            )
        raise DataError(
            f"data.source = {str(archive)!r}: no train/ and test/ folders found at its root or up to "
            f"{ARCHIVE_TREE_DEPTH} folders below it; {EXPECTED_LAYOUT}"
        )
    complete.sort(key=lambda parts: (len(parts), parts))
    _check_one_tree(
        archive,
        ["/".join(prefix) or "." for prefix in complete],
        sorted("/".join(prefix) or "." for prefix in trees.keys() - complete if _holds_images(trees[prefix])),
    )
    prefix = complete[0]
    if prefix in nested:
        raise _nested_folder(*nested[prefix])
    root = f"{archive}:{'/'.join(prefix)}".rstrip("/:") if prefix else str(archive)
    return ClassTree(root, trees[prefix], tuple(skipped.get(prefix, ())), f"{archive}:")


def _holds_images(tree: dict[str, dict[str, list[ImageFile]]]) -> bool:
    return any(images for folders in tree.values() for images in folders.values())


def _decode_member(members: dict[str, bytes], name: str, archive: Path) -> np.ndarray:
    return decode_image(members[name], f"{archive}:{name}", archive)


def _macos_metadata(parts: tuple[str, ...], data: bytes) -> bool:
    """What macOS adds to an archive it makes: Finder's __MACOSX/ copy of the tree, and tar's
    "._name.jpg" beside each file, both holding AppleDouble file attributes, not images. A
    genuine image merely named "._name.png" is not passed over."""
    return parts[0] == "__MACOSX" or (parts[-1].startswith("._") and data.startswith(_APPLE_DOUBLE_MAGIC))


_APPLE_DOUBLE_MAGIC = b"\x00\x05\x16\x07"


def _starts_apple_double(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(len(_APPLE_DOUBLE_MAGIC)) == _APPLE_DOUBLE_MAGIC


def _find_folders(root: Path, matches, listing: _Listing) -> list[Path]:
    """root itself and the folders up to two levels below it that match, nearest first; one
    folder reached again through a link (`loop -> .`) once, not as trees that cannot be told apart."""
    found, seen = [], set()
    for folder in listing.searched(root):
        if matches(folder):
            found_stat = folder.stat()
            identity = _identity(found_stat)
            if identity not in seen:
                seen.add(identity)
                found.append(folder)
    return found


def _check_one_tree(source: Path, trees: list[str], halves: list[str]) -> None:
    """Two exports side by side, or one beside a folder holding only train/ or only test/:
    importing one would silently leave out the other."""
    if len(trees) > 1:
        raise DataError(
            f"data.source = {str(source)!r} holds {len(trees)} train/ and test/ trees ({', '.join(trees[:4])}), "
            f"and which one is meant cannot be told; keep only one of them in data.source"
        )
    if halves:
        raise DataError(
            f"data.source = {str(source)!r} holds the train/ and test/ tree at {trees[0]} and, at {halves[0]}, "
            f"a train/ or test/ folder without the other, which would be left out; keep only the tree to import "
            f"in data.source"
        )


def _subfolders(folder: Path, listing: _Listing) -> list[Path]:
    """Its folders, but for the __MACOSX/ copy of a tree that unzipping a Finder zip leaves,
    which holds file attributes, not images."""
    try:
        return [folder / name for name in listing.kinds_of(folder).folders]
    except OSError:  # unreadable: the search goes on elsewhere
        return []


def _is_folder(path: Path) -> bool:
    """False also where path cannot be examined, as in parts of /proc."""
    try:
        return path.is_dir()
    except OSError:
        return False


# The official batch files take 31.0 MB each (10,000 images of 3,072 bytes, labels and file
# names), batches.meta 158 bytes.
MAX_BATCH_FILE_BYTES = 32 << 20


def _load_official_batches(root: Path, source: Path, tree_inside: bool = False) -> dict[str, Split]:
    """torchvision reads the pickled batches and checks every file's md5. tree_inside: the
    folder holds class folders too, which removing it as advised would delete."""
    from torchvision.datasets import CIFAR10

    # Before torchvision md5-hashes them: a sparse 64 GiB data_batch_1 took 121 s of CPU.
    problem = _batch_files_problem(root / OFFICIAL_FOLDER)
    if not problem:
        try:
            splits = {name: CIFAR10(str(root), train=name == "train", download=False) for name in SPLITS}
            return {name: _from_torchvision(dataset) for name, dataset in splits.items()}
        except OSError as error:
            if error.filename:
                raise
            # A read that failed (a bad sector, a network file system) names no file: the batch was "None".
            unreadable = _first_unreadable_batch(root / OFFICIAL_FOLDER) or root / OFFICIAL_FOLDER
            raise DataError(
                f"{unreadable}: cannot read it ({error.strerror}) while importing data.source = {str(source)!r}"
            ) from None
        except RuntimeError:
            # torchvision's own text ("Dataset not found or corrupted. You can use download=True")
            # neither says which file nor fits a local source: name them here.
            problem = _batches_problem(root / OFFICIAL_FOLDER)
    pointers = [name for name in OFFICIAL_BATCH_NAMES if git_lfs_pointer(_start(root / OFFICIAL_FOLDER / name))]
    if pointers:  # "fail the md5 check ... or remove that folder" would have deleted the data
        fix = (
            f"pack {source} again after {GIT_LFS_PULL} in the checkout it came from"
            if os.path.isfile(source)
            else f"fetch them with {GIT_LFS_PULL} (Git LFS installed)"
        )
        raise DataError(
            f"data.source = {str(source)!r}: {', '.join(pointers)} in its {OFFICIAL_FOLDER} are Git LFS pointer "
            f"files, not the batches they stand for; {fix}"
        )
    present = [name for name in OFFICIAL_BATCH_NAMES if os.path.lexists(root / OFFICIAL_FOLDER / name)]
    tree_fix = (
        f"remove the batch files from it ({', '.join(present)}) if the class folders in it are meant"
        if tree_inside
        else "remove that folder if the class folders beside it are meant"
    )
    raise DataError(
        f"data.source = {str(source)!r} has a {OFFICIAL_FOLDER} folder that is not a complete set of the official "
        f"CIFAR-10 batches ({problem}); use the official cifar-10-python.tar.gz, or {tree_fix}"
    )


# The official archive's file names, as torchvision lists them (tests/test_official_source.py
# checks the two agree): importing torchvision to read them took 690 MiB for every archive.
OFFICIAL_BATCH_NAMES = (*(f"data_batch_{number}" for number in range(1, 6)), "test_batch", "batches.meta")


def _official_batch_files() -> list[list[str]]:
    from torchvision.datasets import CIFAR10

    return [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]


def _batch_files_problem(folder: Path) -> str | None:
    """Which official batch files are missing or larger than any of them, in words. A folder that
    cannot be read or searched raises: its seven files were called missing."""
    os.listdir(folder)
    os.stat(os.path.join(folder, "."))
    missing = [name for name in OFFICIAL_BATCH_NAMES if not os.path.lexists(folder / name)]
    if missing:
        return f"missing: {', '.join(missing)}"
    # A link that loops, or leads nowhere, was called missing where `ls` showed it.
    broken = [name for name in OFFICIAL_BATCH_NAMES if not (folder / name).exists()]
    if broken:
        return f"links that lead to no file: {', '.join(broken)}"
    not_files = [name for name in OFFICIAL_BATCH_NAMES if not (folder / name).is_file()]
    if not_files:  # a folder named data_batch_1 was called missing
        return f"not files: {', '.join(not_files)}"
    # A file that says it is empty may still read without end: /proc/self/pagemap (256 GiB) kept
    # torchvision's md5 check busy for 1,100 s of CPU. No official batch is empty.
    empty = [name for name in OFFICIAL_BATCH_NAMES if (folder / name).stat().st_size == 0]
    if empty:
        return f"empty: {', '.join(empty)}"
    too_large = [name for name in OFFICIAL_BATCH_NAMES if (folder / name).stat().st_size > MAX_BATCH_FILE_BYTES]
    if too_large:
        return f"{', '.join(too_large)} larger than the {MAX_BATCH_FILE_BYTES >> 20} MiB of any official batch"
    return None


def _batches_problem(folder: Path) -> str:
    """Which official batch files fail their md5, in words (only on failure: md5-checking
    180 MB twice would slow every good import)."""
    from torchvision.datasets.utils import check_integrity

    failing = [name for name, md5 in _official_batch_files() if not check_integrity(str(folder / name), md5)]
    if not failing:  # torchvision checks no more than this; kept should a later version check more
        return "torchvision could not read them"
    return f"{', '.join(failing)} fail{'s' * (len(failing) == 1)} the md5 check"


def _from_torchvision(dataset) -> Split:
    return Split(
        images=np.ascontiguousarray(dataset.data, dtype=np.uint8),
        labels=np.asarray(dataset.targets, dtype=np.int64),
        classes=tuple(dataset.classes),
    )


def _folder_names(names: list[str], most: int = 10) -> str:
    """Folder names quoted in ASCII, so that what tells a name from a class's shows: 'cat '
    (a trailing space), '\\u0441at' (a Cyrillic с), 'do\\u200bg' (a zero-width space)."""  # noqa: RUF002
    shown = ", ".join(ascii(name) for name in names[:most])
    more = f" and {len(names) - most:,} more" if len(names) > most else ""
    return shown + more if names else "none"


def _refuse_a_folder_seen_before(path: str, status: os.stat_result, folders: dict[tuple[int, ...], str]) -> None:
    identity = _identity(status)
    if identity in folders:
        raise DataError(
            f"{folders[identity]} and {path} are one folder reached by two paths (a bind mount), so its images would "
            f"be imported twice, under two labels or in both splits; point data.source at a tree whose folders are "
            f"each their own"
        )
    folders[identity] = path


def read_class_folders(tree: ClassTree, limits: dict[str, int | None]) -> dict[str, Split]:
    """Decode the chosen images of both splits; classes are the sorted folder names."""
    classes = {split: sorted(tree.files[split]) for split in SPLITS}
    if not classes["train"]:
        raise DataError(f"{tree.root}/train: no class folders; {EXPECTED_LAYOUT}")
    if classes["train"] != classes["test"]:
        raise DataError(
            f"{tree.root}: train/ and test/ have different class folders "
            f"(train: {_folder_names(classes['train'])}; test: {_folder_names(classes['test'])})"
        )
    names = tuple(classes["train"])
    if names != CIFAR10_CLASSES:
        missing = sorted(set(CIFAR10_CLASSES) - set(names))
        extra = sorted(set(names) - set(CIFAR10_CLASSES))
        raise DataError(
            f"{tree.root}: class folders must be CIFAR-10's ten ({', '.join(CIFAR10_CLASSES)}); "
            f"missing: {_folder_names(missing)}; unexpected: {_folder_names(extra)}"
        )
    if tree.skipped:
        log.warning(
            "left out %d file(s) in train/ and test/ that are not .png, .jpg or .jpeg files in a class folder, e.g. %s",
            len(tree.skipped),
            printable(tree.named_within + tree.skipped[0]),
        )
    splits = {}
    for split in SPLITS:
        files, labels = [], []
        for label, name in enumerate(names):
            found = tree.files[split][name]
            if not found:
                raise DataError(f"{tree.root}/{split}/{name}: no .png or .jpg images; {EXPECTED_LAYOUT}")
            files += found
            labels += [label] * len(found)
        labels = np.asarray(labels, dtype=np.int64)
        # Choose before decoding: a limit of 5,000 then decodes 5,000 images, not 50,000.
        keep = first_of_each_class(labels, names, limits[split], f"data.{split}_limit")
        # Round-robin over classes (each class's first image, then each class's second, ...),
        # as the official files are mixed: a "first N" of the split then spans every class.
        rank_in_class = np.concatenate([np.arange(count) for count in np.bincount(labels[keep])])
        order = keep[np.lexsort((labels[keep], rank_in_class))]
        log.info("decoding %d %s images from %s/%s", len(order), split, tree.root, split)
        splits[split] = Split(
            images=np.stack(_decoded(files, order)),
            labels=labels[order],
            classes=names,
            files=tuple(printable(tree.named_within + files[index].name) for index in order),
        )
    return splits


def _decoded(files: list[ImageFile], order: np.ndarray) -> list[np.ndarray]:
    """The files' images in this order. Pillow decodes with the GIL released, so threads decode
    on every core. A stop signal is held back while they do: raised in the main thread as it
    took a lock of the pool, it left the workers waiting on that lock for ever. Once one
    arrives, the images left are passed over, and it is handled as the pool ends. Under a
    memory limit (`ulimit -v` or `-d`) the stage's own thread decodes them: a decoding thread
    that ran out of memory as it finished an image left its result unset and the stage waiting
    for ever (the full mirror under `ulimit -d 262144`, 1 run in 6)."""
    # Files of the same contents (hard links) are decoded once, by the first of them chosen, which
    # a failure names: 200,000 links to one PNG holding 1 MB of text took about 860 s of CPU.
    by_contents: dict[Hashable, ImageFile] = {}
    for index in order:
        by_contents.setdefault(files[index].contents, files[index])
    first_chosen = list(by_contents.values())
    with stop_signals_held() as arrived:

        def decode(file: ImageFile) -> np.ndarray | None:
            return None if arrived else file.decode()

        if memory_limits_set():
            images = [decode(file) for file in first_chosen]
        else:
            with ThreadPoolExecutor() as pool:
                images = list(pool.map(decode, first_chosen))
        decoded = {file.contents: image for file, image in zip(first_chosen, images)}
        return [decoded[files[index].contents] for index in order]
