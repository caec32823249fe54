import itertools
import os
import shutil
import signal
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import cifar.ingest.sources
from cifar.cli import Stopped, install_stop_handlers
from cifar.config import DataConfig
from cifar.dataset import Split, class_balanced_subset, load_split, save_dataset
from cifar.errors import DataError
from cifar.ingest.sources import CIFAR10_CLASSES as CLASSES
from cifar.ingest.sources import ClassTree, ImageFile, import_dataset, read_class_folders, synthetic_split
from generated import make_class_tree


@pytest.fixture
def class_tree(tmp_path):
    return make_class_tree(tmp_path / "cifar-export", {"train": 3, "test": 2})


@pytest.mark.parametrize("archive_format", ["gztar", "xztar", "bztar", "tar", "zip"])
def test_a_class_folder_archive_imports(tmp_path, class_tree, archive_format):
    archive = shutil.make_archive(
        str(tmp_path / "export"), archive_format, root_dir=class_tree.parent, base_dir=class_tree.name
    )
    splits = import_dataset(DataConfig(source=archive), seed=0, download_dir=tmp_path / "unused")
    train, test = splits["train"], splits["test"]
    assert train.classes == CLASSES
    assert train.images.shape == (30, 32, 32, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (20, 32, 32, 3)
    assert train.labels.dtype == np.int64 and sorted(set(train.labels.tolist())) == list(range(10))
    # PNG is lossless: the marker pixel gives back each image's class.
    assert np.array_equal(train.images[:, 0, 0, 0], train.labels * 25)


@pytest.mark.parametrize(
    ("archive_format", "suffix"), [("xztar", ".txz"), ("bztar", ".tbz"), ("bztar", ".tb2"), ("gztar", ".taz")]
)
def test_a_tar_named_by_a_short_suffix_of_gnu_tars_imports(tmp_path, class_tree, archive_format, suffix):
    """`tar caf export.txz` makes one: it was refused as named for no archive."""
    made = shutil.make_archive(
        str(tmp_path / "export"), archive_format, root_dir=class_tree.parent, base_dir=class_tree.name
    )
    archive = Path(made).rename(tmp_path / f"export{suffix}")
    splits = import_dataset(DataConfig(source=str(archive)), seed=0, download_dir=tmp_path / "unused")
    assert splits["train"].images.shape == (30, 32, 32, 3) and splits["test"].images.shape == (20, 32, 32, 3)


def test_a_tree_reached_again_through_a_link_to_itself_imports_once(tmp_path, class_tree):
    """`loop -> .` beside train/ and test/ was refused as three trees (., loop, loop/loop)
    that could not be told apart: one folder, reached three ways."""
    (class_tree / "loop").symlink_to(".")
    splits = import_dataset(DataConfig(source=str(class_tree)), seed=0, download_dir=tmp_path / "unused")
    assert splits["train"].images.shape == (30, 32, 32, 3) and splits["test"].images.shape == (20, 32, 32, 3)


@pytest.mark.parametrize("unzipped", [False, True], ids=["zip", "unzipped-folder"])
def test_a_zip_made_by_macos_finder_imports_without_its_metadata(tmp_path, class_tree, unzipped):
    """Unzipped, its __MACOSX/ copy was a second tree and each ._ file an unreadable image."""
    archive = Path(
        shutil.make_archive(str(tmp_path / "export"), "zip", root_dir=class_tree.parent, base_dir=class_tree.name)
    )
    attributes = b"\x00\x05\x16\x07" + bytes(60)  # an AppleDouble header: not an image
    with zipfile.ZipFile(archive, "a") as bundle:
        for member in [m for m in bundle.namelist() if m.endswith(".png")]:
            folder, name = member.rsplit("/", 1)
            bundle.writestr(f"__MACOSX/{folder}/._{name}", attributes)
            bundle.writestr(f"{folder}/._{name}", attributes)
        if unzipped:
            bundle.extractall(tmp_path / "unzipped")
    source = tmp_path / "unzipped" if unzipped else archive
    splits = import_dataset(DataConfig(source=str(source)), seed=0, download_dir=tmp_path / "unused")
    assert splits["train"].images.shape == (30, 32, 32, 3) and splits["test"].images.shape == (20, 32, 32, 3)


@pytest.mark.parametrize(
    ("archive_format", "beside"),
    [("gztar", "docs/test/README.txt"), ("folder", "docs/test/README.txt"), ("folder", "old/test/cat/._0000.png")],
    ids=["notes-in-an-archive", "notes-in-a-folder", "macos-attributes-in-a-folder"],
)
def test_a_test_folder_without_images_beside_the_tree_is_no_other_tree(tmp_path, class_tree, archive_format, beside):
    """docs/test/README.txt beside the tree was refused as half of a second tree, as was a
    folder of the ._ files macOS's tar leaves beside each image."""
    (class_tree / beside).parent.mkdir(parents=True)
    (class_tree / beside).write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    source = (
        class_tree
        if archive_format == "folder"
        else shutil.make_archive(str(tmp_path / "export"), archive_format, root_dir=class_tree)
    )
    splits = import_dataset(DataConfig(source=str(source)), seed=0, download_dir=tmp_path / "unused")
    assert splits["train"].images.shape == (30, 32, 32, 3)


def test_an_image_named_like_macos_metadata_outside_macosx_is_imported(tmp_path, class_tree):
    """Every "._*" file was passed over without a word: a genuine PNG named "._0049.png" too."""
    image = next(class_tree.glob("train/*/*.png"))
    image.rename(image.with_name(f"._{image.name}"))
    archive = Path(
        shutil.make_archive(str(tmp_path / "export"), "zip", root_dir=class_tree.parent, base_dir=class_tree.name)
    )
    splits = import_dataset(DataConfig(source=str(archive)), seed=0, download_dir=tmp_path / "unused")
    assert splits["train"].images.shape == (30, 32, 32, 3)


def test_class_folder_images_are_stored_round_robin_over_classes(tmp_path, class_tree):
    train = import_dataset(DataConfig(source=str(class_tree)), 0, tmp_path)["train"]
    assert train.labels.tolist() == list(range(10)) * 3
    # The marker pixel holds each image's index within its class folder: ten 0s, ten 1s, ten 2s.
    assert train.images[:, 0, 0, 1].tolist() == [i for i in range(3) for _ in range(10)]


def test_a_class_folder_tree_imports_with_class_balanced_limits(tmp_path, class_tree):
    splits = import_dataset(DataConfig(source=str(class_tree), train_limit=23, test_limit=None), 0, tmp_path)
    assert np.bincount(splits["train"].labels).tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert len(splits["test"]) == 20


def test_jpeg_trees_import(tmp_path):
    tree = make_class_tree(tmp_path / "jpegs", {"train": 2, "test": 1}, suffix=".jpg")
    splits = import_dataset(DataConfig(source=str(tree)), 0, tmp_path)
    assert splits["train"].images.shape == (20, 32, 32, 3)


def test_a_stop_signal_while_images_decode_ends_the_import_without_decoding_the_rest():
    """SIGTERM raised in the main thread as it took a lock of the decoding pool left the
    workers waiting on that lock for ever (download hung, 100,000 images); otherwise the
    queue of decodes ran to its end (8-14 s) before the stage stopped. The workers decode on
    until the main thread, busy or not scheduled on a loaded machine, notes the signal: 1,618
    more of these empty images once in CI, so the split is large enough for that."""
    decoded, lock, per_class = itertools.count(1), threading.Lock(), 2000
    install_stop_handlers()
    stage_handler, handlers_while_decoding = signal.getsignal(signal.SIGTERM), set()

    def decode() -> np.ndarray:
        handlers_while_decoding.add(signal.getsignal(signal.SIGTERM))
        with lock:
            number = next(decoded)
        if number == per_class * len(CLASSES) // 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return np.zeros((32, 32, 3), np.uint8)

    def images(split: str, name: str) -> list[ImageFile]:
        return [ImageFile(f"{split}/{name}/{index}.png", decode, (split, name, index)) for index in range(per_class)]

    tree = ClassTree("tree", {split: {name: images(split, name) for name in CLASSES} for split in ("train", "test")})
    with pytest.raises(Stopped) as stopped:
        read_class_folders(tree, {"train": None, "test": None})
    assert stopped.value.args == (signal.SIGTERM,)
    assert stage_handler not in handlers_while_decoding, "a stop signal is only noted while the pool runs"
    # the half decoded, and those the workers took until the main thread noted the signal
    assert next(decoded) - 1 < per_class * len(CLASSES)


def test_limit_larger_than_the_source_is_refused_with_the_largest_that_fits(tmp_path, class_tree):
    with pytest.raises(
        DataError,
        match=r"data.train_limit = 40 asks for 4 images of class 'airplane' but the source has 3; lower "
        r"data.train_limit to at most 30, or set it to null to take every image$",
    ):
        import_dataset(DataConfig(source=str(class_tree), train_limit=40), 0, tmp_path)


def replace_with_small_image(tree):
    Image.new("RGB", (28, 28)).save(tree / "train" / "bird" / "0002.png")


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda tree: shutil.rmtree(tree / "test"), "no train/ and test/ folders found"),
        (lambda tree: shutil.rmtree(tree / "test" / "bird"), "train/ and test/ have different class folders"),
        (
            lambda tree: (tree / "train" / "bird" / "0001.png").write_bytes(b"not a png"),
            "0001.png: not a readable PNG or JPEG image",
        ),
        (
            lambda tree: (tree / "train" / "bird" / "0001.png").write_bytes(b"\xff\xd8\xff\xe0cut"),
            "0001.png: not a readable image",
        ),
        (
            lambda tree: [shutil.rmtree(tree / split / "cat") for split in ("train", "test")],
            "class folders must be CIFAR-10's ten .*; missing: 'cat'; unexpected: none",
        ),
        (
            lambda tree: [(tree / split / "unicorn").mkdir() for split in ("train", "test")],
            "missing: none; unexpected: 'unicorn'",
        ),
        (replace_with_small_image, "0002.png: image is 28x28, expected 32x32"),
    ],
)
def test_bad_class_trees_name_the_problem(tmp_path, class_tree, break_it, message):
    break_it(class_tree)
    with pytest.raises(DataError, match=message):
        import_dataset(DataConfig(source=str(class_tree)), 0, tmp_path)


