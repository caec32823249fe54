"""The learning-rate range test, through torch-lr-finder."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch_lr_finder import LRFinder, TrainDataLoaderIter

from cifar.config import LRFindConfig, TrainConfig
from cifar.errors import TrainingError
from cifar.loader import DeviceLoader
from cifar.optim import build_optimizer

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
    valley_lr: float
    at_range_end: bool  # the pick lies in the last tenth of the range: the range may be too short
    past_descent: bool  # the loss no longer falls at the pick: the edge of divergence

    @property
    def warnings(self) -> list[str]:
        found = []
        if self.at_range_end:
            found.append(
                f"the chosen max_lr {self.max_lr:.3g} lies in the last tenth of the range tested; "
                f"the loss may not have turned yet: raise lr_find.end_lr or lr_find.num_iter"
            )
        if self.past_descent:
            found.append(
                f"the smoothed loss no longer falls at the chosen max_lr {self.max_lr:.3g}: training there sits at "
                f"the edge of divergence; lr_find.pick = 'valley' or 'min_loss_div10' picks inside the descent"
            )
        return found


def range_test(
    model: nn.Module,
    loader: DeviceLoader,
    config: LRFindConfig,
    training: TrainConfig,
    device: torch.device,
    precision: str,
) -> RangeTest:
    """Training's optimizer + cross-entropy from start_lr to end_lr; pick the LR by the configured rule."""
    optimizer = build_optimizer(model, config.start_lr, training, device)
    amp = {}
    if precision == "bf16":
        amp = dict(
            amp_backend="torch",
            amp_config={"device_type": device.type, "dtype": torch.bfloat16},
            # torch-lr-finder insists on a scaler; bf16 has fp32's range and needs none.
            grad_scaler=torch.amp.GradScaler(device.type, enabled=False),
        )
    finder = LRFinder(model, optimizer, nn.CrossEntropyLoss(), device=device, **amp)
    # torch-lr-finder prints a hint about its own plot() on stdout; the stage log is ours.
    with contextlib.redirect_stdout(io.StringIO()):
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
            f"lower lr_find.end_lr or use lr_find.pick = 'valley'"
        )
    valley = valley_index(losses)
    chosen = {
        "min_loss": lrs[best],
        "min_loss_div10": lrs[best] / 10,
        "steepest": steepest,
        "valley": lrs[valley],
    }[config.pick]
    return RangeTest(
        lrs, losses, chosen, config.pick, losses[best], lrs[best], steepest, lrs[valley],
        at_range_end=bool(in_last_tenth(chosen, config)),
        past_descent=not loss_falls_at(chosen, lrs, losses),
    )


def in_last_tenth(lr: float, config: LRFindConfig) -> bool:
    """On the range's own scale: logarithmic for exponential steps, linear otherwise."""
    scale = np.log if config.step_mode == "exp" else (lambda value: value)
    return scale(lr) > scale(config.start_lr) + 0.9 * (scale(config.end_lr) - scale(config.start_lr))


def loss_falls_at(lr: float, lrs: list[float], losses: list[float]) -> bool:
    """Whether the smoothed loss still falls from the recorded step nearest lr to the next."""
    index = int(np.argmin(np.abs(np.log(lrs) - np.log(lr))))
    return index + 1 < len(losses) and losses[index + 1] < losses[index]


def valley_index(losses: list[float]) -> int:
    """Halfway along the longest steady descent of the loss (fastai's "valley" rule).

    The descent is the longest chain of recorded steps, in order though not necessarily
    adjacent (a noisy blip is skipped), over which the loss only falls; halfway along it the
    loss is still falling well, away from both the flat start and the blow-up at the end.
    """
    count = len(losses)
    length = [1] * count  # of the longest falling chain ending at each step
    for later in range(count):
        for earlier in range(later):
            if losses[later] < losses[earlier]:
                length[later] = max(length[later], length[earlier] + 1)
    end = int(np.argmax(length))
    # Measured back from its end by its length, the descent never starts in a flat stretch
    # before it, which a step-by-step walk back along the chain could jump to.
    start = end - length[end] + 1
    return start + (end - start) // 2


def steepest_lr(lrs: list[float], losses: list[float]) -> float | None:
    """torch-lr-finder's suggestion: the LR where the loss falls fastest (per step)."""
    if len(lrs) < SKIP_START + SKIP_END + 2:
        return None
    window = np.array(losses[SKIP_START:-SKIP_END])
    return lrs[SKIP_START + int(np.gradient(window).argmin())]
