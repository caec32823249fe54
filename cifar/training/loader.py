"""Batches from a split held whole on the device as uint8.

CIFAR-10 is 150 MB as uint8, so it fits on any GPU; indexing a resident tensor and
augmenting whole batches there replaces DataLoader workers and host-to-device copies.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from cifar.config import AugmentConfig
from cifar.dataset import Split
from cifar.errors import ConfigError
from cifar.training.augment import augment, normalize

# Evaluation holds no activations for backward, so it affords much larger batches.
EVAL_BATCH_SIZE = 1024


class DeviceLoader:
    """Batches of (normalised images, labels) on the device.

    A shuffled (training) loader yields full batches only: the images left over after the
    last full batch (336 of 50,000 at batch 512) are skipped that epoch, a different few
    each epoch. Every step then has the same shape, which torch.compile and CUDA graphs
    need, and an epoch is exactly len(loader) OneCycle steps. Evaluation keeps every image.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        device: torch.device,
        *,
        augmentation: AugmentConfig | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ):
        if shuffle and batch_size > len(split):
            raise ConfigError(
                f"train.batch_size = {batch_size} is more than the {len(split)} training images, so an epoch "
                f"would have no full batch; lower train.batch_size or raise data.train_limit"
            )
        self.images = torch.from_numpy(split.images).to(device)
        self.labels = torch.from_numpy(split.labels).to(device)
        self.batch_size = batch_size
        self.augmentation = augmentation
        self.shuffle = shuffle
        self.generator = torch.Generator(device=device).manual_seed(seed)
        # channels_last helps cuDNN's tensor-core kernels; the CPU keeps the classic layout.
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def __len__(self) -> int:
        if self.shuffle:
            return len(self.labels) // self.batch_size
        return math.ceil(len(self.labels) / self.batch_size)

    @property
    def images_per_epoch(self) -> int:
        """How many images one pass yields (full batches only when shuffled)."""
        return len(self) * self.batch_size if self.shuffle else len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.labels)
        if self.shuffle:
            order = torch.randperm(count, generator=self.generator, device=self.labels.device)
        else:
            order = torch.arange(count, device=self.labels.device)
        for start in range(0, self.images_per_epoch, self.batch_size):
            indices = order[start : start + self.batch_size]
            images = self.images[indices]
            if self.augmentation is not None:
                images = augment(images, self.augmentation, self.generator)
            yield normalize(images).contiguous(memory_format=self.memory_format), self.labels[indices]
