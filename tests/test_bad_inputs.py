"""Adversarial inputs, each built here on the fly (small, never from the network).

Every one must stop the pipeline with one line that names the problem and the fix, must not
hang, and must leave nothing behind: no scratch folder in the download cache and no file in
the system temp folder, which every test here points at an empty folder of its own.
"""

import dataclasses
import errno
import gzip
import os
import shutil
import struct
import tarfile
import tempfile
import threading
import typing
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cifar import archives
from cifar.config import DataConfig, Params, load_params, parse_params
from cifar.dataset import save_dataset
from cifar.errors import ConfigError, DataError, OutputError
from cifar.sources import import_dataset, synthetic_split
from generated import make_class_tree
from pipeline_repo import default_params, make_pipeline_repo, merge, stage
from stages import paths

SCRATCH = ".extract.partial-"


@pytest.fixture(autouse=True)
def system_temp(tmp_path, monkeypatch):
    """An empty system temp folder, for this process and the stages it starts; it must stay empty."""
    folder = tmp_path / "system-temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    yield folder
    assert os.listdir(folder) == [], "files were left in the system temp folder"


@pytest.fixture
def tree(tmp_path):
    return make_class_tree(tmp_path / "export", {"train": 3, "test": 2})


@pytest.fixture
def downloads(tmp_path):
    folder = tmp_path / "downloads"
    yield folder
    assert not list(folder.glob(f"{SCRATCH}*")), "an extraction scratch folder was left behind"


def refused(kind, function, *args) -> str:
    """The message of the `kind` error that function(*args) raises; it must be one line."""
    with pytest.raises(kind) as caught:
        function(*args)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def import_from(source, downloads) -> dict:
    return import_dataset(DataConfig(source=str(source)), 0, downloads)


def archive_of(tree: Path, archive_format: str) -> Path:
    return Path(shutil.make_archive(str(tree.parent / "export"), archive_format, root_dir=tree.parent, base_dir=tree.name))


