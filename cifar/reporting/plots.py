"""Matplotlib figures for people who open plots/images/ or read the README.

DVC renders its own charts from the CSVs; these PNGs are the static counterparts, drawn
from the same CSVs by the figures stage, so restyling them never re-runs training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt
import numpy as np

# The PNGs are outputs DVC tracks: drawn by matplotlib's own defaults, not a matplotlibrc of
# the user's (MATPLOTLIBRC, ./matplotlibrc, ~/.config/matplotlib), which made them differ
# between users, and failed figures with `text.usetex` and no LaTeX or ran it out of memory
# with `savefig.pad_inches: 60`. A stage loads matplotlib without the user's state at all
# (stages/__init__.py); this covers a notebook's import.
matplotlib.rcdefaults()
# Class names are drawn as written: a name between `$` signs was read as TeX, and `$\bogus$` failed figures.
matplotlib.rcParams["text.parse_math"] = False


def image_grid(images: np.ndarray, titles: Sequence[str], columns: int = 8, suptitle: str | None = None):
    """uint8 N x H x W x C images with a title under each."""
    rows = max(1, math.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 2.0), squeeze=False, layout="constrained")
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, title in zip(axes.flat, images, titles):
        axis.imshow(image, interpolation="nearest")
        axis.set_title(title, fontsize=8)
    if suptitle:
        figure.suptitle(suptitle, fontsize=11)
    return figure


def lr_finder_figure(
    lrs: Sequence[float],
    losses: Sequence[float],
    max_lr: float | None,
    pick: str,
    steepest_lr: float | None,
    optimizer: str,
    trained_at: float | None = None,
):
    """The range test's smoothed loss against the LR, with the chosen LR (None: the loss found no
    descent, nothing was chosen), the candidates, and train.max_lr where it is a number of the
    user's (`trained_at`: the pick alone was drawn as "chosen" beside a run at another LR)."""
    lrs, losses = np.asarray(lrs), np.asarray(losses)
    lowest = int(np.nanargmin(losses))
    figure, axis = plt.subplots(figsize=(6.5, 4))
    axis.plot(lrs, losses, color="tab:blue", label="smoothed training loss")
    axis.set_xscale("log")
    # Its own labels are TeX (`$\mathdefault{10^{-7}}$`), drawn as that source with parse_math off: plain `1e-07`.
    axis.xaxis.set_major_formatter(matplotlib.ticker.LogFormatter())
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if max_lr is not None:
        chosen = "lr_find's pick" if trained_at is not None else "chosen max_lr"
        axis.axvline(max_lr, color="tab:red", linestyle="--", label=f"{chosen} = {max_lr:.2e} ({pick})")
    if trained_at is not None:
        axis.axvline(trained_at, color="black", linestyle=":", label=f"trained at train.max_lr = {trained_at:.2e}")
    axis.scatter([lrs[lowest]], [losses[lowest]], color="tab:red", zorder=3, label="minimum loss")
    if steepest_lr is not None:
        steepest = int(np.argmin(np.abs(lrs - steepest_lr)))
        axis.scatter(
            [lrs[steepest]], [losses[steepest]], color="tab:green", marker="v", zorder=3, label="steepest descent"
        )
    axis.set_xlabel("learning rate (log scale)")
    axis.set_ylabel("loss")
    name = {"adam": "Adam", "sgd": "SGD"}[optimizer]
    verdict = "\nno descent: nothing chosen" if max_lr is None else ""
    axis.set_title(f"LR range test ({name}, cross-entropy){verdict}")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def misclassified_figure(images: np.ndarray, labels, predicted, confidence, classes: Sequence[str], misclassified: int):
    """The first misclassified images of `misclassified` in all, titled with true and predicted
    class and the model's confidence in it."""
    titles = [
        f"true: {classes[label]}\npred: {classes[guess]} ({chance:.0%})"
        for label, guess, chance in zip(labels, predicted, confidence)
    ]
    return image_grid(
        images, titles, columns=5, suptitle=f"first {len(images)} misclassified test images (of {misclassified})"
    )


def epoch_curves_figure(history, metric: str, label: str):
    """Train vs test `metric` (a history column suffix: loss or accuracy) per epoch."""
    figure, axis = plt.subplots(figsize=(6, 3.8), layout="constrained")
    for split, style in (("train", "-o"), ("test", "--s")):
        axis.plot(history["epoch"], history[f"{split}_{metric}"], style, label=split, markersize=4)
    axis.set_xlabel("epoch")
    axis.set_ylabel(label)
    axis.set_title(f"{label.capitalize()} per epoch (train vs test)")
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.grid(alpha=0.3)
    axis.legend()
    return figure


def lr_schedule_figure(step_lrs: Sequence[float], steps_per_epoch: int):
    figure, axis = plt.subplots(figsize=(6, 3.8), layout="constrained")
    steps = np.arange(1, len(step_lrs) + 1)
    axis.plot(steps, step_lrs)
    peak = int(np.argmax(step_lrs))
    axis.scatter(
        [steps[peak]],
        [step_lrs[peak]],
        color="tab:red",
        zorder=3,
        label=f"peak {step_lrs[peak]:.2e} at step {steps[peak]} (end of epoch {steps[peak] // steps_per_epoch})",
    )
    axis.set_xlabel("step")
    axis.set_ylabel("learning rate")
    axis.set_title(f"OneCycle learning rate per step (last: {step_lrs[-1]:.2e})")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return figure


# Classes up to which the confusion matrix writes each cell's count; beyond, colour alone tells.
MAX_COUNTS_DRAWN = 30


def confusion_figure(labels: np.ndarray, predicted: np.ndarray, classes: Sequence[str]):
    """Counts of actual (rows) vs predicted (columns) classes."""
    count = len(classes)
    matrix = np.bincount(labels * count + predicted, minlength=count * count).reshape(count, count)
    figure, axis = plt.subplots(figsize=(7, 6), layout="constrained")
    shown = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(count), classes, rotation=45, ha="right")
    axis.set_yticks(range(count), classes)
    # Each count is a text of its own: 1,000 classes' million took figures past 3 GB, then a crash.
    for row in range(count if count <= MAX_COUNTS_DRAWN else 0):
        for col in range(count):
            dark = matrix[row, col] > matrix.max() / 2
            axis.text(
                col, row, matrix[row, col], ha="center", va="center", fontsize=7, color="white" if dark else "black"
            )
    axis.set_xlabel("predicted class")
    axis.set_ylabel("actual class")
    axis.set_title(f"Confusion matrix ({len(labels)} test images)")
    figure.colorbar(shown, ax=axis, shrink=0.8)
    return figure


def per_class_figure(per_class):
    """Horizontal accuracy bars from a frame with `class` and `accuracy` columns."""
    figure, axis = plt.subplots(figsize=(6, 0.35 * len(per_class) + 1.2), layout="constrained")
    axis.barh(per_class["class"], per_class["accuracy"], color="tab:blue")
    axis.invert_yaxis()
    for position, value in enumerate(per_class["accuracy"]):
        axis.text(value + 0.01, position, f"{value:.1%}", va="center", fontsize=8)
    axis.set_xlim(0, 1.1)
    axis.set_xlabel("test accuracy")
    axis.set_title("Test accuracy per class")
    return figure
