"""The official-archive paths (download and local copy), on a generated archive in the
official format whose md5s stand in for the real ones: no network, torchvision's own checks."""

import collections
import errno
import hashlib
import os
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import tracemalloc
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.cifar
import torchvision.datasets.utils as tv_utils
from torchvision.datasets import CIFAR10

from cifar.config import DataConfig
from cifar.dataset import SPLITS
from cifar.errors import DataError
from cifar.ingest import sources
from cifar.ingest.sources import EXPECTED_LAYOUT, MAX_BATCH_FILE_BYTES, import_dataset
from generated import make_class_tree
from pipeline_repo import REPO

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_BATCH = 20


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def official(tmp_path, monkeypatch):
    """cifar-10-batches-py and cifar-10-python.tar.gz in the official pickle format."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "made" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8),
            "labels": list(np.arange(PER_BATCH) % 10),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CLASSES}))
    archive = tmp_path / "made" / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.add(folder, arcname=folder.name)
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(folder / n)] for n in names[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(folder / "batches.meta")})
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5(archive))
    monkeypatch.setattr(sources, "RETRY_DELAYS", (0, 0))
    return folder, archive


def fake_network(monkeypatch, responses):
    """Each download attempt takes the next response: an exception to raise, or bytes to write.

    An attempt is a scratch folder: torchvision itself retries a failed https fetch over
    http within one attempt.
    """
    attempts = []

    def urlretrieve(url, path, *args, **kwargs):
        folder = os.path.dirname(path)
        if folder not in attempts:
            attempts.append(folder)
        response = responses[min(len(attempts), len(responses)) - 1]
        if isinstance(response, Exception):
            raise response
        with open(path, "wb") as target:
            target.write(response)

    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(tv_utils, "_urlretrieve", urlretrieve)
    return attempts


@pytest.mark.parametrize("form", ["archive", "folder"])
def test_a_local_official_copy_imports_with_class_names(official, tmp_path, form):
    folder, archive = official
    splits = import_dataset(DataConfig(source=str(archive if form == "archive" else folder)), 0, tmp_path / "dl")
    assert splits["train"].images.shape == (5 * PER_BATCH, 32, 32, 3)
    assert splits["test"].images.shape == (PER_BATCH, 32, 32, 3)
    assert list(splits["train"].classes) == CLASSES


def refusal_of(folder: Path, tmp_path: Path) -> str:
    """The line importing the batches in `folder` is refused with."""
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source=str(folder)), 0, tmp_path / "dl")
    return str(refused.value)


def test_the_official_file_names_are_torchvisions():
    listed = [name for name, _ in [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], ""]]]
    assert tuple(listed) == sources.OFFICIAL_BATCH_NAMES


def test_a_tampered_official_batch_fails_its_md5(official, tmp_path):
    folder, _ = official
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:-10])
    caught = refusal_of(folder, tmp_path)
    assert caught == (
        f"data.source = {str(folder)!r} has a cifar-10-batches-py folder that is not a complete set of the official "
        f"CIFAR-10 batches (data_batch_3 fails the md5 check); use the official cifar-10-python.tar.gz, "
        f"or remove that folder if the class folders beside it are meant"
    )


def test_an_official_batch_that_is_a_folder_is_named_as_no_file(official, tmp_path):
    """A folder named data_batch_1 was called missing."""
    folder, _ = official
    (folder / "data_batch_1").unlink()
    (folder / "data_batch_1").mkdir()
    caught = refusal_of(folder, tmp_path)
    assert "CIFAR-10 batches (not files: data_batch_1); use the official" in caught


def test_an_official_batch_that_is_a_link_that_loops_is_named_as_such(official, tmp_path):
    """`ln -s data_batch_1 data_batch_1` was called missing, where `ls` showed it."""
    folder, _ = official
    (folder / "data_batch_1").unlink()
    (folder / "data_batch_1").symlink_to("data_batch_1")
    caught = refusal_of(folder, tmp_path)
    assert "CIFAR-10 batches (links that lead to no file: data_batch_1); use the official" in caught


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_official_batches_beside_a_class_tree_are_refused_as_two_sources(official, tmp_path, packed):
    """An old cifar-10-batches-py one folder below a class tree was imported in the tree's place,
    exit 0: 100 train images where the tree held 500."""
    folder, _ = official
    export = tmp_path / "export"
    make_class_tree(export, {"train": 2, "test": 1})
    shutil.copytree(folder, export / "old" / folder.name)
    source = export
    if packed:
        source = tmp_path / "export.tar.gz"
        with tarfile.open(source, "w:gz") as bundle:
            bundle.add(export, arcname="export")
    caught = refusal_of(source, tmp_path)
    batches, tree = (
        (f"{source}:export/old/cifar-10-batches-py", f"{source}:export")
        if packed
        else (export / "old" / folder.name, export)
    )
    assert caught == (
        f"data.source = {str(source)!r} holds both the official batches ({batches}) and a class-folder tree ({tree}), "
        f"and which one is meant cannot be told; keep only one of them in data.source"
    )


def test_a_class_tree_below_a_folder_named_as_the_official_one_is_imported(tmp_path):
    """cifar-10-batches-py/export/{train,test} with no batch file was called an incomplete set of
    batches, and the advice to remove that folder would have removed the tree."""
    make_class_tree(tmp_path / "cifar-10-batches-py" / "export", {"train": 2, "test": 1})
    splits = import_dataset(DataConfig(source=str(tmp_path)), 0, tmp_path / "dl")
    assert len(splits["test"].labels) == 10


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_two_official_folders_are_refused_as_two_sources(official, tmp_path, packed):
    """An old partial copy beside the complete one: the line said "remove that folder" of one
    it did not name; packed, the two folders' files were merged by name."""
    folder, _ = official
    source = tmp_path / "two"
    shutil.copytree(folder, source / "b" / folder.name)
    (source / "a" / folder.name).mkdir(parents=True)
    shutil.copy(folder / "data_batch_1", source / "a" / folder.name)
    folders = [source / "a" / folder.name, source / "b" / folder.name]
    if packed:
        packed_source = tmp_path / "two.tar.gz"
        with tarfile.open(packed_source, "w:gz") as bundle:
            bundle.add(source, arcname="two")
        source, folders = packed_source, [f"{packed_source}:two/{each.parent.name}/{each.name}" for each in folders]
    assert refusal_of(source, tmp_path) == (
        f"data.source = {str(source)!r} holds 2 cifar-10-batches-py folders ({folders[0]}, {folders[1]}), and which "
        f"one is meant cannot be told; keep only one of them in data.source"
    )