def test_missing_source_explains_the_expected_layout(tmp_path):
    with pytest.raises(DataError, match=r"no such file or directory; expected the official cifar-10-python.tar.gz"):
        import_dataset(DataConfig(source=str(tmp_path / "nowhere")), 0, tmp_path)


@pytest.mark.parametrize("source", ["Synthetic", "OFFICIAL", "synthetic "])
def test_a_keyword_miswritten_is_named_as_the_keyword(tmp_path, monkeypatch, source):
    """`data.source: Synthetic` was a missing path, with the layouts a path may have and no word of the keywords."""
    monkeypatch.chdir(tmp_path)
    keyword = source.strip().lower()
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source=source), 0, tmp_path)
    assert str(refused.value) == (
        f"data.source = {source!r}: no such file or directory; for the keyword, write {keyword!r} "
        "(lowercase, no spaces)"
    )


# What every line about DVC's copy of the workspace ends with: a queued experiment's copy is made
# when it is queued, and "commit the data with git" alone was advised for data committed since.
DVC_COPY_HOLDS_AND_FIX = (
    "the files git tracked when the experiment was run or queued, and of the data DVC tracks only what a stage "
    "depends on; give data.source as an absolute path, or commit the data with git and run or queue the experiment "
    "again"
)


@pytest.fixture
def dvc_copy(tmp_path, monkeypatch) -> Path:
    """The working folder as `dvc exp run --temp` runs a stage: DVC's copy of the workspace, as
    DVC 3.67 makes it, which holds the files git tracks and the data of the stages' dependencies."""
    copy = tmp_path / "project" / ".dvc" / "tmp" / "exps" / "standalone" / "tmp5y1ox2ab"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "project"))
    return copy


