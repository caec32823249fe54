"""Batched augmentation on uint8 N x H x W x C tensors, on whatever device holds them.

Each sample draws its own crop offset, flip and Cutout box from one torch.Generator, so a
whole batch is augmented in a few tensor ops instead of a per-image PIL pipeline.
"""

from __future__ import annotations

from functools import cache

import torch
from torch.nn import functional as F

from cifar.config import AugmentConfig
from cifar.dataset import CIFAR10_MEAN, CIFAR10_STD


@cache
def _channel_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and std (1 x 3 x 1 x 1, float) and the uint8 mean colour, built once per device:
    a tensor made from Python numbers inside a training step is a host-to-device copy that
    stalls the GPU every step."""
    mean = torch.tensor(CIFAR10_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=device).view(1, 3, 1, 1)
    fill = torch.tensor(CIFAR10_MEAN, device=device).mul(255).round().to(torch.uint8)
    return mean, std, fill


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` on every side, then cut each sample's own H x W window."""
    if padding == 0:
        return images
    count, height, width, _ = images.shape
    padded = F.pad(images, (0, 0, padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, count, 1), generator=generator, device=images.device)
    rows = offsets[0] + torch.arange(height, device=images.device)
    cols = offsets[1] + torch.arange(width, device=images.device)
    samples = torch.arange(count, device=images.device)[:, None, None]
    return padded[samples, rows[:, :, None], cols[:, None, :]]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror left-right each sample with probability 1/2."""
    flip = torch.rand(len(images), generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(2), images)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Paint one size x size box per sample, fully inside the image, with the mean colour.

    The mean colour becomes zero after normalisation, as in DeVries & Taylor's Cutout.
    """
    if size == 0:
        return images
    count, height, width, _ = images.shape
    device = images.device
    top = torch.randint(0, height - size + 1, (count, 1), generator=generator, device=device)
    left = torch.randint(0, width - size + 1, (count, 1), generator=generator, device=device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    in_rows = (rows >= top) & (rows < top + size)
    in_cols = (cols >= left) & (cols < left + size)
    box = in_rows[:, :, None] & in_cols[:, None, :]
    fill = _channel_constants(device)[2]
    return torch.where(box[..., None], fill, images)


def augment(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    images = random_crop(images, config.crop_padding, generator)
    if config.flip:
        images = random_flip(images, generator)
    return cutout(images, config.cutout, generator)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x C -> float N x C x H x W with CIFAR-10 statistics.

    The permute is a view, so the result is stored channels-last, the layout the GPU's
    convolutions prefer; call .contiguous() for the classic layout.
    """
    mean, std, _ = _channel_constants(images.device)
    return (images.permute(0, 3, 1, 2).float().div(255) - mean) / std


def denormalize(batch: torch.Tensor) -> torch.Tensor:
    """float N x C x H x W (normalised) -> uint8 N x H x W x C, for pictures."""
    mean, std, _ = _channel_constants(batch.device)
    pixels = (batch.float() * std + mean).clamp(0, 1).mul(255).round()
    return pixels.to(torch.uint8).permute(0, 2, 3, 1)