def test_official_batches_packed_beside_images_of_no_tree_are_read(official, tmp_path):
    """A `docs/test/figures/plot.jpg` beside the batches was taken for a class tree, and the
    archive refused as two sources; the same folder unpacked was read."""
    folder, _ = official
    figure = folder.parent / "docs" / "test" / "figures" / "plot.jpg"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"\xff\xd8 a figure")
    packed = tmp_path / "with-docs.tar.gz"
    with tarfile.open(packed, "w:gz") as bundle:
        bundle.add(folder, arcname=folder.name)
        bundle.add(folder.parent / "docs", arcname="docs")
    splits = import_dataset(DataConfig(source=str(packed)), 0, tmp_path / "dl")
    assert len(splits["train"].labels) == 5 * PER_BATCH


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_a_class_tree_in_a_folder_named_as_the_official_one_is_imported(tmp_path, packed):
    """It was taken for an incomplete set of batches, and the advice to remove that folder would
    have removed data.source itself; packed with a README beside train/ and test/, likewise."""
    tree = make_class_tree(tmp_path / "cifar-10-batches-py", {"train": 2, "test": 1})
    (tree / "README.txt").write_text("converted from the official batches\n")
    source = tree
    if packed:
        source = tmp_path / "tree.tar.gz"
        with tarfile.open(source, "w:gz") as bundle:
            bundle.add(tree, arcname=tree.name)
    splits = import_dataset(DataConfig(source=str(source)), 0, tmp_path / "dl")
    assert (len(splits["train"].labels), len(splits["test"].labels)) == (20, 10)


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_official_batches_in_a_folder_of_another_name_are_named(official, tmp_path, packed):
    """The batch files in a folder renamed cifar10 (or packed without their folder) got the
    generic line, which named as expected the very folder given."""
    folder, _ = official
    source = folder.rename(folder.with_name("cifar10"))
    fix = "rename that folder to cifar-10-batches-py"
    where = source
    if packed:
        source, fix = tmp_path / "batches.tar.gz", "pack them in a folder named cifar-10-batches-py"
        with tarfile.open(source, "w:gz") as bundle:
            for batch in sorted(where.iterdir()):
                bundle.add(batch, arcname=batch.name)
        where = source
    assert refusal_of(source, tmp_path) == (
        f"data.source = {str(source)!r}: {where} holds official batch files (data_batch_1 ...), which are read only "
        f"from a folder named cifar-10-batches-py, as in the official archive; {fix}, or use the official "
        f"cifar-10-python.tar.gz"
    )


def test_a_folder_holding_an_archive_names_it(official, tmp_path):
    """The folder that holds cifar-10-python.tar.gz was answered "expected the official
    cifar-10-python.tar.gz"."""
    _, archive = official
    shutil.rmtree(archive.parent / "cifar-10-batches-py")
    assert refusal_of(archive.parent, tmp_path) == (
        f"data.source = {str(archive.parent)!r}: no train/ and test/ folders found in it or up to two folders below "
        f"it, but it holds 'cifar-10-python.tar.gz'; set data.source to the archive itself"
    )


def deny_reading(monkeypatch, module, function: str, folder: Path) -> None:
    """`chmod 000 folder` as a user without root's override, which the tests may run as."""
    real = getattr(module, function)

    def denied(path="."):
        if Path(path) == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(module, function, denied)


@pytest.mark.parametrize("unreadable", ["data.source", "cifar-10-batches-py"])
def test_a_folder_the_user_may_not_read_is_named(official, tmp_path, monkeypatch, unreadable):
    """data.source of mode 000 was "no train/ and test/ folders found in it", and a
    cifar-10-batches-py of mode 000 had its seven files called missing, advised removed."""
    folder, _ = official
    source = folder.parent
    denied = source if unreadable == "data.source" else folder
    deny_reading(monkeypatch, os, "scandir" if unreadable == "data.source" else "listdir", denied)
    assert refusal_of(source, tmp_path) == (
        f"{denied}: cannot read it (Permission denied) while importing data.source = {str(source)!r}; give the user "
        f"who runs the stage read access to it (`chmod -R u+rX`, or ask its owner)"
    )


def deny_searching(monkeypatch, folder: Path) -> None:
    """`chmod 644 folder` (as `chmod -R 644` leaves folders) for a user without root's override:
    its names can be listed, but nothing in it can be reached, also through a link."""
    real_stat = os.stat
    resolving = []  # os.path.realpath's own calls, which the kernel makes unchecked

    def denied(path, *args, follow_symlinks=True, **kwargs):
        spelled = os.fspath(path)
        if not resolving:
            resolving.append(spelled)
            try:
                resolved = (
                    os.path.realpath(spelled)
                    if follow_symlinks
                    else os.path.join(os.path.realpath(os.path.dirname(spelled)), os.path.basename(spelled))
                )
            finally:
                resolving.clear()
            if any(place.startswith(f"{folder}/") for place in (spelled, resolved)):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), spelled)
        return real_stat(path, *args, follow_symlinks=follow_symlinks, **kwargs)

    monkeypatch.setattr(os, "stat", denied)
    monkeypatch.setattr(os, "lstat", lambda path, *args, **kwargs: denied(path, *args, follow_symlinks=False, **kwargs))


ACCESS_FIX = "give the user who runs the stage read access to it (`chmod -R u+rX`, or ask its owner)"


@pytest.mark.parametrize("not_searchable", ["data.source", "cifar-10-batches-py"])
def test_a_folder_that_cannot_be_searched_is_named(official, tmp_path, monkeypatch, not_searchable):
    """After `chmod -R 644`, a file inside data.source that does not exist was named, and `chmod
    u+rX` on it failed again; the seven batch files `ls` lists were called missing."""
    folder, _ = official
    source = folder.parent
    denied = source if not_searchable == "data.source" else folder
    if not_searchable == "data.source":
        shutil.rmtree(folder)
        make_class_tree(source, {"train": 2, "test": 1})
    deny_searching(monkeypatch, denied)
    assert refusal_of(source, tmp_path) == (
        f"{denied}: cannot read it (Permission denied) while importing data.source = {str(source)!r}; {ACCESS_FIX}"
    )


def test_an_image_in_a_class_folder_that_cannot_be_searched_names_the_folder(tmp_path, monkeypatch):
    """`chmod -R 644 train/cat`: the line named train/cat/0000.jpg, and `chmod -R u+rX` on it
    failed the same way."""
    from cifar.errors import unreadable

    cat = tmp_path / "train" / "cat"
    cat.mkdir(parents=True)
    deny_searching(monkeypatch, cat)
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(cat / "0000.jpg"))
    assert str(unreadable(cat / "0000.jpg", denied, "replace it")) == (
        f"{cat}: cannot read it (Permission denied); {ACCESS_FIX}"
    )


def test_an_archive_in_a_folder_that_cannot_be_searched_names_the_folder(official, tmp_path, monkeypatch):
    """The readable archive was named, with the layouts for a fix."""
    _, archive = official
    deny_searching(monkeypatch, archive.parent)
    assert refusal_of(archive, tmp_path) == (
        f"data.source = {str(archive)!r}: cannot read {archive.parent} (Permission denied); {ACCESS_FIX}"
    )