def test_a_tracked_link_to_nothing_in_dvcs_copy_of_the_workspace_is_named_as_such(tmp_path, dvc_copy):
    """A link git tracks is in DVC's copy: "track it with git" was advised for it."""
    copy = dvc_copy
    (copy / "src").symlink_to(tmp_path / "not-mounted")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="src"), 0, tmp_path)
    assert str(refused.value).startswith(f"data.source = 'src' is a symbolic link to {tmp_path / 'not-mounted'},")


def test_a_tracked_relative_link_leading_out_of_dvcs_copy_of_the_workspace_is_named(tmp_path, dvc_copy):
    """`cifar.tar.gz -> ../outside/cifar.tar.gz`, tracked, imports in the workspace; in DVC's copy it
    leads nowhere, and "a drive not mounted" was said of it."""
    copy = dvc_copy
    (copy / "cifar.tar.gz").symlink_to("../outside/cifar.tar.gz")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="cifar.tar.gz"), 0, tmp_path)
    assert str(refused.value) == (
        "data.source = 'cifar.tar.gz': cifar.tar.gz is a symbolic link to ../outside/cifar.tar.gz, relative to where "
        "it lies, and in the copy of the workspace that DVC runs this experiment in it leads nowhere; make the link "
        "absolute, or give data.source as an absolute path"
    )


@pytest.mark.parametrize("kept", ["a link in the copy leading on to a drive", "a relative link outside the copy"])
def test_links_that_do_not_leave_dvcs_copy_of_the_workspace_get_the_drive_line(tmp_path, dvc_copy, kept):
    """Only a relative link in the copy that leads out of it is named as one; a link in the copy on
    to an absolute link to a drive not mounted, or a relative link in the user's home, were not."""
    copy = dvc_copy
    if kept.startswith("a link in the copy"):
        (copy / "external").symlink_to(tmp_path / "media" / "USB")
        (copy / "cifar.tar.gz").symlink_to("external/cifar.tar.gz")
        source = "cifar.tar.gz"
    else:
        (tmp_path / "home").mkdir()
        (tmp_path / "home" / "datasets").symlink_to("../media/USB")
        source = str(tmp_path / "home" / "datasets" / "cifar.tar.gz")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source=source), 0, tmp_path)
    assert "which does not exist (a drive not mounted, or the data moved)" in str(refused.value)


def test_a_tracked_relative_link_below_the_source_leading_out_of_dvcs_copy_is_named(tmp_path, dvc_copy):
    """`raw/cifar10 -> ../../datasets/cifar10` imports in the workspace; in DVC's copy the search
    passed over it, and "no train/ and test/ folders" named as expected the layout the user has."""
    (dvc_copy / "raw").mkdir()
    (dvc_copy / "raw" / "README.md").write_text("CIFAR-10 lives beside the repository\n")
    (dvc_copy / "raw" / "cifar10").symlink_to("../../datasets/cifar10")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path)
    assert str(refused.value) == (
        "data.source = 'raw': raw/cifar10 is a symbolic link to ../../datasets/cifar10, relative to where it lies, "
        "and in the copy of the workspace that DVC runs this experiment in it leads nowhere; make the link absolute, "
        "or give data.source as an absolute path"
    )


def test_a_folder_whose_data_git_ignores_is_named_as_dvcs_copy_in_dvcs_copy(tmp_path, dvc_copy):
    """raw/ tracked by its .gitignore alone (`*`, `!.gitignore`) is empty in DVC's copy: "no train/ and
    test/ folders" named as expected the layout raw/ has in the workspace."""
    (dvc_copy / "raw").mkdir()
    (dvc_copy / "raw" / ".gitignore").write_text("*\n!.gitignore\n")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path)
    assert str(refused.value) == (
        "data.source = 'raw': no train/ and test/ folders found in it or up to two folders below it in the copy of "
        f"the workspace that DVC runs this experiment in, which holds {DVC_COPY_HOLDS_AND_FIX}"
    )


@pytest.mark.parametrize(
    "workspace_has", ["images not yet committed", "a git-ignored class folder", "images behind a link not committed"]
)
def test_a_folder_source_that_dvcs_copy_holds_only_in_part_is_refused(tmp_path, dvc_copy, workspace_has):
    """Images added but not committed were left out of DVC's copy, and the import took 190 of 200
    without a word, also where a committed link (`raw/cifar -> ../pool/cifar`) led to them; a
    git-ignored class folder was refused as train/ and test/ disagreeing."""
    workspace = tmp_path / "project"
    if workspace_has == "images behind a link not committed":
        make_class_tree(dvc_copy / "pool/cifar", {"train": 2, "test": 1})
        shutil.copytree(dvc_copy / "pool", workspace / "pool")
        for tree in (dvc_copy, workspace):
            (tree / "raw").mkdir()
            (tree / "raw/cifar").symlink_to("../pool/cifar")
        shutil.copy(workspace / "pool/cifar/train/cat/0000.png", workspace / "pool/cifar/train/cat/9999.png")
        first = "raw/cifar/train/cat/9999.png"
    else:
        make_class_tree(dvc_copy / "raw", {"train": 2, "test": 1})
        shutil.copytree(dvc_copy / "raw", workspace / "raw")
    if workspace_has == "images not yet committed":
        shutil.copy(workspace / "raw/train/cat/0000.png", workspace / "raw/train/cat/9999.png")
        first = "raw/train/cat/9999.png"
    elif workspace_has == "a git-ignored class folder":
        shutil.rmtree(dvc_copy / "raw/test/truck")
        first = "raw/test/truck/0000.png"
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path / "dl", workspace=workspace)
    assert str(refused.value).startswith(
        f"data.source = 'raw' differs in the copy of the workspace that DVC runs this experiment in from the "
        f"workspace's in 1 file ({first} first), as the copy holds {DVC_COPY_HOLDS_AND_FIX}"
    )


