"""The learning-rate range test, through torch-lr-finder."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch_lr_finder import LRFinder, TrainDataLoaderIter

from cifar.config import LRFindConfig
from cifar.errors import TrainingError
from cifar.loader import DeviceLoader
from cifar.optim import adam

# torch-lr-finder's steepest-gradient suggestion ignores this many points at each end.
SKIP_START, SKIP_END = 10, 5


@dataclass(frozen=True)
class RangeTest:
    lrs: list[float]
    losses: list[float]  # exponentially smoothed, as torch-lr-finder records them
    max_lr: float
    pick: str
    min_loss: float
    lr_at_min_loss: float
    steepest_lr: float | None  # None when the test stopped too early to estimate a slope


def range_test(
    model: nn.Module,
    loader: DeviceLoader,
    config: LRFindConfig,
    weight_decay: float,
    device: torch.device,
    precision: str,
) -> RangeTest:
    """Adam + cross-entropy from start_lr to end_lr; pick the LR by the configured rule."""
    optimizer = adam(model, config.start_lr, weight_decay, device)
    amp = {}
    if precision == "bf16":
        amp = dict(
            amp_backend="torch",
            amp_config={"device_type": device.type, "dtype": torch.bfloat16},
            # torch-lr-finder insists on a scaler; bf16 has fp32's range and needs none.
            grad_scaler=torch.amp.GradScaler(device.type, enabled=False),
        )
    finder = LRFinder(model, optimizer, nn.CrossEntropyLoss(), device=device, **amp)
    finder.range_test(
        TrainDataLoaderIter(loader),
        start_lr=config.start_lr,
        end_lr=config.end_lr,
        num_iter=config.num_iter,
        step_mode=config.step_mode,
    )
    lrs, losses = finder.history["lr"], finder.history["loss"]
    finder.reset()
    if not np.isfinite(losses[0]):
        raise TrainingError(f"lr_find: the loss is {losses[0]} at the first step (lr {lrs[0]:.3g}); lower lr_find.start_lr")
    best = int(np.nanargmin(losses))
    steepest = steepest_lr(lrs, losses)
    if config.pick == "steepest" and steepest is None:
        raise TrainingError(
            f"lr_find.pick = 'steepest' needs at least {SKIP_START + SKIP_END + 2} recorded steps, "
            f"but the range test stopped after {len(lrs)} (the loss diverged); "
            f"lower lr_find.end_lr or use lr_find.pick = 'min_loss'"
        )
    chosen = lrs[best] if config.pick == "min_loss" else steepest
    return RangeTest(lrs, losses, chosen, config.pick, losses[best], lrs[best], steepest)


def steepest_lr(lrs: list[float], losses: list[float]) -> float | None:
    """torch-lr-finder's suggestion: the LR where the loss falls fastest (per step)."""
    if len(lrs) < SKIP_START + SKIP_END + 2:
        return None
    window = np.array(losses[SKIP_START:-SKIP_END])
    return lrs[SKIP_START + int(np.gradient(window).argmin())]
