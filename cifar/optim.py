"""The optimizer from params, shared by lr_find and train so the range test probes what
training runs."""

from __future__ import annotations

import torch
from torch import nn

from cifar.config import TrainConfig


def build_optimizer(model: nn.Module, lr: float, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam or SGD (momentum, optionally Nesterov) with the configured weight decay. On a GPU
    the fused kernel updates every parameter in one launch, with no host work per tensor; on
    a CPU torch's default (foreach) implementation runs."""
    fused = device.type == "cuda" or None
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
            fused=fused,
        )
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=config.weight_decay, fused=fused)