def test_a_folder_source_whose_images_differ_in_dvcs_copy_only_in_content_is_refused(tmp_path, dvc_copy):
    """cat/ and dog/ swapped and committed after `dvc exp run --queue`, whose copy is made as it
    is queued: every image of the same size, a comparison of sizes passed it, and the queued run
    imported the old labels, exit 0."""
    make_class_tree(dvc_copy / "raw", {"train": 2, "test": 1})
    workspace = tmp_path / "project"
    shutil.copytree(dvc_copy / "raw", workspace / "raw")
    (workspace / "raw/train/cat").rename(workspace / "raw/train/kept")
    (workspace / "raw/train/dog").rename(workspace / "raw/train/cat")
    (workspace / "raw/train/kept").rename(workspace / "raw/train/dog")
    assert {path.stat().st_size for path in (workspace / "raw/train").glob("*/*.png")} == {
        path.stat().st_size for path in (dvc_copy / "raw/train").glob("*/*.png")
    }
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path / "dl", workspace=workspace)
    assert str(refused.value) == (
        "data.source = 'raw' differs in the copy of the workspace that DVC runs this experiment in from the "
        f"workspace's in 4 files (raw/train/cat/0000.png first), as the copy holds {DVC_COPY_HOLDS_AND_FIX}"
    )


def test_an_archive_source_that_differs_in_dvcs_copy_is_refused(tmp_path, dvc_copy, class_tree):
    """An archive exported again after `dvc exp run --queue`: the queued run imported the one it
    was queued with, while a folder changed alike was refused."""
    workspace = tmp_path / "project"
    (workspace / "raw").mkdir(parents=True)
    shutil.make_archive(str(workspace / "raw/cifar"), "gztar", root_dir=class_tree)
    (dvc_copy / "raw").mkdir()
    shutil.make_archive(str(dvc_copy / "raw/cifar"), "zip", root_dir=class_tree)
    (dvc_copy / "raw/cifar.zip").rename(dvc_copy / "raw/cifar.tar.gz")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw/cifar.tar.gz"), 0, tmp_path / "dl", workspace=workspace)
    assert str(refused.value) == (
        "data.source = 'raw/cifar.tar.gz' differs in the copy of the workspace that DVC runs this experiment in from "
        f"the workspace's in 1 file (raw/cifar.tar.gz first), as the copy holds {DVC_COPY_HOLDS_AND_FIX}"
    )


@pytest.mark.parametrize(
    ("workspace_has", "said"),
    [
        ("a folder inside a class folder", "/project/raw/train/cat/more: a folder inside class folder "),
        ("a class folder that is another's", "/project/raw/train/dog -> cat: a symbolic link inside data.source"),
    ],
)
def test_a_tree_the_workspace_refuses_is_refused_in_dvcs_copy(tmp_path, dvc_copy, workspace_has, said):
    """A git-ignored folder of images inside a class folder, or a class folder bind-mounted on
    another's (which DVC copies as files, as it does what a link leads to): the workspace refused
    its tree, while DVC's copy left the folder's images out, or imported the cat images labelled
    dog too, exit 0."""
    make_class_tree(dvc_copy / "raw", {"train": 2, "test": 1})
    workspace = tmp_path / "project"
    shutil.copytree(dvc_copy / "raw", workspace / "raw")
    if workspace_has == "a folder inside a class folder":
        shutil.copytree(workspace / "raw/train/dog", workspace / "raw/train/cat/more")
    else:
        shutil.rmtree(workspace / "raw/train/dog")
        (workspace / "raw/train/dog").symlink_to("cat")
        shutil.rmtree(dvc_copy / "raw/train/dog")
        shutil.copytree(dvc_copy / "raw/train/cat", dvc_copy / "raw/train/dog")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path / "dl", workspace=workspace)
    assert said in str(refused.value)


GIT_LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 3172\n"
)


def test_git_lfs_pointer_files_in_an_archive_are_named_as_such(tmp_path, class_tree):
    """An archive packed from a checkout whose Git LFS files were not fetched: `git lfs pull`, as
    advised for a pointer file, changed nothing inside the archive."""
    (class_tree / "train/cat/0000.png").write_bytes(GIT_LFS_POINTER)
    archive = Path(shutil.make_archive(str(tmp_path / "cifar"), "gztar", root_dir=class_tree))
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source=str(archive)), 0, tmp_path / "dl")
    assert str(refused.value) == (
        f"{archive}:train/cat/0000.png: a Git LFS pointer file, not the image it stands for: {archive} was packed "
        f"from a checkout whose Git LFS files were not fetched; pack it again after `git lfs pull --include= "
        f"--exclude=` there"
    )


@pytest.mark.parametrize("pointer", ["an image", "an archive"])
def test_a_git_lfs_pointer_file_is_named_as_such(tmp_path, class_tree, pointer):
    """A clone made without Git LFS holds pointer files: an image was "not a readable PNG or JPEG
    image ... or remove it", an archive "corrupt or truncated ... download or export it again".
    Where .lfsconfig's fetchexclude leaves the data out, a plain `git lfs pull` fetched nothing."""
    if pointer == "an archive":
        source = named = tmp_path / "cifar.tar.gz"
        said = " is a Git LFS pointer file"
    else:
        source, named = class_tree, class_tree / "train/cat/0000.png"
        said = ": a Git LFS pointer file"
    named.write_bytes(GIT_LFS_POINTER)
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source=str(source)), 0, tmp_path / "dl")
    assert str(refused.value) == (
        f"{named}{said}, not the file it stands for; fetch it with `git lfs pull --include= --exclude=` (Git LFS "
        f"installed)"
    )