def flip(path: Path, at: int, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    data[at : at + count] = bytes(byte ^ 0x5A for byte in data[at : at + count])
    path.write_bytes(bytes(data))


def symlink_member(name: str, target: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = tarfile.SYMTYPE, target
    return member


def no_space_left(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# 1. Archives are checked end to end, within size limits, before any image is trusted.


@pytest.mark.parametrize("archive_format", ["gztar", "xztar"])
def test_a_corrupted_compressed_archive_is_refused(tree, downloads, archive_format):
    """64 bytes changed at 98% of the stream. tarfile took the garbled header there for the
    archive's end: the .tar.gz imported the members before it with exit 0, the .tar.xz
    crashed with LZMAError."""
    archive = archive_of(tree, archive_format)
    flip(archive, at=archive.stat().st_size * 98 // 100)
    message = refused(DataError, import_from, archive, downloads)
    assert message.startswith(f"{archive}: the archive is corrupt or truncated (")
    assert message.endswith("; download or export it again")


def test_a_damaged_header_in_a_plain_tar_is_not_taken_for_its_end(tree, downloads):
    archive = archive_of(tree, "tar")
    with tarfile.open(archive) as bundle:
        last = bundle.getmembers()[-1]
    flip(archive, at=last.offset + 148, count=8)  # the header's checksum field
    message = refused(DataError, import_from, archive, downloads)
    assert f"the archive is corrupt or truncated (a damaged header or stray data from byte {last.offset} of the tar on)" in message


def test_a_corrupted_zip_member_is_refused(tmp_path, downloads):
    archive = tmp_path / "export.zip"
    name = "export/train/airplane/0000.png"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr(name, b"compressible " * 1000)
    data = bytearray(archive.read_bytes())
    data[30 + len(name)] = 0xFF  # the deflate stream's first block, now of an invalid type: zlib.error
    archive.write_bytes(bytes(data))
    message = refused(DataError, import_from, archive, downloads)
    assert "the archive is corrupt or truncated (Error -3 while decompressing data: invalid block type)" in message


@pytest.mark.parametrize(
    ("member", "named"),
    [
        (symlink_member("export/train/cat/0000.png", "/etc/passwd"), "'export/train/cat/0000.png' (a symbolic link)"),
        (tarfile.TarInfo("../escaped.png"), "'../escaped.png' (its path leads outside the archive's folder)"),
    ],
    ids=["symlink", "dot-dot"],
)
def test_unsafe_tar_members_are_named(tmp_path, downloads, member, named):
    archive = tmp_path / "export.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.addfile(member)
    assert f"unsafe member {named}" in refused(DataError, import_from, archive, downloads)


def test_a_zip_member_outside_the_archive_folder_is_refused(tmp_path, downloads):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../escaped.png", b"x")  # zipfile would quietly unpack it as escaped.png
    assert "unsafe member '../escaped.png'" in refused(DataError, import_from, archive, downloads)


def test_an_archive_that_unpacks_beyond_the_size_cap_is_refused(tree, downloads, monkeypatch):
    monkeypatch.setattr(archives, "MAX_UNPACKED_BYTES", 100_000)  # the tree's tar is about 180 kB
    message = refused(DataError, import_from, archive_of(tree, "gztar"), downloads)
    assert "unpacks to more than" in message and "GiB, the most it unpacks; if it is genuine, extract it yourself" in message


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path, downloads):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("export/train/airplane/0000.png", bytes(80 << 20))
    assert archive.stat().st_size < 1 << 20
    message = refused(DataError, import_from, archive, downloads)
    assert "unpacks to more than 50 times its size, as a decompression bomb does" in message


def test_zeros_after_the_end_of_a_tar_count_towards_the_cap(tree, tmp_path, downloads):
    """A bomb can hide after the end-of-archive marker, where only the read to the end goes."""
    archive = tmp_path / "padded.tar.gz"
    with gzip.open(archive, "wb") as stream:
        stream.write(archive_of(tree, "tar").read_bytes() + bytes(80 << 20))
    assert "unpacks to more than 50 times its size" in refused(DataError, import_from, archive, downloads)


def test_an_archive_of_class_folders_is_read_in_memory_and_writes_nothing(tree, downloads):
    splits = import_from(archive_of(tree, "xztar"), downloads)
    assert len(splits["train"]) and not (downloads.exists() and list(downloads.iterdir()))


# 2. Non-finite numbers.


def float_keys(cls=Params, prefix=""):
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            yield from float_keys(hint, f"{prefix}{field.name}.")
        elif float in (hint, *typing.get_args(hint)):
            yield prefix + field.name


def params_file(tmp_path, text: str | bytes) -> Path:
    path = tmp_path / "params.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def nested_yaml(dotted_key: str, literal: str) -> str:
    *parents, leaf = dotted_key.split(".")
    lines = [f"{'  ' * depth}{name}:" for depth, name in enumerate(parents)]
    return "\n".join([*lines, f"{'  ' * len(parents)}{leaf}: {literal}"]) + "\n"


@pytest.mark.parametrize("literal", [".inf", "-.inf", ".nan", "1" + "0" * 400])
@pytest.mark.parametrize("key", list(float_keys()))
def test_every_float_param_refuses_non_finite_values(tmp_path, key, literal):
    message = refused(ConfigError, load_params, params_file(tmp_path, nested_yaml(key, literal)))
    assert f"{key} = " in message and "is not allowed; expected a finite number (not inf or nan)" in message


# 3. 16-bit images.


def test_a_16_bit_grey_png_is_scaled_to_8_bits(tree, tmp_path):
    grey = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(grey).save(tree / "train" / "airplane" / "0000.png")
    first = import_from(tree, tmp_path)["train"].images[0]  # round-robin: airplane's first image
    expected = np.rint(grey / 257).astype(np.uint8)  # 65535 / 255 = 257
    assert all(np.array_equal(first[..., channel], expected) for channel in range(3))


# 4. Hangs: alias bombs, huge values in messages, named pipes.


def alias_bomb(levels: int = 6) -> str:
    """A list whose last item expands to 10**levels strings; its repr is megabytes long."""
    items = ["&l0 [" + ", ".join(["lol"] * 10) + "]"]
    items += [f"&l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]" for level in range(1, levels)]
    return "[" + ", ".join(items) + "]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"model: {alias_bomb()}\n", "line 1: anchors and aliases (&name, *name) are not supported; write each value out"),
        (f"explain:\n  layers: {alias_bomb()}\n", "line 2: anchors and aliases (&name, *name) are not supported"),
        ("explain:\n  layers: [" + ", ".join(["1"] * 5000) + "]\n", "explain.layers = [1, 1, 1, 1, 1, 1, ...] is not allowed"),
        ("model:\n  name: " + "y" * 5000 + "\n", "model.name = 'yyyyyyyyyyyyyy"),
    ],
    ids=["alias-bomb-model", "alias-bomb-layers", "long-list", "long-string"],
)
def test_huge_values_give_a_short_message(tmp_path, text, message):
    shown = refused(ConfigError, load_params, params_file(tmp_path, text))
    assert message in shown and len(shown) < 300


@contextmanager
def released_if_opened(fifo: Path):
    """Whoever opens the FIFO to read it blocks; this opens its other end every half second, so
    a regression makes the test fail (the reader sees an empty file) instead of hang."""
    done = threading.Event()

    def release():
        while not done.wait(0.5):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: nobody is reading
                pass

    helper = threading.Thread(target=release, daemon=True)
    helper.start()
    try:
        yield
    finally:
        done.set()
        helper.join()


def test_a_named_pipe_among_the_images_is_refused_unopened(tree, tmp_path):
    fifo = tree / "train" / "bird" / "x.png"
    os.mkfifo(fifo)
    with released_if_opened(fifo):
        message = refused(DataError, import_from, tree, tmp_path)
    assert message.startswith(f"{fifo}: a named pipe (FIFO), not an image file; replace it with a 32x32 PNG")


# 5. What used to be raw tracebacks.


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_outside_32_bits_is_a_config_error(seed):
    raw = merge(default_params(), {"seed": seed})
    assert f"seed = {seed} is not allowed; expected an integer from 0 to 4294967295" in refused(ConfigError, parse_params, raw)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"seed: 0\nmodel:\n  name: caf\xe9\n", "params.yaml: not UTF-8 text (byte 0xe9 at line 3); save it as UTF-8"),
        ("explain:\n  layers: " + "[" * 10_000 + "]" * 10_000 + "\n", "params.yaml: line 2: nested more than 20 levels deep"),
        ("seed: 1" + "0" * 5000 + "\n", "params.yaml: line 1: the integer '1000"),
    ],
    ids=["latin-1", "deep-nesting", "5000-digit-integer"],
)
def test_unreadable_params_files_are_one_line(tmp_path, text, message):
    assert message in refused(ConfigError, load_params, params_file(tmp_path, text))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/dev/zero", "data.source = '/dev/zero' is a device, not an archive or a folder; expected the official"),
        ("/dev/null", "data.source = '/dev/null' is a device, not an archive or a folder"),
        ("/proc", "data.source = '/proc': no train/ and test/ folders found"),
        ("~nosuchuser/x", "data.source = '~nosuchuser/x': there is no user 'nosuchuser' to expand ~nosuchuser; write the path out"),
    ],
)
def test_special_sources_are_refused(tmp_path, source, message):
    assert message in refused(DataError, import_from, source, tmp_path)


