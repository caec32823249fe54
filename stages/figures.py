"""figures: the PNGs under plots/images/, drawn from the CSVs and metrics the stages wrote.

A stage of its own so that figure styling is a cheap dependency: editing cifar/plots.py
re-runs this stage (and explain's Grad-CAM grids), never lr_find, train or evaluate.
"""

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cifar.atomic import save_figure
from cifar.augment import denormalize
from cifar.cli import run_stage
from cifar.config import Params, load_params
from cifar.dataset import Split, load_split
from cifar.errors import DataError, one_line, short_repr
from cifar.loader import DeviceLoader
from cifar.plots import (
    confusion_figure, epoch_curves_figure, image_grid, lr_finder_figure, lr_schedule_figure,
    misclassified_figure, per_class_figure,
)
from cifar.predictions import load_predictions
from stages import paths

log = logging.getLogger("figures")
SAMPLE_COUNT = 32


def main() -> None:
    params = load_params(paths.PARAMS)
    curve = read_table(paths.LR_FIND_CURVE, {"lr": float, "loss": float}, "lr_find")
    chosen = read_lr_find_metrics()
    save_figure(paths.LR_FINDER_IMAGE, lr_finder_figure(
        curve["lr"], curve["loss"], chosen.get("max_lr"), params.lr_find.pick, chosen.get("steepest_lr")
    ))

    history = read_table(paths.HISTORY, dict.fromkeys(HISTORY_COLUMNS, float), "train", once="epoch")
    save_figure(paths.LOSS_IMAGE, epoch_curves_figure(history, "loss", "cross-entropy loss"))
    save_figure(paths.ACCURACY_IMAGE, epoch_curves_figure(history, "accuracy", "accuracy"))
    step_lrs = read_table(paths.LR_SCHEDULE, {"lr": float}, "train")["lr"].to_numpy()
    save_figure(paths.LR_SCHEDULE_IMAGE, lr_schedule_figure(step_lrs, len(step_lrs) // len(history)))

    train, test = load_split(paths.DATA, "train"), load_split(paths.DATA, "test")
    save_figure(paths.SAMPLES_IMAGE, augmented_samples(train, params))
    per_class = read_table(paths.PER_CLASS, {"class": test.classes, "accuracy": float}, "evaluate", once="class")
    save_figure(paths.PER_CLASS_IMAGE, per_class_figure(per_class))
    confusion = read_table(paths.CONFUSION, {"actual": test.classes, "predicted": test.classes}, "evaluate")
    label_of = {name: label for label, name in enumerate(test.classes)}
    save_figure(paths.CONFUSION_IMAGE, confusion_figure(
        confusion["actual"].map(label_of).to_numpy(), confusion["predicted"].map(label_of).to_numpy(), test.classes
    ))
    predictions = load_predictions(paths.PREDICTIONS, test)
    gallery, shown = misclassified_figure(
        test.images[predictions["index"].to_numpy()], predictions["label"].to_numpy(), predictions["predicted"].to_numpy(),
        predictions["confidence"].to_numpy(), test.classes, params.evaluate.misclassified,
    )
    save_figure(paths.MISCLASSIFIED_IMAGE, gallery)
    if shown < params.evaluate.misclassified:
        log.info("only %d misclassified test images, fewer than evaluate.misclassified = %d", shown, params.evaluate.misclassified)


HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy")


def read_table(path: str, columns: dict, stage: str, once: str | None = None) -> pd.DataFrame:
    """A CSV another stage wrote, with at least one row and, in each of `columns`, finite
    numbers (float) or names from a tuple, each value of column `once` in one row only; else
    a one-line DataError, not a traceback or a chart of text, NaN or a bar drawn twice."""
    fix = f"re-create it with `dvc repro {stage}`"
    try:
        table = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: unreadable ({one_line(error)}); {fix}") from None
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(missing)}; {fix}")
    if table.empty:
        raise DataError(f"{path}: no rows; {fix}")
    for column, allowed in columns.items():
        if allowed is float:
            values = pd.to_numeric(table[column], errors="coerce")
            bad = ~np.isfinite(values.to_numpy(dtype=float))
            what = "not a finite number"
        else:
            bad = ~table[column].isin(allowed).to_numpy()
            what = "not one of the test split's classes"
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: column {column} holds {shown(table[column].iloc[row])} in row {row}, {what}; {fix}")
    repeated = table[once].duplicated().to_numpy() if once else np.zeros(0, bool)
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        raise DataError(f"{path}: column {once} holds {shown(table[once].iloc[row])} again in row {row}; {fix}")
    return table


def shown(value) -> str:
    """A table's value as a message shows it: inf, not np.float64(inf)."""
    return short_repr(value.item() if isinstance(value, np.generic) else value)


def read_lr_find_metrics() -> dict:
    path = Path(paths.LR_FIND_METRICS)
    fix = "re-create it with `dvc repro lr_find`"
    try:
        chosen = json.loads(path.read_text())
        # Without a descent lr_find chose nothing, and train ran at its fixed train.max_lr.
        max_lr = chosen["max_lr"] if chosen.get("descent", True) else None
        steepest = chosen.get("steepest_lr")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:  # RecursionError: deep nesting
        raise DataError(f"{path}: no max_lr to read ({one_line(error)}); {fix}") from None
    for name, value in (("max_lr", max_lr), ("steepest_lr", steepest)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf):
            raise DataError(f"{path}: {name} = {short_repr(value)} is not a learning rate; {fix}")
    return chosen


def augmented_samples(train: Split, params: Params):
    """What the network sees: a seeded random draw of training images after augmentation,
    so the grid does not depend on the order in which the source listed its images."""
    chosen = np.random.default_rng(params.seed).choice(len(train), size=min(SAMPLE_COUNT, len(train)), replace=False)
    sample = Split(train.images[chosen], train.labels[chosen], train.classes)
    loader = DeviceLoader(sample, SAMPLE_COUNT, torch.device("cpu"), augmentation=params.augment, seed=params.seed)
    images, labels = next(iter(loader))
    return image_grid(
        denormalize(images).numpy(),
        [train.classes[label] for label in labels.tolist()],
        suptitle=f"augmented training images (crop pad {params.augment.crop_padding}, "
                 f"flip {params.augment.flip}, cutout {params.augment.cutout})",
    )


if __name__ == "__main__":
    run_stage(main, paths.output_folders())