@pytest.mark.parametrize("pointers_in", ["the copy", "the workspace"])
def test_git_lfs_pointer_files_in_dvcs_copy_are_named_as_such(tmp_path, dvc_copy, pointers_in):
    """DVC (3.67, Git LFS 3.3) left the workspace's images as Git LFS pointers as it made its copy
    of the workspace: the images were said to differ from the workspace's, and "commit the data
    with git" advised for data committed."""
    workspace = tmp_path / "project"
    make_class_tree(workspace / "raw", {"train": 2, "test": 1})
    shutil.copytree(workspace / "raw", dvc_copy / "raw")
    in_pointers = dvc_copy if pointers_in == "the copy" else workspace
    for image in (in_pointers / "raw").glob("*/*/*.png"):
        image.write_bytes(GIT_LFS_POINTER)
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path / "dl", workspace=workspace)
    named = "raw" if pointers_in == "the copy" else workspace / "raw"
    assert str(refused.value) == (
        f"data.source = 'raw': {named}/test/airplane/0000.png is a Git LFS pointer file, not the file it stands "
        "for: DVC fetches no Git LFS file into the copy of the workspace that it runs this experiment in, and may "
        "leave the workspace's as pointers too (`git lfs checkout` restores them); move the data out of the "
        "repository and give data.source as its absolute path"
    )


@pytest.mark.parametrize("workspace_has", ["a named pipe", "an image of 100 GB"])
def test_an_image_the_workspace_refuses_is_refused_as_such_in_dvcs_copy(tmp_path, dvc_copy, workspace_has):
    """A named pipe or a sparse 100 GB file named .png in the workspace's tree only: DVC's copy
    said the data differs and advised committing it, which git cannot (a pipe) or should not."""
    make_class_tree(dvc_copy / "raw", {"train": 2, "test": 1})
    workspace = tmp_path / "project"
    shutil.copytree(dvc_copy / "raw", workspace / "raw")
    extra = workspace / "raw/train/cat/live.png"
    if workspace_has == "a named pipe":
        os.mkfifo(extra)
        said = f"{extra}: a named pipe (FIFO), not an image file; "
    else:
        with extra.open("wb") as sparse:
            sparse.truncate(100 << 30)
        said = f"{extra}: more than 1 MiB, far more than a 32x32 image takes; "
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path / "dl", workspace=workspace)
    assert str(refused.value).startswith(said)


@pytest.mark.parametrize("source", ["../beside", "../project/raw"])
def test_a_source_that_climbs_out_of_the_repository_is_named_in_dvcs_copy(tmp_path, dvc_copy, source):
    """`data.source: ../beside`, beside the repository, or `../project/raw`, back into it by its
    folder's name: from DVC's copy, deeper, each led elsewhere, and "commit the data with git" was
    advised, which git refuses for a path outside it, and had done for the other."""
    make_class_tree(tmp_path / "beside", {"train": 1, "test": 1})
    make_class_tree(tmp_path / "project/raw", {"train": 1, "test": 1})
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source=source), 0, tmp_path / "dl", workspace=tmp_path / "project")
    assert str(refused.value) == (
        f"data.source = {source!r} climbs out of the repository with `..`, and from the copy of the workspace that "
        f"DVC runs this experiment in (inside .dvc/tmp/exps) it leads to {os.path.realpath(dvc_copy / source)}, not "
        f"to {os.path.realpath(tmp_path / 'project' / source)}; give data.source as an absolute path"
    )


def test_a_source_whose_dots_stay_in_dvcs_copy_is_imported(tmp_path, dvc_copy):
    """`d/../../raw` through a committed link `d -> sub/deeper` stays in the repository, and `.`
    is the repository itself: "leads out of the repository" was said of both, by their text."""
    make_class_tree(dvc_copy / "raw", {"train": 1, "test": 1})
    (dvc_copy / "sub/deeper").mkdir(parents=True)
    (dvc_copy / "d").symlink_to("sub/deeper")
    workspace = tmp_path / "project"
    for each in ("raw", "sub"):
        shutil.copytree(dvc_copy / each, workspace / each)
    (workspace / "d").symlink_to("sub/deeper")
    for source in ("d/../../raw", "."):
        splits = import_dataset(DataConfig(source=source), 0, tmp_path / "dl", workspace=workspace)
        assert {name: len(split.labels) for name, split in splits.items()} == {"train": 10, "test": 10}


def test_a_source_in_a_git_submodule_is_named_in_dvcs_copy(tmp_path, dvc_copy):
    """A tree committed in a submodule, which DVC leaves empty in its copy: "the workspace's raw is
    not in the copy ...; commit the data with git" was said of data committed."""
    workspace = tmp_path / "project"
    make_class_tree(workspace / "raw", {"train": 1, "test": 1})
    (workspace / "raw/.git").write_text("gitdir: ../.git/modules/raw\n")
    (dvc_copy / "raw").mkdir()
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path / "dl", workspace=workspace)
    assert str(refused.value) == (
        "data.source = 'raw' lies in raw, a git repository of its own (a submodule, or a clone inside this one), which "
        "DVC leaves empty in the copy of the workspace that it runs this experiment in; give data.source as an "
        f"absolute path ({workspace / 'raw'})"
    )


@pytest.mark.parametrize(
    ("now", "make"),
    [
        ("gone", lambda raw: None),
        ("a symbolic link to nothing", lambda raw: raw.symlink_to("moved")),
        ("a file, not a folder", lambda raw: raw.write_text("notes")),
        ("a named pipe (FIFO), not a folder", os.mkfifo),
    ],
)
def test_a_source_changed_in_the_workspace_since_queueing_is_named_in_dvcs_copy(tmp_path, dvc_copy, now, make):
    """Removed, moved (a link left behind) or replaced by a file in the workspace after `dvc exp run
    --queue`: the queued run said the workspace's folder "cannot be read", with no fix."""
    make_class_tree(dvc_copy / "raw", {"train": 1, "test": 1})
    (tmp_path / "project").mkdir(exist_ok=True)
    make(tmp_path / "project/raw")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path / "dl", workspace=tmp_path / "project")
    assert str(refused.value) == (
        f"data.source = 'raw' is in the copy of the workspace that DVC runs this queued experiment in, but the "
        f"workspace's is {now} (moved, removed or replaced since it was queued); put the data back, or queue the "
        f"experiment again with data.source where the data is now"
    )


