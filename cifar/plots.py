"""Matplotlib figures for people who open plots/images/ or read the README.

DVC renders its own charts from the CSVs; these PNGs are the static counterparts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from cifar.lr_find import RangeTest


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


def lr_finder_figure(test: RangeTest):
    figure, axis = plt.subplots(figsize=(6.5, 4))
    axis.plot(test.lrs, test.losses, color="tab:blue", label="smoothed training loss")
    axis.set_xscale("log")
    axis.axvline(test.max_lr, color="tab:red", linestyle="--", label=f"chosen max_lr = {test.max_lr:.2e} ({test.pick})")
    axis.scatter([test.lr_at_min_loss], [test.min_loss], color="tab:red", zorder=3, label="minimum loss")
    if test.steepest_lr is not None:
        steepest_loss = test.losses[test.lrs.index(test.steepest_lr)]
        axis.scatter([test.steepest_lr], [steepest_loss], color="tab:green", marker="v", zorder=3, label="steepest descent")
    axis.set_xlabel("learning rate (log scale)")
    axis.set_ylabel("loss")
    axis.set_title("LR range test (Adam, cross-entropy)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def misclassified_figure(images: np.ndarray, labels, predicted, confidence, classes: Sequence[str], limit: int):
    """The first `limit` misclassified images, titled with true and predicted class.

    Returns the figure and how many images it shows (fewer than limit if fewer are wrong).
    """
    wrong = np.flatnonzero(np.asarray(predicted) != np.asarray(labels))
    shown = wrong[:limit]
    titles = [f"true: {classes[labels[i]]}\npred: {classes[predicted[i]]} ({confidence[i]:.0%})" for i in shown]
    figure = image_grid(
        images[shown], titles, columns=5,
        suptitle=f"first {len(shown)} misclassified test images (of {len(wrong)})",
    )
    return figure, len(shown)
