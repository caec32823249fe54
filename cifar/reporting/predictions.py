"""Reading data/predictions.csv (one row per test image, as the evaluate stage writes it),
checked against the test split it must describe: every image once, with its label; and
against the SHA-256 evaluate wrote beside it."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cifar.atomic import sha256sum_lines
from cifar.dataset import Split
from cifar.errors import DataError, one_line
from cifar.reading import read_artifact
from cifar.training.augment import normalize

# A row is an index, two class ids and a float: under 40 characters; a file beyond this many
# bytes per test image is not one evaluate wrote, and is refused before it is parsed.
MAX_BYTES_PER_ROW = 128
# A digest file holds one line of `sha256sum`: 64 hexadecimal digits, two spaces, a file name.
MAX_DIGEST_BYTES = 1024


def first_misclassified(predictions: pd.DataFrame, count: int) -> pd.DataFrame:
    """The first `count` misclassified rows in test-split order: the images figures' gallery
    draws (and checks against the model) and explain explains, the same ones for the same count."""
    return predictions[predictions["label"] != predictions["predicted"]].head(count)


def load_predictions(path: str | Path, digest_path: str | Path, test: Split, data: str | Path) -> pd.DataFrame:
    """predictions.csv at `path`, of the test split `test` that the folder `data` holds, as
    evaluate wrote it with its digests in `digest_path`."""
    fix = "re-create it with `dvc repro evaluate`"
    try:
        contents = read_artifact(
            path,
            MAX_BYTES_PER_ROW * (len(test) + 1),
            fix,
            too_large=f"far more than {len(test)} rows of predictions take",
        )
        frame = pd.read_csv(io.BytesIO(contents))
    except FileNotFoundError:
        raise DataError(f"{path}: not found; {fix}") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: unreadable ({one_line(error)}); {fix}") from None
    # Each id column and how many ids exist.
    ids = {
        "index": (len(test), "test images"),
        "label": (len(test.classes), "classes"),
        "predicted": (len(test.classes), "classes"),
    }
    missing = [column for column in (*ids, "confidence") if column not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(missing)}; {fix}")
    # Counted before the types: a header alone has columns of no numeric type.
    if len(frame) != len(test):
        raise DataError(f"{path}: {len(frame)} rows for a test split of {len(test)} images; {fix}")
    if not pd.api.types.is_numeric_dtype(frame["confidence"]):
        raise DataError(f"{path}: column confidence holds non-numbers; {fix}")
    # A NaN or a confidence of 750% would be drawn in the galleries' titles as if it were real.
    outside = ~frame["confidence"].between(0, 1)
    if outside.any():
        raise DataError(
            f"{path}: column confidence holds {frame['confidence'][outside].iloc[0]} in row "
            f"{int(np.flatnonzero(outside)[0])}, not a probability from 0 to 1; {fix}"
        )
    for column, (count, what) in ids.items():
        values = frame[column]
        if not pd.api.types.is_integer_dtype(values):
            raise DataError(f"{path}: column {column} holds non-integers; {fix}")
        if values.min() < 0 or values.max() >= count:
            raise DataError(
                f"{path}: column {column} holds {values.min()}..{values.max()}, beyond the {count} {what} "
                f"(0..{count - 1}); {fix}"
            )
    index = frame["index"].to_numpy()
    rows_per_image = np.bincount(index, minlength=len(test))
    if (rows_per_image != 1).any():
        image = int(np.flatnonzero(rows_per_image != 1)[0])
        raise DataError(f"{path}: test image {image} has {rows_per_image[image]} rows, not one; {fix}")
    wrong_label = np.flatnonzero(frame["label"].to_numpy() != test.labels[index])
    if len(wrong_label):
        row = int(wrong_label[0])
        raise DataError(
            f"{path}: the row of test image {index[row]} gives it label {frame['label'].iloc[row]}, "
            f"but the test split says {test.labels[index[row]]}; {fix}"
        )
    # Last, so that a damaged file is told by what is wrong in it.
    check_digests(contents, path, digest_path, test, data, fix)
    # In test-split order, as evaluate writes it: with its rows reversed, the gallery and explain
    # showed the last misclassified images as the first, and figures checked other rows.
    return frame.sort_values("index", kind="stable", ignore_index=True)


def check_digests(
    contents: bytes, path: str | Path, digest_path: str | Path, test: Split, data: str | Path, fix: str
) -> None:
    """`contents`, read from `path`, is what evaluate wrote, from the test split `data` holds
    now (`test`, as loaded): `digest_path` holds the lines `sha256sum` writes for both. Misclassified images
    marked correct past the rows the model is asked about, with tables and metrics edited to
    match, were drawn as a better model's; and predictions of a test split re-imported since,
    alike but for images no model check looked at, as the new split's."""
    try:
        record = read_artifact(digest_path, MAX_DIGEST_BYTES, fix)
    except FileNotFoundError:
        raise DataError(f"{digest_path}: not found; {fix}") from None
    folder, split = Path(digest_path).parent, Path(data) / "test.npz"
    made_of = {str(path): hashlib.sha256(contents).hexdigest(), str(split): test.sha256}
    if record == sha256sum_lines(made_of, folder).encode():
        return
    named = [os.path.relpath(file, folder) for file in made_of]
    recorded = dict(
        (found[2].decode(errors="replace"), found[1].decode())
        for found in re.finditer(rb"([0-9a-f]{64})  ([^\n]+)\n", record)
    )
    if sha256sum_lines({name: recorded.get(name, "") for name in named}, ".").encode() != record:
        raise DataError(f"{digest_path}: not the lines `sha256sum {' '.join(named)}` writes; {fix}")
    if recorded[named[0]] != made_of[str(path)]:
        raise DataError(
            f"{path}: not the predictions evaluate wrote (its SHA-256 is not the one {digest_path} records); {fix}"
        )
    raise DataError(f"{path}: evaluate made it from another test split than {split} holds now ({digest_path}); {fix}")