def test_batches_and_empty_split_folders_in_the_official_folder_are_read_as_batches(official, tmp_path):
    """Empty train/ and test/ beside the seven batch files (a conversion script's `mkdir -p`) made
    the folder a class tree: "train: no class folders"."""
    folder, _ = official
    for split in ("train", "test"):
        (folder / split).mkdir()
    splits = import_dataset(DataConfig(source=str(folder)), 0, tmp_path / "dl")
    assert len(splits["train"].labels) == 5 * PER_BATCH


def test_batches_and_a_class_tree_in_the_official_folder_are_two_sources(official, tmp_path):
    """The tree was imported and the batches passed over without a word, where the same folder
    packed as a tar.gz was refused as two sources."""
    folder, _ = official
    make_class_tree(folder, {"train": 2, "test": 1})
    assert refusal_of(folder, tmp_path) == (
        f"data.source = {str(folder)!r} holds both the official batches ({folder}) and a class-folder tree "
        f"({folder}), and which one is meant cannot be told; keep only one of them in data.source"
    )


def test_an_official_batch_whose_read_fails_is_named(official, tmp_path, monkeypatch):
    """A read that fails after the file opened (a bad sector, an NFS or FUSE failure) raises an
    OSError without a file name: the line named the file `None`."""
    folder, _ = official
    failing = folder / "data_batch_1"

    def read_fails(path, *args, **kwargs):
        if Path(path) == failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))  # as a read() of a bad sector: no file name
        return open(path, *args, **kwargs)

    def md5_check_fails(path, md5=None):
        return read_fails(path).close() or True

    monkeypatch.setattr(sources, "open", read_fails, raising=False)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", md5_check_fails)
    assert refusal_of(folder, tmp_path) == (
        f"{failing}: cannot read it (Input/output error) while importing data.source = {str(folder)!r}"
    )


def test_an_official_folder_that_is_a_link_to_no_folder_is_named(tmp_path):
    """A cifar-10-batches-py link to a folder since moved was passed over, and the line named that
    very folder as what was expected."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "cifar-10-batches-py").symlink_to(tmp_path / "moved" / "cifar-10-batches-py")
    assert refusal_of(source, tmp_path) == (
        f"data.source = {str(source)!r}: {source / 'cifar-10-batches-py'} is a symbolic link that leads to no folder; "
        f"point it at the folder it stands for, or data.source at that folder"
    )


def test_an_empty_official_batch_is_refused_before_it_is_read(official, tmp_path):
    """A batch that says it is empty is none of the official ones, and may still read without end:
    a link to /proc/self/pagemap (size 0, 256 GiB to read) kept the md5 check busy for 1,100 s."""
    folder, _ = official
    (folder / "data_batch_1").write_bytes(b"")
    assert "CIFAR-10 batches (empty: data_batch_1); use the official" in refusal_of(folder, tmp_path)


def test_an_official_batch_larger_than_any_is_refused_before_its_md5_is_computed(official, tmp_path):
    """torchvision md5-hashed a sparse 64 GiB data_batch_1 whole before the refusal: 121 s of CPU."""
    folder, _ = official
    with (folder / "data_batch_1").open("r+b") as batch:
        batch.truncate(MAX_BATCH_FILE_BYTES + 1)  # a hole, no disk
    caught = refusal_of(folder, tmp_path)
    assert caught == (
        f"data.source = {str(folder)!r} has a cifar-10-batches-py folder that is not a complete set of the official "
        f"CIFAR-10 batches (data_batch_1 larger than the 32 MiB of any official batch); use the official "
        f"cifar-10-python.tar.gz, or remove that folder if the class folders beside it are meant"
    )


def test_download_retries_network_errors_then_succeeds(official, tmp_path, monkeypatch, caplog):
    _, archive = official
    attempts = fake_network(
        monkeypatch, [urllib.error.URLError("timed out"), ConnectionResetError("reset"), archive.read_bytes()]
    )
    splits = import_dataset(DataConfig(source="official", train_limit=10), 0, tmp_path / "dl")
    assert len(attempts) == 3 and len(splits["train"]) == 10
    assert "download attempt 1 of 3 failed" in caplog.text and "download attempt 2 of 3 failed" in caplog.text
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["cifar-10-python.tar.gz"]


def test_a_corrupt_download_is_deleted_and_reported(official, tmp_path, monkeypatch):
    _, archive = official
    fake_network(monkeypatch, [archive.read_bytes()[:5000]])  # truncated: the md5 cannot match
    with pytest.raises(DataError, match=r"after 3 attempts \(last: RuntimeError: File not found or corrupted.\)"):
        import_dataset(DataConfig(source="official"), 0, tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == [], "a partial or corrupt archive was left behind"


def test_without_network_the_message_points_at_a_local_copy(official, tmp_path, monkeypatch):
    fake_network(monkeypatch, [urllib.error.URLError("[Errno -2] Name or service not known")])
    with pytest.raises(DataError, match=r"without network, point data.source at a local copy"):
        import_dataset(DataConfig(source="official"), 0, tmp_path / "dl")


def test_a_verified_archive_is_not_downloaded_again(official, tmp_path, monkeypatch):
    _, archive = official
    (tmp_path / "dl").mkdir()
    shutil.copy(archive, tmp_path / "dl" / archive.name)
    attempts = fake_network(monkeypatch, [urllib.error.URLError("offline")])
    import_dataset(DataConfig(source="official"), 0, tmp_path / "dl")
    assert attempts == []


@pytest.mark.parametrize("size", [sources.OFFICIAL_ARCHIVE_BYTES + 1, 200 << 30], ids=["a-byte-more", "200-gib"])
def test_a_cached_archive_larger_than_the_official_one_is_fetched_again_unread(official, tmp_path, monkeypatch, size):
    """A sparse 200 GiB file in the download cache: torchvision's md5 check read it for over 300 s."""
    _, archive = official
    (tmp_path / "dl").mkdir()
    with (tmp_path / "dl" / archive.name).open("wb") as cached:
        cached.truncate(size)
    checked, check_integrity = [], tv_utils.check_integrity

    def sizes_checked(path, md5=None):
        checked.append(os.path.getsize(path) if os.path.exists(path) else None)
        return check_integrity(path, md5)

    monkeypatch.setattr(tv_utils, "check_integrity", sizes_checked)
    attempts = fake_network(monkeypatch, [archive.read_bytes()])
    import_dataset(DataConfig(source="official"), 0, tmp_path / "dl")
    assert len(attempts) == 1 and size not in checked


def test_a_folder_where_the_official_archive_is_kept_is_named_as_such(official, tmp_path, monkeypatch):
    """A folder holding a user's notes: "Is a directory; check that it exists and that you may read and write it"."""
    _, archive = official
    kept = tmp_path / "dl" / archive.name
    kept.mkdir(parents=True)
    (kept / "notes.txt").write_text("mine")
    fake_network(monkeypatch, [archive.read_bytes()])
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="official"), 0, tmp_path / "dl")
    assert str(refused.value) == (
        f"{kept}: a folder, where download keeps the official archive it fetches; move it elsewhere and re-run"
    )
    assert (kept / "notes.txt").read_text() == "mine"