def test_a_source_that_the_workspace_lacks_too_is_not_blamed_on_dvcs_copy(tmp_path, dvc_copy):
    """A committed folder deleted in the workspace (not committed), then `dvc exp run --temp`:
    "commit the data with git" was said of data that was nowhere."""
    (tmp_path / "project").mkdir(exist_ok=True)
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path / "dl", workspace=tmp_path / "project")
    assert str(refused.value).startswith("data.source = 'raw': no such file or directory; expected ")


@pytest.mark.parametrize("packed", [False, True])
def test_official_batches_that_are_git_lfs_pointers_are_named_as_such(tmp_path, packed):
    """The official batch files committed with Git LFS, in a clone without it: "fail the md5 check
    ... or remove that folder", which would have deleted the data."""
    batches = tmp_path / "raw" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (batches / name).write_bytes(GIT_LFS_POINTER)
    (batches / "batches.meta").write_bytes(GIT_LFS_POINTER)
    source = (
        Path(shutil.make_archive(str(tmp_path / "cifar"), "gztar", root_dir=tmp_path / "raw"))
        if packed
        else (tmp_path / "raw")
    )
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source=str(source)), 0, tmp_path / "dl")
    fix = (
        f"pack {source} again after `git lfs pull --include= --exclude=` in the checkout it came from"
        if packed
        else ("fetch them with `git lfs pull --include= --exclude=` (Git LFS installed)")
    )
    assert str(refused.value) == (
        f"data.source = {str(source)!r}: data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, "
        f"test_batch, batches.meta in its cifar-10-batches-py are Git LFS pointer files, not the batches they stand "
        f"for; {fix}"
    )


def test_files_the_import_passes_over_may_differ_in_dvcs_copy(tmp_path, dvc_copy):
    """Git-ignored files beside the images that the import passes over were refused, and `git add`
    advised, which git refuses for ignored files: a .DS_Store, macOS's ._ files, previews or the
    archive the tree came from beside it, a notebook's checkpoints, folders git cannot hold (empty
    ones)."""
    make_class_tree(dvc_copy / "raw", {"train": 2, "test": 1})
    workspace = tmp_path / "project"
    shutil.copytree(dvc_copy / "raw", workspace / "raw")
    (workspace / "raw/train/cat/.DS_Store").write_bytes(b"Bud1")
    (workspace / "raw/train/cat/._0000.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    (workspace / "raw/previews").mkdir()
    shutil.copy(workspace / "raw/train/cat/0000.png", workspace / "raw/previews/cat.png")
    (workspace / "raw/raw.tar.gz").write_bytes(b"not read")
    (workspace / "raw/.ipynb_checkpoints").mkdir()
    (workspace / "raw/.ipynb_checkpoints/look-checkpoint.ipynb").write_text("{}")
    (workspace / "raw/empty/one").mkdir(parents=True)
    splits = import_dataset(DataConfig(source="raw"), 0, tmp_path / "dl", workspace=workspace)
    assert {name: len(split.labels) for name, split in splits.items()} == {"train": 20, "test": 10}


@pytest.mark.parametrize(
    ("ignored", "said"),
    [
        ("a second tree", "data.source = 'raw' holds "),
        ("the official batches", "data.source = 'raw': the workspace's raw/cifar-10-batches-py is not in the copy "),
    ],
)
def test_what_the_workspace_refuses_is_refused_in_dvcs_copy(tmp_path, dvc_copy, ignored, said):
    """A git-ignored second tree (or batches folder) beside the committed one: the workspace
    refused the source as holding two (or read the batches), while DVC's copy imported the
    committed tree without a word."""
    make_class_tree(dvc_copy / "raw/v1", {"train": 2, "test": 1})
    workspace = tmp_path / "project"
    shutil.copytree(dvc_copy / "raw", workspace / "raw")
    if ignored == "a second tree":
        make_class_tree(workspace / "raw/v2", {"train": 2, "test": 1})
    else:
        batches = workspace / "raw/cifar-10-batches-py"
        batches.mkdir()
        for name in ("data_batch_1", "test_batch", "batches.meta"):
            (batches / name).write_bytes(b"batch")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path / "dl", workspace=workspace)
    assert str(refused.value).startswith(said)


def test_a_tree_too_deep_for_the_search_is_not_blamed_on_dvcs_copy(tmp_path, dvc_copy):
    """Committed three folders below data.source, the tree was said to be missing from DVC's copy,
    and the fixes given (an absolute path, committing it) failed alike."""
    make_class_tree(dvc_copy / "raw/a/b/tree", {"train": 1, "test": 1})
    workspace = tmp_path / "project"
    shutil.copytree(dvc_copy / "raw", workspace / "raw")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path / "dl", workspace=workspace)
    assert str(refused.value).startswith(
        "data.source = 'raw': no train/ and test/ folders found in it or up to two folders below it; expected "
    )


def test_a_tree_only_the_workspace_holds_is_named_in_dvcs_copy(tmp_path, dvc_copy):
    """A committed archive beside a git-ignored tree: "set data.source to the archive itself" was
    said in DVC's copy, and following it imported the archive's images, not the tree's."""
    workspace = tmp_path / "project"
    make_class_tree(workspace / "raw/tree", {"train": 2, "test": 1})
    shutil.make_archive(str(workspace / "raw/old"), "gztar", root_dir=workspace / "raw/tree")
    (dvc_copy / "raw").mkdir()
    shutil.copy(workspace / "raw/old.tar.gz", dvc_copy / "raw/old.tar.gz")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path / "dl", workspace=workspace)
    assert str(refused.value) == (
        "data.source = 'raw': the workspace's raw/tree is not in the copy of the workspace that DVC runs this "
        f"experiment in, which holds {DVC_COPY_HOLDS_AND_FIX}"
    )


