"""OneCycle from params: torch's OneCycleLR, with the peak placed at an epoch boundary and no
step past the schedule's end."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.optim.lr_scheduler import OneCycleLR

from cifar.config import OneCycleConfig
from cifar.errors import ConfigError


class FiniteOneCycleLR(OneCycleLR):
    """OneCycleLR whose step() after the schedule's last step does nothing.

    Callers step it after every optimizer step, the last one included. OneCycleLR itself
    would compute a step beyond the schedule there, which linear annealing extrapolates
    below zero (the reference run's negative final LR); its state dict is OneCycleLR's.
    """

    def step(self, epoch=None) -> None:
        if self.last_epoch + 1 < self.total_steps:
            super().step(epoch)


def one_cycle(
    optimizer: torch.optim.Optimizer,
    max_lr: float,
    epochs: int,
    steps_per_epoch: int,
    config: OneCycleConfig,
) -> FiniteOneCycleLR:
    """A schedule of exactly epochs x steps_per_epoch steps.

    Step 0 runs at max_lr / div_factor, the last step of epoch `max_at_epoch` at max_lr,
    and the last step at max_lr / div_factor / final_div_factor.
    """
    total_steps = epochs * steps_per_epoch
    if config.max_at_epoch * steps_per_epoch < 2:
        # OneCycleLR divides by the length of the warm-up phase, which is then zero. A later peak
        # needs epochs after it (two, with three_phase): raising it alone was refused in turn.
        peak = 2
        epochs_needed = 2 * peak + 1 if config.three_phase else peak + 1
        later_peak = f"set train.onecycle.max_at_epoch to {peak}" + (
            f" and train.epochs to {epochs_needed} or more" if epochs < epochs_needed else ""
        )
        raise ConfigError(
            f"train.onecycle.max_at_epoch = {config.max_at_epoch} with {steps_per_epoch} step per epoch leaves "
            f"OneCycle no room to warm up; lower train.batch_size to at most half the training images, or "
            f"{later_peak}"
        )
    return FiniteOneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=config.max_at_epoch * steps_per_epoch / total_steps,
        div_factor=config.div_factor,
        final_div_factor=config.final_div_factor,
        three_phase=config.three_phase,
        anneal_strategy=config.anneal_strategy,
        cycle_momentum=config.cycle_momentum,
    )


def planned_lrs(max_lr: float, epochs: int, steps_per_epoch: int, config: OneCycleConfig) -> np.ndarray:
    """The learning rate of each of the schedule's steps, as training runs them (read before
    each step): stepped through on an optimizer of one weight, about 5 us a step on a CPU."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr, momentum=0.9)
    schedule = one_cycle(optimizer, max_lr, epochs, steps_per_epoch, config)
    lrs = np.empty(epochs * steps_per_epoch)
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": no optimizer step is wanted
        warnings.simplefilter("ignore", UserWarning)
        for step in range(len(lrs)):
            lrs[step] = optimizer.param_groups[0]["lr"]
            schedule.step()
    return lrs