@pytest.mark.parametrize("name", ["cifar.tar.gz", "cifar"])
def test_a_named_pipe_as_the_source_is_refused_unopened(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    with released_if_opened(fifo):
        message = refused(DataError, import_from, fifo, tmp_path)
    assert f"data.source = '{fifo}' is a named pipe (FIFO), not an archive or a folder" in message


def zip_with_central_directory_change(path: Path, offset: int, value: bytes) -> Path:
    """A one-member zip with `value` written into its central directory entry at `offset`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("export/train/airplane/0000.png", b"pixels")
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")
    data[entry + offset : entry + offset + len(value)] = value
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (8, b"\x01\x00", "member 'export/train/airplane/0000.png' is encrypted; re-create the zip without a password"),
        (10, b"\x09\x00", "member 'export/train/airplane/0000.png' uses compression method 'deflate64', which Python cannot read"),
    ],
    ids=["encrypted", "deflate64"],
)
def test_zips_python_cannot_read_are_named(tmp_path, downloads, offset, value, message):
    archive = zip_with_central_directory_change(tmp_path / "export.zip", offset, value)
    assert message in refused(DataError, import_from, archive, downloads)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height and holds no pixels: decoding it fails, so a size
    error (and not a decoding one) shows that the size was checked before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    ("side", "message"),
    [
        (12_000, "0001.png: image is 12000x12000, expected 32x32; replace it with a 32x32 PNG or JPEG file"),
        (20_000, "0001.png: image is far larger than 32x32 (Image size (400000000 pixels) exceeds limit"),
    ],
)
def test_huge_images_are_refused_before_decoding(tree, tmp_path, side, message):
    png_header_only(tree / "train" / "bird" / "0001.png", side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would be a second stderr line
        assert message in refused(DataError, import_from, tree, tmp_path)


def test_disk_full_while_saving_names_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", no_space_left)
    folder = tmp_path / "data" / "cifar10"
    message = refused(OutputError, save_dataset, {"train": synthetic_split(20, 0)}, folder)
    assert message == f"disk full while writing {folder}; free space and re-run"
    assert os.listdir(folder.parent) == []


# 6. Limits beyond what CIFAR-10 holds.


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("data.train_limit", 2_000_000, "null (all) or an integer from 10 to 50000, the train split's size"),
        ("data.test_limit", 10_001, "null (all) or an integer from 10 to 10000, the test split's size"),
        ("train.batch_size", 1_000_000_000, "an integer from 1 to 50000, the train split's size"),
    ],
)
def test_limits_beyond_the_splits_are_refused(key, value, allowed):
    section, leaf = key.split(".")
    raw = merge(default_params(), {section: {leaf: value}})
    assert f"{key} = {value} is not allowed; expected {allowed}" in refused(ConfigError, parse_params, raw)
    raw[section][leaf] = 50_000 if leaf != "test_limit" else 10_000
    parse_params(raw)


# End to end: the download stage as DVC runs it. The source is synthetic unless a test says
# otherwise, so that a wrongly accepted value never reaches for the network.
SMALL_DATA = {"data": {"source": "synthetic", "train_limit": 100, "test_limit": 100}}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return make_pipeline_repo(tmp_path_factory.mktemp("pipeline"), SMALL_DATA)


def set_params(root: Path, changes: dict) -> None:
    params = merge(merge(default_params(), SMALL_DATA), changes)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def assert_refused_with_one_line(result, root: Path, message: str) -> None:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1 and errors[0] == result.stderr.splitlines()[-1] and message in errors[0], result.stderr
    assert not (root / "data" / "cifar10").exists()
    assert not list((root / "data" / "downloads").glob(f"{SCRATCH}*"))


def test_stage_refuses_a_corrupted_archive(pipeline, tree):
    archive = archive_of(tree, "xztar")
    flip(archive, at=archive.stat().st_size * 98 // 100)
    set_params(pipeline, {"data": {"source": str(archive)}})
    result = stage(pipeline, "download", check=False)
    assert_refused_with_one_line(result, pipeline, f"error: {archive}: the archive is corrupt or truncated (")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seed": 2**32}, "error: params.yaml: seed = 4294967296 is not allowed"),
        ({"lr_find": {"end_lr": float("inf")}}, "error: params.yaml: lr_find.end_lr = inf is not allowed"),
        ({"data": {"source": "/dev/zero"}}, "error: data.source = '/dev/zero' is a device"),
    ],
    ids=["seed", "inf", "dev-zero"],
)
def test_stage_exits_2_with_one_line(pipeline, changes, message):
    set_params(pipeline, changes)
    result = stage(pipeline, "download", check=False)
    assert_refused_with_one_line(result, pipeline, message)
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_scratch_a_killed_import_left_in_the_download_cache_is_removed_by_the_next_run(pipeline, tree, system_temp):
    """Only the official batches are written to scratch (torchvision reads them from disk);
    a kill there leaves the folder, which the next download run removes."""
    set_params(pipeline, {"data": {"source": str(archive_of(tree, "xztar")), "train_limit": None, "test_limit": None}})
    left = pipeline / "data" / "downloads" / f"{SCRATCH}999999999-killed"  # no process has that id
    (left / "cifar-10-batches-py").mkdir(parents=True)
    result = stage(pipeline, "download")
    assert f"removed {paths.DOWNLOAD_CACHE}/{left.name}, left by an interrupted write" in result.stderr
    assert not left.exists() and (pipeline / "data" / "cifar10" / "train.npz").is_file()
    assert os.listdir(system_temp) == []
    shutil.rmtree(pipeline / "data" / "cifar10")
