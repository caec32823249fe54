"""Generated data for tests: class-folder trees of PNGs, random uint8 splits, torch files."""

import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cifar.config import Params
from cifar.dataset import Split
from cifar.ingest.sources import CIFAR10_CLASSES
from cifar.models import contents_sha256
from cifar.training.recipe import Recipe

CPU = torch.device("cpu")


def cpu_recipe(**sections) -> Recipe:
    """The recipe of the default params with the given sections replaced, in fp32 on the CPU."""
    return Recipe(Params(**sections), CPU, "fp32")


def make_class_tree(root: Path, per_class: dict[str, int], suffix=".png", size=32) -> Path:
    """train/<class>/*.png and test/<class>/*.png with a colour that encodes the class."""
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label, name in enumerate(CIFAR10_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                pixels[0, 0] = (label * 25, index, 7)
                Image.fromarray(pixels).save(folder / f"{index:04d}{suffix}")
    return root


def random_split(size, seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (size, 32, 32, 3), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (size,), generator=generator)
    return Split(images.numpy(), labels.numpy(), tuple(str(i) for i in range(10)))


def deflate_records(source: Path, target: Path) -> None:
    """The torch.save file at source, its records compressed, as torch.load reads but
    torch.save never writes: a record of zeros shrinks a thousandfold."""
    with zipfile.ZipFile(source) as stored, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as compressed:
        for record in stored.infolist():
            with stored.open(record) as reading, compressed.open(record.filename, "w", force_zip64=True) as writing:
                shutil.copyfileobj(reading, writing, 1 << 24)


def save_as_train_would(payload: dict, path: Path) -> None:
    """A model file as changed, with the digest of its contents to match: another model."""
    torch.save(payload | {"sha256": contents_sha256(payload)}, path)
