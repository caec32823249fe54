"""Where and how tensors run: device, precision, seeding."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from cifar.errors import ConfigError


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested == "bf16" and device.type != "cuda":
        raise ConfigError("train.precision = 'bf16' needs train.device to be a CUDA GPU; use 'auto' or 'fp32' on CPU")
    if requested == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return requested


def autocast(device: torch.device, precision: str):
    """Mixed precision for the forward pass; a no-op in fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
