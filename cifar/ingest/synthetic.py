"""A generated, learnable stand-in for CIFAR-10, for runs without the real data."""

from __future__ import annotations

import numpy as np

from cifar.config import IMAGE_SIZE
from cifar.dataset import Split, per_class_quota

# Ten colours far apart in RGB, one per synthetic class.
_SYNTHETIC_COLOURS = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [128, 128, 0],
        [255, 255, 255],
    ],
    dtype=np.float32,
)


def synthetic_split(size: int, seed: int) -> Split:
    """A learnable 10-class set: a class-coloured, class-striped disc on a noisy background.

    The object sits at a random position so crops, flips and Cutout leave it recognisable,
    and Grad-CAM has a place to look.
    """
    rng = np.random.default_rng(seed)
    num_classes = len(_SYNTHETIC_COLOURS)
    labels = np.concatenate([np.full(q, c) for c, q in enumerate(per_class_quota(size, num_classes))])
    rng.shuffle(labels)
    grid = np.arange(IMAGE_SIZE, dtype=np.float32)
    rows, cols = grid[None, :, None], grid[None, None, :]
    centre_row, centre_col = (rng.uniform(9, IMAGE_SIZE - 9, size=(2, size, 1, 1))).astype(np.float32)
    radius = rng.uniform(6, 9, size=(size, 1, 1)).astype(np.float32)
    disc = ((rows - centre_row) ** 2 + (cols - centre_col) ** 2) <= radius**2
    angle = (labels * np.pi / num_classes)[:, None, None]
    stripes = 0.75 + 0.25 * np.sign(np.sin((rows * np.sin(angle) + cols * np.cos(angle)) * 0.9))
    background = rng.uniform(0, 110, size=(size, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    foreground = _SYNTHETIC_COLOURS[labels][:, None, None, :] * stripes[..., None]
    images = np.where(disc[..., None], foreground, background)
    images += rng.normal(0, 12, size=images.shape).astype(np.float32)
    return Split(
        images=np.clip(images, 0, 255).astype(np.uint8),
        labels=labels.astype(np.int64),
        classes=tuple(f"class_{index}" for index in range(num_classes)),
    )