def test_a_source_in_the_workspace_that_dvcs_copy_lacks_is_named_as_such(tmp_path, dvc_copy):
    """A committed link to git-ignored data leads nowhere in DVC's copy: "a drive not mounted" was said."""
    workspace = tmp_path / "project"
    make_class_tree(workspace / "pool", {"train": 1, "test": 1})
    (workspace / "raw").symlink_to("pool")
    (dvc_copy / "raw").symlink_to("pool")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="raw"), 0, tmp_path / "dl", workspace=workspace)
    assert str(refused.value) == (
        "data.source = 'raw' is in the workspace but not in the copy of the workspace that DVC runs this experiment "
        f"in, which holds {DVC_COPY_HOLDS_AND_FIX}"
    )


def test_a_link_to_nothing_below_a_source_without_a_tree_is_named(tmp_path):
    """`raw/cifar10 -> /media/usb/cifar10`, the drive not mounted: "no train/ and test/ folders"."""
    source = tmp_path / "raw"
    source.mkdir()
    (source / "cifar10").symlink_to(tmp_path / "media" / "usb" / "cifar10")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source=str(source)), 0, tmp_path / "dl")
    assert str(refused.value) == (
        f"data.source = {str(source)!r}: no train/ and test/ folders found in it or up to two folders below it, and "
        f"{source / 'cifar10'}, where they may lie, is a symbolic link that leads to no folder (a drive not mounted, "
        f"or the data moved); point it at the folder it stands for, or data.source at that folder"
    )


def test_a_tracked_relative_link_that_leads_elsewhere_from_dvcs_copy_is_named(tmp_path, dvc_copy):
    """`cifar-data -> ../../../../../data/cifar10`, made with `ln -sr` from a workspace five
    folders deep: from DVC's copy, five folders deeper, it led to the workspace's own data/,
    and "no train/ and test/ folders" named as expected the layout the user has."""
    workspace_output = tmp_path / "project" / "data"
    workspace_output.mkdir()
    (dvc_copy / "cifar-data").symlink_to("../../../../../data")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="cifar-data"), 0, tmp_path, keep_out=(workspace_output,))
    assert str(refused.value) == (
        f"data.source = 'cifar-data': cifar-data is a symbolic link to ../../../../../data, relative to where it "
        f"lies, and in the copy of the workspace that DVC runs this experiment in it leads to "
        f"{tmp_path / 'project' / 'data'} instead; make the link absolute, or give data.source as an absolute path"
    )


def test_a_tracked_relative_link_below_the_source_leading_elsewhere_from_dvcs_copy_is_named(tmp_path, dvc_copy):
    """`datasets/cifar -> ../../../../../../data/cifar10` from a workspace eight folders deep: from
    DVC's copy it led to the workspace's own download output, which holds no tree, and "no train/
    and test/ folders" named as expected the layout the user has."""
    (tmp_path / "project" / "data").mkdir()
    (dvc_copy / "datasets").mkdir()
    (dvc_copy / "datasets" / "cifar").symlink_to("../../../../../../data")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="datasets"), 0, tmp_path)
    assert str(refused.value).startswith(
        "data.source = 'datasets': datasets/cifar is a symbolic link to ../../../../../../data, relative to where it "
        f"lies, and in the copy of the workspace that DVC runs this experiment in it leads to "
        f"{tmp_path / 'project' / 'data'} instead"
    )


def test_a_relative_source_missing_from_dvcs_copy_of_the_workspace_says_why(tmp_path, dvc_copy):
    """Under `dvc exp run --temp` a relative data.source of an untracked file was 'no such file
    or directory' beside the file the user could see: DVC's copy holds only tracked files."""
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="archives/cifar.tar.xz"), 0, tmp_path)
    assert str(refused.value) == (
        "data.source = 'archives/cifar.tar.xz': no such file or directory in the copy of the workspace that DVC runs "
        f"this experiment in, which holds {DVC_COPY_HOLDS_AND_FIX}"
    )


def test_truncated_archive_is_reported(tmp_path, class_tree):
    archive = Path(shutil.make_archive(str(tmp_path / "export"), "gztar", root_dir=class_tree))
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        import_dataset(DataConfig(source=str(archive)), 0, tmp_path)


def test_synthetic_is_class_balanced_and_seeded():
    split = synthetic_split(100, seed=3)
    assert split.images.shape == (100, 32, 32, 3) and np.bincount(split.labels).tolist() == [10] * 10
    assert np.array_equal(split.images, synthetic_split(100, seed=3).images)
    assert not np.array_equal(split.images, synthetic_split(100, seed=4).images)


def test_subset_keeps_the_first_images_of_each_class():
    split = synthetic_split(50, seed=0)
    subset = class_balanced_subset(split, 20, "data.train_limit")
    assert np.bincount(subset.labels).tolist() == [2] * 10
    for label in range(10):
        assert np.array_equal(subset.images[subset.labels == label], split.images[split.labels == label][:2])


def test_saved_dataset_round_trips_and_damage_is_caught(tmp_path):
    splits = {"train": synthetic_split(30, 0), "test": synthetic_split(20, 1)}
    save_dataset(splits, tmp_path / "cifar10")
    loaded = load_split(tmp_path / "cifar10", "train")
    assert np.array_equal(loaded.images, splits["train"].images) and loaded.classes == splits["train"].classes
    path = tmp_path / "cifar10" / "test.npz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(
        DataError, match=r"test.npz: contents differ from the download stage's checksum.*dvc repro download"
    ):
        load_split(tmp_path / "cifar10", "test")