def test_batches_reached_through_links_into_an_output_are_refused(official, tmp_path):
    """A folder of links to the batches kept in download's output (`cp -rs`) was imported, then
    the run replaced that folder: the links led nowhere, the batches were gone."""
    folder, _ = official
    output = tmp_path / "output"
    shutil.copytree(folder, output / folder.name)
    links = tmp_path / "links" / folder.name
    links.mkdir(parents=True)
    for batch in sorted((output / folder.name).iterdir()):
        (links / batch.name).symlink_to(batch)
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source=str(links.parent)), 0, tmp_path / "dl", keep_out=(output,))
    assert str(refused.value).startswith(
        f"data.source = {str(links.parent)!r} leads to {links / 'data_batch_1'}, in {output}, one of "
        f"the pipeline's outputs"
    )
    assert (output / folder.name / "data_batch_1").is_file()


def import_in_a_mount_namespace(mounting: str, source: Path, output: Path, before: str = "") -> str:
    """What importing source says, with output as the pipeline's output, after the shell commands
    `mounting` ran in a mount namespace of its own (real mounts, gone when it ends), and the
    Python code `before`."""
    importing = (
        "from pathlib import Path; from cifar.config import DataConfig; from cifar.errors import DataError; "
        f"from cifar.ingest.sources import import_dataset\n{before}\n"
        f"try: import_dataset(DataConfig(source={str(source)!r}), 0, Path({str(source.parent / 'dl')!r}), "
        f"keep_out=(Path({str(output)!r}),)); print('imported')\n"
        "except DataError as error: print(error)"
    )
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-ec", f'{mounting}\nexec "$0" -c "$1"', sys.executable, importing],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def bind(folder: Path, where: Path) -> str:
    return f"mount --bind '{folder}' '{where}'\n"


def overlay(layer: str, where: Path, option: str = "lowerdir") -> str:
    """An overlay mount showing the folder `layer` (as the mount option spells it) at `where`."""
    spare = where.parent / f"{where.name}.overlay"
    return (
        f"mkdir -p '{spare}/upper' '{spare}/work'\n"
        f"mount -t overlay overlay -o '{option}={layer},upperdir={spare}/upper,workdir={spare}/work' '{where}'\n"
    )


needs_mounts = pytest.mark.skipif(os.getuid() != 0 or not shutil.which("unshare"), reason="mounts in a namespace")


@needs_mounts
@pytest.mark.parametrize(
    "mounted",
    [
        "the output's folder",
        "each split folder",
        "each class folder",
        "each class folder, beside links to the splits",
        "an archive in the output",
        "each class folder, the output holding another data set",
        "each class folder, the output holding more than can be looked through",
        "the output's folder moved over a tmpfs",
        "each split folder over a tmpfs",
        "an overlay over the output's folder",
    ],
)
def test_an_output_reached_through_a_bind_mount_is_refused(tmp_path, mounted):
    """The output's folder, or each of its split or class folders or an archive in it, mounted
    again elsewhere (docker volumes of one folder): no link tells the source is download's
    output, which the run then replaced, the user's tree with it. The mount table's order
    misled where a mount was moved over another, or stacked on an automount's tmpfs. Another data
    set kept in the output used up the look through it before its class folders, and then more
    than could be looked through was passed over without a word."""
    output = make_class_tree(tmp_path / "outputs" / "images", {"train": 1, "test": 1})
    source = tmp_path / "mnt"
    shutil.copytree(output, source)  # the folders to mount on
    classes = [folder.relative_to(output) for split in SPLITS for folder in sorted((output / split).iterdir())]
    tmpfs = "mount -t tmpfs none '{}'\n".format
    mounting, leads_to = {
        "the output's folder": (bind(output, source), None),
        "each split folder": ("".join(bind(output / s, source / s) for s in SPLITS), source / "train"),
        "each class folder": ("".join(bind(output / c, source / c) for c in classes), source / classes[0]),
        # links to the split folders sorting before them, through which the search first reached them
        "each class folder, beside links to the splits": ("", tmp_path / "beside" / "z" / classes[0]),
        "the output's folder moved over a tmpfs": (
            # mounted before the tmpfs, so listed before it in the mount table
            f"mkdir '{tmp_path}/b'\n{bind(output, tmp_path / 'b')}{tmpfs(source)}"
            f"mount --move '{tmp_path}/b' '{source}'",
            None,
        ),
        "each split folder over a tmpfs": (
            "".join(tmpfs(source / s) + bind(output / s, source / s) for s in SPLITS),
            source / "train",
        ),
        "an overlay over the output's folder": (
            f"mkdir '{tmp_path}/upper' '{tmp_path}/work'\nmount -t overlay overlay -o "
            f"lowerdir='{output}',upperdir='{tmp_path}/upper',workdir='{tmp_path}/work' '{source}'",
            None,
        ),
        "an archive in the output": ("", None),
        "each class folder, the output holding another data set": (
            "".join(bind(output / c, source / c) for c in classes),
            source / classes[0],
        ),
    }[mounted.replace("more than can be looked through", "another data set")]
    if mounted == "each class folder, beside links to the splits":
        source = tmp_path / "beside"
        shutil.copytree(output, source / "z")
        (source / "a").symlink_to(source / "z" / "train")
        (source / "b").symlink_to(source / "z" / "test")
        mounting = "".join(bind(output / c, source / "z" / c) for c in classes)
    if mounted == "an archive in the output":
        shutil.make_archive(str(output / "export"), "gztar", output)
        shutil.copy(output / "export.tar.gz", tmp_path / "export.tar.gz")  # what the mount shows
        source = tmp_path / "export.tar.gz"
        mounting = bind(output / "export.tar.gz", source)
    before = ""
    if mounted.startswith("each class folder, the output holding"):  # listed with train/ and test/
        for index in range(300 if mounted.endswith("another data set") else 450):
            (output / f"cinic-{index}.png").touch()
        before = "from cifar.ingest import archives, sources; archives.MAX_MEMBERS = 100; "
        before += "sources.OUTPUT_ENTRIES_LOOKED_AT = 400"
    said = import_in_a_mount_namespace(mounting, source, output, before)
    if mounted.endswith("more than can be looked through"):
        assert said == (
            f"{output}, one of the pipeline's outputs, holds more than 400 files and folders, far more than a run "
            f"writes there, so whether data.source leads into it (through a mount) cannot be told; move what you "
            f"keep there out of {output} (a run replaces it) and run again"
        )
        return
    held = f"in {output}, one of the pipeline's outputs"
    if leads_to is None:  # data.source itself
        assert said.startswith(f"data.source = {str(source)!r} lies {held}"), said
    else:
        assert said.startswith(f"data.source = {str(source)!r} leads to {leads_to}, {held}"), said


