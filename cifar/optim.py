"""The optimizer that lr_find and train share, so the range test probes what training runs."""

from __future__ import annotations

import torch
from torch import nn


def adam(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Adam:
    """Adam with its fused CUDA kernel on a GPU (one launch for all parameters, no host
    work per tensor); on a CPU torch's default (foreach) implementation."""
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=device.type == "cuda" or None)
