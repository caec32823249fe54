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


# Images generated at once: about 40 MB of float64 working arrays (the stages' bound on what
# download adds beyond the images, docs/reliability.md).
_IMAGES_AT_ONCE = 1024


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
    # Every background is drawn before any noise. A second generator, started where the
    # backgrounds' draws (one 64-bit word a value) end, draws the noise chunk by chunk beside
    # them: the same images as at once, where 60,000 at once took 5.2 GB.
    noise_bits = np.random.PCG64()
    noise_bits.state = rng.bit_generator.state
    noise_bits.advance(size * IMAGE_SIZE * IMAGE_SIZE * 3)
    noise = np.random.Generator(noise_bits)
    images = np.empty((size, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for start in range(0, size, _IMAGES_AT_ONCE):
        part = slice(start, min(start + _IMAGES_AT_ONCE, size))
        disc = ((rows - centre_row[part]) ** 2 + (cols - centre_col[part]) ** 2) <= radius[part] ** 2
        angle = (labels[part] * np.pi / num_classes)[:, None, None]
        stripes = 0.75 + 0.25 * np.sign(np.sin((rows * np.sin(angle) + cols * np.cos(angle)) * 0.9))
        background = rng.uniform(0, 110, size=(len(disc), IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
        foreground = _SYNTHETIC_COLOURS[labels[part]][:, None, None, :] * stripes[..., None]
        drawn = np.where(disc[..., None], foreground, background)
        drawn += noise.normal(0, 12, size=drawn.shape).astype(np.float32)
        images[part] = np.clip(drawn, 0, 255).astype(np.uint8)
    return Split(
        images=images,
        labels=labels.astype(np.int64),
        classes=tuple(f"class_{index}" for index in range(num_classes)),
    )