@needs_mounts
@pytest.mark.parametrize(
    "mounted",
    [
        "each split folder",
        "a layer named through a link",
        "a layer that is a bind mount of the output",
        "a layer that is an overlay of the output",
        "one layer an option, as Linux 6.8 allows",
        "a layer whose path holds a colon",
        "each split folder, the output holding another data set",
    ],
)
def test_an_output_reached_through_an_overlay_mount_is_refused(tmp_path, mounted):
    """An overlay mount whose layer is the output's folder or one of its splits (a container's
    writable view of read-only data) was imported, then the run replaced the user's tree, whatever
    the layer's spelling: through a link, a bind mount, `lowerdir+=`, a `:` escaped. With another
    data set kept beside the tree in the output, its split folders were never reached. A layer
    that is itself an overlay of the output was looked at only as a folder."""
    folder = "run:1" if mounted == "a layer whose path holds a colon" else "outputs"  # a time stamp's
    output = make_class_tree(tmp_path / folder / "images", {"train": 1, "test": 1})
    source, before = tmp_path / "mnt", ""
    shutil.copytree(output, source)  # the folders to mount on
    if mounted.startswith("each split folder"):
        mounting = "".join(overlay(str(output / split), source / split) for split in SPLITS)
        if mounted.endswith("another data set"):
            (output / "cinic").mkdir()
            for index in range(120):
                (output / "cinic" / f"{index}.png").touch()
            before = "from cifar.ingest import archives; archives.MAX_MEMBERS = 100"
    elif mounted == "a layer named through a link":
        (tmp_path / "named").symlink_to(output)
        mounting = overlay(str(tmp_path / "named"), source)
    elif mounted == "a layer that is a bind mount of the output":
        (tmp_path / "volume").mkdir()
        mounting = bind(output, tmp_path / "volume") + overlay(str(tmp_path / "volume"), source)
    elif mounted == "a layer that is an overlay of the output":
        (tmp_path / "volume").mkdir()
        mounting = overlay(str(output), tmp_path / "volume") + overlay(str(tmp_path / "volume"), source)
    elif mounted == "one layer an option, as Linux 6.8 allows":
        if tuple(map(int, re.findall(r"\d+", os.uname().release)[:2])) < (6, 8):
            pytest.skip("lowerdir+= needs Linux 6.8")
        mounting = overlay(str(output), source, option="lowerdir+")
    else:
        mounting = overlay(str(output).replace(":", "\\:"), source)
    said = import_in_a_mount_namespace(mounting, source, output, before)
    assert "one of the pipeline's outputs" in said and str(output) in said, said


@needs_mounts
@pytest.mark.parametrize("layers", ["the output's", "the user's own"])
def test_an_overlay_of_relative_layers_is_refused(tmp_path, layers):
    """Relative layers (`cd data && mount -o lowerdir=export`) cannot be placed from the
    mount table: passed over, an overlay of the output's own folder was imported, and the run
    replaced the user's tree. Which of the two it shows cannot be told."""
    output = make_class_tree(tmp_path / "outputs" / "images", {"train": 1, "test": 1})
    layer = output if layers == "the output's" else make_class_tree(tmp_path / "mine", {"train": 1, "test": 1})
    source = tmp_path / "mnt"
    source.mkdir()
    (tmp_path / "upper").mkdir()
    (tmp_path / "work").mkdir()
    relative = os.path.relpath(layer, tmp_path)
    mounting = f"(cd '{tmp_path}' && mount -t overlay overlay -o lowerdir={relative},upperdir=upper,workdir=work mnt)"
    assert import_in_a_mount_namespace(mounting, source, output) == (
        f"the overlay mounted at {source} names its layer {relative} by a relative path, which the mount table cannot "
        f"place, so whether data.source shows one of the pipeline's outputs through it cannot be told; mount the "
        f"overlay again with its layers' absolute paths"
    )


@pytest.mark.parametrize(
    "overlay_at",
    ["/, of layers outside it (a container's)", "/, of layers inside it", "a folder above a volume the data is on"],
)
def test_an_overlay_is_looked_through_only_where_it_shows_the_data_and_its_layers_can_be_seen(
    tmp_path, monkeypatch, overlay_at
):
    """In a container, / is an overlay whose layers lie on the host: every data.source was refused
    as shown through a layer "no longer there", even one on a volume mounted over it; where the
    layers lie inside / (Ubuntu's overlayroot), looking through one led back to / without end."""
    source = make_class_tree(tmp_path / "export", {"train": 1, "test": 1})
    (tmp_path / "lower").mkdir()
    hidden = ("/nonexistent/lower", "/nonexistent/upper")
    mounts = {
        "/, of layers outside it (a container's)": [sources._Mount("/", os.stat("/").st_dev, hidden)],
        "/, of layers inside it": [sources._Mount("/", os.stat("/").st_dev, (str(tmp_path / "lower"),))],
        "a folder above a volume the data is on": [
            sources._Mount(str(tmp_path.parent), os.stat(tmp_path.parent).st_dev, hidden),
            sources._Mount(str(tmp_path), os.stat(tmp_path).st_dev, ()),
        ],
    }[overlay_at]
    monkeypatch.setattr(sources, "mount_table", lambda: mounts)
    splits = import_dataset(DataConfig(source=str(source)), 0, tmp_path / "dl", keep_out=(tmp_path / "outputs",))
    assert len(splits["train"].labels) == 10


@pytest.mark.parametrize("problem", [errno.EACCES, errno.ENAMETOOLONG])
def test_a_folder_in_an_output_that_cannot_be_looked_through_is_refused(tmp_path, monkeypatch, problem):
    """A folder in download's output of mode 311, or past the longest path the system takes, was passed
    over: class folders inside it that a bind mount showed as the source were imported, and the
    run then replaced them."""
    output = tmp_path / "outputs" / "images"
    (output / "private").mkdir(parents=True)
    source = make_class_tree(tmp_path / "export", {"train": 1, "test": 1})
    real_scandir, private = os.scandir, str(output / "private")

    def scandir(path="."):
        if os.fspath(path) == private:
            raise OSError(problem, os.strerror(problem), private)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source=str(source)), 0, tmp_path / "dl", keep_out=(output,))
    readable = ", or give the user who runs the stage read access to it" if problem == errno.EACCES else ""
    assert str(refused.value).startswith(
        f"{private}: cannot be looked through ({os.strerror(problem)}), so whether data.source leads into {output}, "
        f"one of the pipeline's outputs, cannot be told; move what you keep there out of {output} (a run replaces "
        f"it){readable}"
    )