def test_a_tampered_pixel_is_caught(tmp_path):
    save_dataset({"train": synthetic_split(30, 0), "test": synthetic_split(20, 1)}, tmp_path / "cifar10")
    path = tmp_path / "cifar10" / "train.npz"
    with np.load(path) as stored:
        arrays = dict(stored)
    arrays["images"][0, 0, 0, 0] ^= 1
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"train.npz: contents differ"):
        load_split(tmp_path / "cifar10", "train")


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        (None, "No such file or directory"),
        # 40 KB, under the manifest's size cap: the json module's raw RecursionError reached the user.
        ("[" * 20_000 + "]" * 20_000, "maximum recursion depth exceeded while decoding a JSON array"),
    ],
    ids=["missing", "nested-20000-deep"],
)
def test_a_missing_or_unreadable_manifest_is_reported(tmp_path, manifest, problem):
    save_dataset({"train": synthetic_split(30, 0), "test": synthetic_split(20, 1)}, tmp_path / "cifar10")
    path = tmp_path / "cifar10" / "manifest.json"
    path.unlink() if manifest is None else path.write_text(manifest)
    with pytest.raises(DataError, match=rf"manifest.json: missing or unreadable \(.*{problem}"):
        load_split(tmp_path / "cifar10", "train")


def test_labels_out_of_range_are_named(tmp_path):
    bad = synthetic_split(20, 1)
    save_dataset({"test": Split(bad.images, bad.labels + 10, bad.classes)}, tmp_path / "cifar10")
    with pytest.raises(DataError, match=r"test.npz: label ids must lie in 0..9, found 10..19"):
        load_split(tmp_path / "cifar10", "test")


def test_a_source_spelled_in_another_unicode_form_names_the_spelling_that_exists(tmp_path, monkeypatch):
    """A folder `données` written with é as one code point, and data.source with e and an accent
    (as a macOS editor may write it): "no such file or directory" showed a path identical on
    screen to the folder beside it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "donn\u00e9es").mkdir()
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="donne\u0301es"), 0, tmp_path)
    assert str(refused.value) == (
        "data.source = 'donne\\u0301es': no such file or directory, but 'donn\\xe9es' is: the same letters composed "
        "otherwise in Unicode, which print alike; write that spelling in params.yaml, in double quotes (YAML reads "
        "the same escapes)"
    )
    assert yaml.safe_load('source: "donn\\xe9es"')["source"] == "donn\u00e9es"


def test_a_source_whose_folder_and_file_differ_in_unicode_form_names_the_spelling_that_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cafe\u0301" / "tree-\u00e9").mkdir(parents=True)
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="caf\u00e9/tree-\u00e9"), 0, tmp_path)
    assert str(refused.value).startswith(
        "data.source = 'caf\\xe9/tree-\\xe9': no such file or directory, but 'cafe\\u0301/tree-\\xe9' is: "
    )


@pytest.mark.parametrize(
    "on_disk, typed, found",
    [
        # Two accents in one name, one composed and one not: neither whole form matches.
        ("cafe\u0301-na\u00efve", "caf\u00e9-na\u00efve", "'cafe\\u0301-na\\xefve'"),
        # Twin folders, one in each form, the tree under the one not typed.
        ("cafe\u0301/tree", "caf\u00e9/tree", "'cafe\\u0301/tree'"),
    ],
    ids=["two-forms-in-one-name", "tree-under-the-twin-not-typed"],
)
def test_a_source_in_mixed_unicode_forms_names_the_spelling_that_exists(tmp_path, monkeypatch, on_disk, typed, found):
    """Respelling each name whole, NFC or NFD, and taking the first folder that exists found
    neither: "no such file or directory" showed a path identical on screen to the one on disk."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / on_disk).mkdir(parents=True)
    (tmp_path / "caf\u00e9").mkdir(exist_ok=True)  # the typed twin, empty
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source=typed), 0, tmp_path)
    assert f"no such file or directory, but {found} is: the same letters composed otherwise" in str(refused.value)


def test_twin_spellings_linked_back_to_their_folder_are_searched_once_per_depth(tmp_path, monkeypatch):
    """`café` in both forms, each a link back to its own folder, and a data.source 40 of them
    deep: the search for another spelling tried every mix of the two, 2**40 paths, and download
    hung at "no such file" (killed after 300 s)."""
    monkeypatch.chdir(tmp_path)
    for spelling in ("caf\u00e9", "cafe\u0301"):
        os.symlink(".", spelling)
    listed, scandir = [], os.scandir
    monkeypatch.setattr(cifar.ingest.sources.os, "scandir", lambda folder: listed.append(folder) or scandir(folder))
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="/".join(["caf\u00e9"] * 40 + ["missing.tar.gz"])), 0, tmp_path)
    assert str(refused.value).startswith("data.source = 'caf\u00e9/caf\u00e9/") and "no such file or directory;" in str(
        refused.value
    )
    assert len(listed) == 1  # one folder, reached at every depth


def test_the_search_for_another_spelling_lists_no_more_entries_than_a_folder_import(tmp_path, monkeypatch):
    """A typo in data.source beside a million files: the search kept every name, 272 MB, to
    refuse it. Past the cap, the refusal is the plain "no such file"."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cifar.ingest.archives, "MAX_MEMBERS", 5)
    Path("cafe\u0301.tar").write_bytes(b"")
    for number in range(5):
        Path(f"{number}.tar").write_bytes(b"")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="caf\u00e9.tar"), 0, tmp_path)
    assert "composed otherwise" not in str(refused.value) and "no such file or directory;" in str(refused.value)
    Path("0.tar").unlink()
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="caf\u00e9.tar"), 0, tmp_path)
    assert "composed otherwise" in str(refused.value)


def test_a_twin_spelling_that_is_a_link_to_nothing_is_not_offered(tmp_path, monkeypatch):
    """The advice named `cafe\\u0301.tar`, a dangling link, and following it gave the plain "no
    such file or directory" again."""
    monkeypatch.chdir(tmp_path)
    os.symlink("gone.tar", "cafe\u0301.tar")
    with pytest.raises(DataError) as refused:
        import_dataset(DataConfig(source="caf\u00e9.tar"), 0, tmp_path)
    assert "composed otherwise" not in str(refused.value) and "no such file or directory;" in str(refused.value)
