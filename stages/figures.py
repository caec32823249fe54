"""figures: the PNGs under plots/images/, drawn from the CSVs and metrics the stages wrote.

A stage of its own so that figure styling is a cheap dependency: editing cifar/plots.py
re-runs this stage (and explain's Grad-CAM grids), never lr_find, train or evaluate.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cifar.atomic import save_figure
from cifar.augment import denormalize
from cifar.cli import run_stage
from cifar.config import Params, load_params
from cifar.dataset import Split, load_split
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
    curve = pd.read_csv(paths.LR_FIND_CURVE)
    chosen = json.loads(Path(paths.LR_FIND_METRICS).read_text())
    save_figure(paths.LR_FINDER_IMAGE, lr_finder_figure(
        curve["lr"], curve["loss"], chosen.get("max_lr"), params.lr_find.pick, chosen.get("steepest_lr")
    ))

    history = pd.read_csv(paths.HISTORY)
    save_figure(paths.LOSS_IMAGE, epoch_curves_figure(history, "loss", "cross-entropy loss"))
    save_figure(paths.ACCURACY_IMAGE, epoch_curves_figure(history, "accuracy", "accuracy"))
    step_lrs = pd.read_csv(paths.LR_SCHEDULE)["lr"].to_numpy()
    save_figure(paths.LR_SCHEDULE_IMAGE, lr_schedule_figure(step_lrs, len(step_lrs) // len(history)))

    train, test = load_split(paths.DATA, "train"), load_split(paths.DATA, "test")
    save_figure(paths.SAMPLES_IMAGE, augmented_samples(train, params))
    per_class = pd.read_csv(paths.PER_CLASS)
    save_figure(paths.PER_CLASS_IMAGE, per_class_figure(per_class))
    confusion = pd.read_csv(paths.CONFUSION)
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