@needs_mounts
def test_an_overlay_whose_layer_moved_since_it_was_mounted_is_refused(tmp_path):
    """The project renamed after an overlay of its output was mounted: the mount table still
    names the layer where it was, where nothing is, and the source was imported; the run then
    replaced the user's tree."""
    output = make_class_tree(tmp_path / "project" / "images", {"train": 1, "test": 1})
    source = tmp_path / "mnt"
    shutil.copytree(output, source)  # the folder to mount on
    renamed = tmp_path / "renamed" / "images"
    mounting = overlay(str(output), source) + f"mv '{tmp_path / 'project'}' '{renamed.parent}'\n"
    assert import_in_a_mount_namespace(mounting, source, renamed) == (
        f"the overlay mounted at {source} has {output} as a layer, which is no longer there (moved since it was "
        f"mounted?), so whether data.source shows one of the pipeline's outputs through it cannot be told; mount the "
        f"overlay again with its layers where they are now"
    )


@needs_mounts
@pytest.mark.parametrize(
    "kept",
    [
        "a bind mount hidden beneath a tmpfs",
        "an overlay hidden beneath a tmpfs",
        "a hard link to an output's archive",
    ],
)
def test_what_only_seems_to_reach_an_output_is_imported(tmp_path, kept):
    """A stale bind mount (or overlay) of the output's folders under a tmpfs that holds the user's
    own tree, which the mount table lists, was refused; a hard link outlives the run that replaces
    the output, so the archive it leads to is no output's."""
    output = make_class_tree(tmp_path / "outputs" / "images", {"train": 1, "test": 1})
    if kept == "an overlay hidden beneath a tmpfs":
        source = tmp_path / "mnt"
        source.mkdir()
        mounting = overlay(str(output), source) + f"mount -t tmpfs none '{source}'\ncp -r '{output}'/* '{source}'"
    elif kept == "a bind mount hidden beneath a tmpfs":
        source = tmp_path / "mnt"
        (source / "train").mkdir(parents=True)
        mounting = (
            f"{bind(output / 'train', source / 'train')}mount -t tmpfs none '{source}'\ncp -r '{output}'/* '{source}'"
        )
    else:
        shutil.make_archive(str(output / "export"), "gztar", output)
        source = tmp_path / "export.tar.gz"
        os.link(output / "export.tar.gz", source)
        mounting = "true"
    assert import_in_a_mount_namespace(mounting, source, output) == "imported"


def test_a_link_into_a_folder_that_cannot_be_searched_names_that_folder(tmp_path, monkeypatch):
    """data.source a link to a tree inside a folder of mode 644: the link was named, and `chmod -R
    u+rX` on it failed alike."""
    disk = tmp_path / "disk"
    make_class_tree(disk / "cifar", {"train": 1, "test": 1})
    (tmp_path / "home").mkdir()
    link = tmp_path / "home" / "cifar"
    link.symlink_to(disk / "cifar")
    deny_searching(monkeypatch, disk)
    assert (
        refusal_of(link, tmp_path)
        == f"data.source = {str(link)!r}: cannot read {disk} (Permission denied); {ACCESS_FIX}"
    )


def test_a_folder_two_down_that_cannot_be_searched_but_lists_a_tree_is_named(tmp_path, monkeypatch):
    """The only tree in export/a/b, b of mode 644: "no train/ and test/ folders found"."""
    source = tmp_path / "export"
    hidden = make_class_tree(source / "a" / "b", {"train": 1, "test": 1})
    deny_searching(monkeypatch, hidden)
    assert refusal_of(source, tmp_path) == (
        f"data.source = {str(source)!r}: {hidden} cannot be searched, and the train/ and test/ folders, found nowhere "
        f"else, may lie in it; {ACCESS_FIX}"
    )


def test_a_link_in_data_source_to_a_folder_that_cannot_be_searched_names_that_folder(tmp_path, monkeypatch):
    """The tree behind the link was passed over and called missing: "no train/ and test/ folders"."""
    disk = tmp_path / "disk"
    make_class_tree(disk / "cifar", {"train": 1, "test": 1})
    source = tmp_path / "home"
    source.mkdir()
    (source / "cifar").symlink_to(disk / "cifar")
    deny_searching(monkeypatch, disk)
    assert refusal_of(source, tmp_path) == (
        f"data.source = {str(source)!r}: {disk} cannot be searched, and the train/ and test/ folders, found nowhere "
        f"else, may lie in it; {ACCESS_FIX}"
    )


@pytest.mark.parametrize("kept", ["official batches", "a second tree"])
def test_a_folder_beside_a_tree_that_cannot_be_searched_is_named(official, tmp_path, monkeypatch, kept):
    """A cifar-10-batches-py, or a second export, of mode 644 beside a tree was passed over and
    the tree imported without a word, where the same folder readable was refused as two sources."""
    folder, _ = official
    source = make_class_tree(tmp_path / "export", {"train": 1, "test": 1})
    if kept == "official batches":
        hidden = source / folder.name
        shutil.copytree(folder, hidden)
        line = f"{hidden}: cannot read it (Permission denied) while importing data.source = {str(source)!r}; "
    else:
        hidden = source / "old"
        make_class_tree(hidden, {"train": 1, "test": 1})
        line = (
            f"data.source = {str(source)!r}: {hidden} cannot be searched, so whether it holds another copy of the "
            f"data cannot be told; "
        )
    deny_searching(monkeypatch, hidden)
    assert refusal_of(source, tmp_path) == line + ACCESS_FIX


@pytest.mark.parametrize("link", ["train", "cifar-10-batches-py"])
def test_a_link_to_no_folder_beside_another_tree_is_named(tmp_path, link):
    """train/ and test/ links to a drive not mounted (the tree meant) beside an old export: the
    old export was imported without a word."""
    source = tmp_path / "export"
    make_class_tree(source / "old", {"train": 1, "test": 1})
    (source / link).symlink_to(tmp_path / "not-mounted" / link)
    assert refusal_of(source, tmp_path) == (
        f"data.source = {str(source)!r}: {source / link} is a symbolic link that leads to no folder; point it at the "
        f"folder it stands for, or data.source at that folder"
    )


