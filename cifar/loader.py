"""Batches from a split held whole on the device as uint8.

CIFAR-10 is 150 MB as uint8, so it fits on any GPU; indexing a resident tensor and
augmenting whole batches there replaces DataLoader workers and host-to-device copies.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from cifar.augment import augment, normalize
from cifar.config import AugmentConfig
from cifar.dataset import Split

# Evaluation holds no activations for backward, so it affords much larger batches.
EVAL_BATCH_SIZE = 1024


class DeviceLoader:
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
        self.images = torch.from_numpy(split.images).to(device)
        self.labels = torch.from_numpy(split.labels).to(device)
        self.batch_size = batch_size
        self.augmentation = augmentation
        self.shuffle = shuffle
        self.generator = torch.Generator(device=device).manual_seed(seed)
        # channels_last helps cuDNN's tensor-core kernels; the CPU keeps the classic layout.
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.labels)
        if self.shuffle:
            order = torch.randperm(count, generator=self.generator, device=self.labels.device)
        else:
            order = torch.arange(count, device=self.labels.device)
        for start in range(0, count, self.batch_size):
            indices = order[start : start + self.batch_size]
            images = self.images[indices]
            if self.augmentation is not None:
                images = augment(images, self.augmentation, self.generator)
            yield normalize(images).contiguous(memory_format=self.memory_format), self.labels[indices]