# How much likelier the model may find its own pick than predictions.csv's: evaluate runs in
# bf16 on a GPU, explain and figures in float32, so near-ties may fall either way.
TIE_TOLERANCE = 0.05


def check_the_models_predictions(
    model: nn.Module, chosen: pd.DataFrame, test: Split, predictions_path: str, model_path: str
) -> np.ndarray:
    """Refuse `chosen` rows of predictions.csv whose prediction the model does not make: a
    stale or edited file drew galleries of a 'bird' the model predicts as an automobile.
    Returns the model's class probabilities of the chosen rows' images."""
    probabilities = class_probabilities(model, test.images[chosen["index"].to_numpy()])
    stated, own = chosen["predicted"].to_numpy(), probabilities.argmax(1)
    rows = np.arange(len(chosen))
    off = np.flatnonzero(probabilities[rows, own] - probabilities[rows, stated] > TIE_TOLERANCE)
    if len(off):
        row, names = off[0], test.classes
        raise DataError(
            f"{predictions_path}: test image {chosen['index'].iloc[row]} is predicted {names[stated[row]]}, but "
            f"{model_path} predicts {names[own[row]]} (probability {probabilities[row, own[row]]:.3f} against "
            f"{probabilities[row, stated[row]]:.3f}); re-create it with `dvc repro evaluate`"
        )
    return probabilities


@torch.no_grad()
def class_probabilities(model: nn.Module, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """N x classes softmax probabilities of the uint8 N x H x W x C `images`, in float32."""
    model.eval()
    batches = [model(batch) for _, batch in normalized_batches(images, next(model.parameters()).device, batch_size)]
    return torch.cat(batches).float().softmax(1).cpu().numpy() if batches else np.zeros((0, 0), np.float32)


def normalized_batches(images: np.ndarray, device: torch.device, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """The uint8 N x H x W x C `images` normalised as the loaders do, on `device`, in batches
    of `batch_size`, each with the index of its first image."""
    for start in range(0, len(images), batch_size):
        yield start, normalize(torch.from_numpy(images[start : start + batch_size]).to(device)).contiguous()