def test_a_packed_official_folder_without_a_batch_file_is_no_second_set(official, tmp_path):
    """backup/cifar-10-batches-py holding only Finder's .DS_Store beside the genuine batches was
    refused as two sets, where the same folder unpacked was read."""
    folder, _ = official
    backup = tmp_path / "backup" / folder.name
    backup.mkdir(parents=True)
    (backup / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    packed = tmp_path / "with-backup.tar.gz"
    with tarfile.open(packed, "w:gz") as bundle:
        bundle.add(folder, arcname=folder.name)
        bundle.add(backup.parent, arcname="backup")
    splits = import_dataset(DataConfig(source=str(packed)), 0, tmp_path / "dl")
    assert len(splits["train"].labels) == 5 * PER_BATCH


def test_a_chain_of_links_to_nothing_names_where_it_ends(tmp_path):
    """`~/data -> ~/usb -> drive`: the line said ~/usb, which `ls` lists, does not exist."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "usb").symlink_to(tmp_path / "media" / "USB")
    (home / "data").symlink_to(home / "usb")
    source = home / "data" / "cifar-10-python.tar.gz"
    assert refusal_of(source, tmp_path) == (
        f"data.source = {str(source)!r} is reached through {home / 'data'}, a symbolic link to {home / 'usb'}, then "
        f"{tmp_path / 'media' / 'USB'}, which does not exist (a drive not mounted, or the data moved); mount it, or "
        f"point data.source at where the data is"
    )


@pytest.mark.parametrize("missing_at", ["data.source", "a folder on the way"])
def test_a_source_past_a_link_to_nothing_names_the_link(tmp_path, missing_at):
    """`~/usb/cifar-10-python.tar.gz` with the drive `~/usb` leads to not mounted was "no such
    file or directory", and the layouts named as expected what was given."""
    (tmp_path / "home").mkdir()
    usb = tmp_path / "home" / "usb"
    usb.symlink_to(tmp_path / "media" / "USB")
    source = usb if missing_at == "data.source" else usb / "cifar-10-python.tar.gz"
    said = "is a symbolic link to" if missing_at == "data.source" else f"is reached through {usb}, a symbolic link to"
    assert refusal_of(source, tmp_path) == (
        f"data.source = {str(source)!r} {said} {tmp_path / 'media' / 'USB'}, which does not exist (a drive not "
        f"mounted, or the data moved); mount it, or point data.source at where the data is"
    )


def test_an_address_is_named_as_one(tmp_path):
    """The official archive's address was "no such file or directory", its `//` made one `/`."""
    address = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert refusal_of(address, tmp_path) == (
        f"data.source = {address!r} is an address (https://), and download reads files and folders only; write "
        f"'official' for CIFAR-10 from its site, or download the file yourself and give its path"
    )


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_a_tree_converted_inside_the_official_folder_is_not_advised_removed(official, tmp_path, packed):
    """A tree exported in place into cifar-10-batches-py, its batches.meta left: "remove that
    folder if the class folders beside it are meant" would have deleted the tree."""
    folder, _ = official
    source = tmp_path / "export"
    converted = source / folder.name
    make_class_tree(converted, {"train": 1, "test": 1})
    shutil.copy(folder / "batches.meta", converted)
    if packed:
        with tarfile.open(tmp_path / "export.tar.gz", "w:gz") as bundle:
            bundle.add(source, arcname="export")
        source = tmp_path / "export.tar.gz"
    assert refusal_of(source, tmp_path).endswith(
        "use the official cifar-10-python.tar.gz, or remove the batch files from it (batches.meta) if the class "
        "folders in it are meant"
    )


def test_a_folder_of_the_official_name_is_judged_without_listing_it(official, tmp_path, monkeypatch):
    """A cifar-10-batches-py of 1,500,000 entries and no batch file was listed whole: 531 MiB,
    past the 200,000 entries any source may hold."""
    folder, _ = official
    empty = tmp_path / "elsewhere" / folder.name
    empty.mkdir(parents=True)

    def never(path="."):
        raise AssertionError(f"listed {path}")

    monkeypatch.setattr(os, "listdir", never)
    monkeypatch.setattr(os, "scandir", never)
    assert sources._holds_official_batches(folder) and not sources._holds_official_batches(empty)


def test_files_beside_a_tree_count_once_toward_the_listing_limit(tmp_path, monkeypatch):
    """50,000 flat files beside the tree (of 200,000 allowed) were counted once per search over
    the folder, four times, and the source refused as more than 200,000."""
    source = make_class_tree(tmp_path / "export", {"train": 1, "test": 1})
    (source / "raw").mkdir()
    for index in range(40):
        (source / "raw" / f"{index}.bin").touch()
    monkeypatch.setattr(sources.archives, "MAX_MEMBERS", 100)  # the tree, raw/ and its files: 85 entries
    splits = import_dataset(DataConfig(source=str(source)), 0, tmp_path / "dl")
    assert len(splits["train"].labels) == 10


@pytest.mark.parametrize("loops_at", ["data.source", "a folder on the way"])
def test_a_link_that_loops_on_the_way_is_named(tmp_path, loops_at):
    """ "cannot read it (Too many levels of symbolic links)", with the layouts for a fix, named
    no link."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    source = loop if loops_at == "data.source" else loop / "cifar-10-python.tar.gz"
    assert refusal_of(source, tmp_path) == (
        f"data.source = {str(source)!r}: {loop} is a symbolic link that loops (it leads back to itself); point it at "
        f"the data, or data.source at where the data is"
    )


def scans_counted(monkeypatch) -> collections.Counter:
    """How many times each folder, as links resolve, is listed."""
    scans, real_scandir = collections.Counter(), os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: scans.update([os.path.realpath(path)]) or real_scandir(path))
    return scans


def test_a_folder_reached_through_many_links_is_searched_once(tmp_path, monkeypatch):
    """`raw-1 ... raw-30 -> raw`, raw of 190,000 files, beside the tree: raw listed, and each of
    its files examined, once for each link (four minutes)."""
    source = make_class_tree(tmp_path / "export", {"train": 1, "test": 1})
    (source / "raw").mkdir()
    for index in range(40):
        (source / "raw" / f"{index}.bin").touch()
    for index in range(30):
        (source / f"raw-{index}").symlink_to(source / "raw")
    scans = scans_counted(monkeypatch)
    splits = import_dataset(DataConfig(source=str(source)), 0, tmp_path / "dl")
    assert len(splits["train"].labels) == 10
    assert scans[str(source / "raw")] == 1


@pytest.mark.parametrize("raw_holds", ["folders", "links back to itself"])
def test_paths_through_links_count_toward_the_limit(tmp_path, monkeypatch, raw_holds):
    """Each folder was listed once, but looked in by every path that reached it: 30 links to a
    folder of 190,000 folders were 5.9 million paths to search, 3,000 links to a folder of 3,000
    links 9 million (2 GB), for minutes. A cap of 150 stands for the real 200,000."""
    source = make_class_tree(tmp_path / "export", {"train": 1, "test": 1})
    (source / "raw").mkdir()
    for index in range(40):
        entry = source / "raw" / f"{index}"
        entry.mkdir() if raw_holds == "folders" else entry.symlink_to(source / "raw")
    for index in range(30):
        (source / f"raw-{index}").symlink_to(source / "raw")
    monkeypatch.setattr(sources.archives, "MAX_MEMBERS", 150)  # about 115 entries, each listed once
    assert refusal_of(source, tmp_path) == (
        f"data.source = {str(source)!r}: more than 150 files and folders to look through, far more than CIFAR-10's "
        f"60,000 images; point it at a folder that holds only the train/ and test/ trees, 150 files and folders at "
        f"most ({EXPECTED_LAYOUT})"
    )


@pytest.mark.parametrize("beside", ["a folder of configs named train/ and test/", "a train/ folder of more images"])
def test_links_to_a_trees_folders_sorting_first_leave_the_search_as_it_was(tmp_path, beside):
    """`a -> z/train` and `b -> z/test` beside the tree at z: the search, which looked through each
    folder once under the first path to reach it, found z/train empty (listed as a), called
    cfg/ a second tree, and passed over h/train's images without a word."""
    source = tmp_path / "export"
    make_class_tree(source / "z", {"train": 1, "test": 1})
    if beside.startswith("a folder of configs"):
        for split in ("train", "test"):
            (source / "cfg" / split / "base").mkdir(parents=True)
            (source / "cfg" / split / "base" / "config.yaml").write_text("lr: 0.1\n")
    else:
        make_class_tree(tmp_path / "more", {"train": 1, "test": 1})
        (source / "h").mkdir()
        shutil.move(tmp_path / "more" / "train", source / "h" / "train")
    (source / "a").symlink_to(source / ("z" if beside.startswith("a folder of configs") else "h") / "train")
    (source / "b").symlink_to(source / "z" / "test")
    if beside.startswith("a folder of configs"):
        splits = import_dataset(DataConfig(source=str(source)), 0, tmp_path / "dl")
        assert len(splits["train"].labels) == 10
    else:
        assert refusal_of(source, tmp_path).startswith(
            f"data.source = {str(source)!r} holds the train/ and test/ tree at z and, at h, a train/ or test/ folder "
            f"without the other"
        )


def test_a_folder_that_cannot_be_searched_reached_through_many_links_is_listed_once(tmp_path, monkeypatch):
    """2,000 links beside the tree to one folder of 190,000 files, of mode 644 (listed, not
    searched): listed once for each link to see whether it held train/ or test/ (minutes)."""
    source = make_class_tree(tmp_path / "export", {"train": 1, "test": 1})
    big = tmp_path / "big"
    big.mkdir()
    for index in range(40):
        (big / f"{index}.bin").touch()
    for index in range(30):
        (source / f"d{index}").symlink_to(big)
    real_stat = os.stat

    def searching(path, *args, **kwargs):  # `chmod 644 big` for a user without root's override
        if os.fspath(path).endswith("/.") and os.path.realpath(path) == str(big):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", searching)
    scans = scans_counted(monkeypatch)
    splits = import_dataset(DataConfig(source=str(source)), 0, tmp_path / "dl")
    assert len(splits["train"].labels) == 10
    assert scans[str(big)] <= 2  # by the search, and to see whether it lists train/ or test/


@pytest.mark.parametrize("beside", ["files", "folders"])
def test_a_listing_at_a_long_path_takes_memory_by_its_names_not_its_paths(tmp_path, beside):
    """190,000 files beside the tree at a 3.8 KB path took 1.6 GB: each entry's full path held
    twice (at 20,000 files, 150 MB); 190,000 folders took 870 MB, each Path keeping its own."""
    deep = tmp_path.joinpath(*(f"{index:02d}" + "d" * 198 for index in range((3800 - len(str(tmp_path))) // 201)))
    source = make_class_tree(deep, {"train": 1, "test": 1})
    (source / "raw").mkdir()
    for index in range(20_000):
        if beside == "files":
            (source / "raw" / f"{index}.bin").touch()
        else:
            (source / "raw" / f"{index}").mkdir()
    tracemalloc.start()
    try:
        splits = import_dataset(DataConfig(source=str(source)), 0, tmp_path / "dl")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(splits["train"].labels) == 10
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_a_link_into_a_loop_names_the_link_that_loops(tmp_path):
    """`data -> nas/cifar` with `nas -> nas`: data, which leads into the loop, was named as looping,
    and nas, which loops, went unnamed."""
    (tmp_path / "nas").symlink_to(tmp_path / "nas")
    (tmp_path / "data").symlink_to(tmp_path / "nas" / "cifar")
    source = tmp_path / "data" / "cifar-10-python.tar.gz"
    assert refusal_of(source, tmp_path) == (
        f"data.source = {str(source)!r}: {tmp_path / 'nas'} is a symbolic link that loops (it leads back to itself), "
        f"and {tmp_path / 'data'} leads into it; point it at the data, or data.source at where the data is"
    )


def test_a_folder_reached_again_through_a_link_counts_once_toward_the_listing_limit(tmp_path, monkeypatch):
    """`latest -> raw` beside the tree: raw's files were counted once for each path to them."""
    source = make_class_tree(tmp_path / "export", {"train": 1, "test": 1})
    (source / "raw").mkdir()
    for index in range(40):
        (source / "raw" / f"{index}.bin").touch()
    (source / "latest").symlink_to(source / "raw")
    monkeypatch.setattr(sources.archives, "MAX_MEMBERS", 100)  # the tree, raw/, latest and raw's files: 86
    splits = import_dataset(DataConfig(source=str(source)), 0, tmp_path / "dl")
    assert len(splits["train"].labels) == 10


def test_a_link_beside_a_tree_on_to_a_folder_that_cannot_be_searched_is_named(tmp_path, monkeypatch):
    """`old -> /disk/old`, /disk of mode 644, beside the tree: passed over without a word."""
    source = make_class_tree(tmp_path / "export", {"train": 1, "test": 1})
    disk = tmp_path / "disk"
    make_class_tree(disk / "old", {"train": 1, "test": 1})
    (source / "old").symlink_to(disk / "old")
    deny_searching(monkeypatch, disk)
    assert refusal_of(source, tmp_path).startswith(f"data.source = {str(source)!r}: {disk} cannot be searched, so")


def test_a_split_linked_two_folders_down_on_to_a_folder_that_cannot_be_searched_is_named(tmp_path, monkeypatch):
    """export/a/b holds test/ and `train -> /disk/train` (kept on another disk), /disk of mode 644:
    "no train/ and test/ folders found", the layout named as expected that export/a/b has."""
    tree = make_class_tree(tmp_path / "tree", {"train": 1, "test": 1})
    source, disk = tmp_path / "export", tmp_path / "disk"
    (source / "a" / "b").mkdir(parents=True)
    shutil.move(tree / "test", source / "a" / "b" / "test")
    disk.mkdir()
    shutil.move(tree / "train", disk / "train")
    (source / "a" / "b" / "train").symlink_to(disk / "train")
    deny_searching(monkeypatch, disk)
    assert refusal_of(source, tmp_path).startswith(
        f"data.source = {str(source)!r}: {disk} cannot be searched, and the train/ and test/ folders, found nowhere "
        f"else, may lie in it"
    )


def test_the_output_check_reads_the_mount_table_a_few_times_whatever_the_class_folders(tmp_path, monkeypatch):
    """150,000 class folders (one per identity, as in a faces data set) each went through the
    mount table: 180 s of CPU before the tree's own line."""
    source = make_class_tree(tmp_path / "export", {"train": 1, "test": 1})
    for index in range(200):
        (source / "train" / f"identity{index:03d}").mkdir()
    reads = []
    monkeypatch.setattr(sources, "mount_table", lambda: reads.append(1) or [])
    with pytest.raises(DataError):
        import_dataset(DataConfig(source=str(source)), 0, tmp_path / "dl", keep_out=(tmp_path / "out",))
    assert len(reads) <= 4
