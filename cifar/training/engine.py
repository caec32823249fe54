"""The training loop: epochs of the configured optimizer under OneCycle, a test after each,
resumed from and saved to a checkpoint, stopped between steps on request.

Losses and correct counts accumulate on the device; the host reads them back only every
`sync_every` steps (for the progress bar and the finiteness check) and at the end of an
epoch, so the GPU is never stalled by a per-step `.item()`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from cifar.config import MAX_STEPS
from cifar.errors import ConfigError, TrainingError
from cifar.runtime import autocast, synchronize
from cifar.training.chance import Start, guessing_accuracy, lower_max_lr, not_learning_warning
from cifar.training.checkpoint import CheckpointFile, TrainingState
from cifar.training.inference import predict
from cifar.training.loader import DeviceLoader
from cifar.training.recipe import Recipe, loss_function
from cifar.training.schedule import FiniteOneCycleLR
from cifar.training.stop import StopRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingRun:
    """What every training step needs, made once per run."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: FiniteOneCycleLR
    loader: DeviceLoader
    device: torch.device
    precision: str
    epochs: int
    stop: StopRequest = field(default_factory=StopRequest)
    checkpoint: CheckpointFile | None = None
    # the advice for a loss that stops being finite
    too_large: str = "lower train.max_lr or pick it with lr_find"


@dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float
    seconds: float
    step_lrs: list[float]
    first_step: Start  # the first step's batch, in the forward pass before the update


def train_epoch(run: TrainingRun, epoch: int, sync_every: int = 20) -> EpochStats:
    """One pass over the run's loader, as epoch `epoch` (counted from 1) of `run.epochs`."""
    run.model.train()
    criterion = loss_function()
    steps = len(run.loader)
    step_losses = torch.zeros(steps, device=run.device)
    correct = torch.zeros((), dtype=torch.int64, device=run.device)
    step_lrs: list[float] = []
    checked = 0
    synchronize(run.device)
    started = time.perf_counter()
    # closed however the epoch ends: a bar left open was drawn again at exit, after the error line
    with tqdm(total=steps, desc=f"epoch {epoch}/{run.epochs}", unit="step", leave=True) as bar:
        for step, (images, labels) in enumerate(run.loader):
            step_lrs.append(run.optimizer.param_groups[0]["lr"])
            with autocast(run.device, run.precision):
                logits = run.model(images)
                loss = criterion(logits, labels)
            if step == 0:
                first_step = _loss_before_the_update(logits, labels, run.loader)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            run.scheduler.step()
            step_losses[step] = loss.detach()
            correct += (logits.argmax(1) == labels).sum()
            bar.update(1)
            if run.stop.signal_name:
                raise TrainingError(
                    f"stopped by {run.stop.signal_name} after step {step + 1} of epoch {epoch}; "
                    f"{run.checkpoint.resume_hint(epoch, run.epochs) if run.checkpoint else 'no checkpoint was kept'}"
                )
            if (step + 1) % sync_every == 0 or step + 1 == steps:
                _check_finite(
                    step_losses, checked, step + 1, step_lrs, epoch, (epoch - 1) * steps, too_large=run.too_large
                )
                checked = step + 1
                seen = (step + 1) * run.loader.batch_size
                bar.set_postfix(
                    loss=f"{step_losses[:checked].mean().item():.3f}",
                    acc=f"{correct.item() / seen:.3f}",
                    lr=f"{step_lrs[-1]:.2e}",
                )
    synchronize(run.device)
    seconds = time.perf_counter() - started
    return EpochStats(
        step_losses.mean().item(),
        correct.item() / run.loader.images_per_epoch,
        seconds,
        step_lrs,
        first_step,
    )


def _loss_before_the_update(logits: torch.Tensor, labels: torch.Tensor, loader: DeviceLoader) -> Start:
    """The batch's mean loss and its standard error, from the images' own losses (one image says
    nothing of the spread: its loss is taken as its own error)."""
    with torch.no_grad():
        losses = loss_function("none")(logits.float(), labels)
    mean = losses.mean().item()
    error = (losses.std() / math.sqrt(len(losses))).item() if len(losses) > 1 else mean
    return _start(mean, error, loader)


def _start(loss: float, error: float, loader: DeviceLoader) -> Start:
    """With the standard error of an epoch's mean, from the same spread over an epoch's images."""
    return Start(loss, error, error * math.sqrt(loader.batch_size / loader.images_per_epoch))


def _check_finite(step_losses, start, stop, step_lrs, epoch, first_step, too_large) -> None:
    window = step_losses[start:stop]
    bad = torch.nonzero(~torch.isfinite(window))
    if len(bad):
        step = start + int(bad[0])
        raise TrainingError(
            f"loss became {window[int(bad[0])].item()} at epoch {epoch}, step {step + 1} "
            f"(global step {first_step + step + 1}), learning rate {step_lrs[step]:.3g}; "
            f"training diverged: {too_large}"
        )


@dataclass(frozen=True)
class FitResult:
    history: list[dict]  # one row per epoch
    step_lrs: list[float]  # the LR each optimizer step ran at
    chance_warning: str | None
    # The untrained network's loss: its first step's batch's, before the update (chance.py reads
    # the epochs' losses against it).
    start: Start


def fit(
    recipe: Recipe,
    model: nn.Module,
    train_loader: DeviceLoader,
    test_loader: DeviceLoader,
    *,
    max_lr: float,
    num_classes: int,
    checkpoint: CheckpointFile | None = None,
    stop: StopRequest | None = None,
) -> FitResult:
    """The recipe's optimizer and loss under its OneCycle; test loss and accuracy after every epoch.

    With a checkpoint file, resumes from it when it belongs to this run and saves to it
    after every epoch. With a stop request, stops after the step in flight once it is made.
    """
    config, device, precision = recipe.params.train, recipe.device, recipe.precision
    steps = config.epochs * len(train_loader)
    if steps > MAX_STEPS:
        raise ConfigError(
            f"train.epochs = {config.epochs} x {len(train_loader)} steps per epoch ({train_loader.images_per_epoch} "
            f"images in batches of {train_loader.batch_size}) = {steps:,} optimizer steps, more than the {MAX_STEPS:,} "
            f"of about a GPU-day; lower train.epochs or raise train.batch_size"
        )
    optimizer = recipe.optimizer(model, max_lr)
    scheduler = recipe.schedule(optimizer, max_lr, len(train_loader))
    picked = config.max_lr == "find"
    guess = guessing_accuracy(test_loader.labels.cpu().numpy(), num_classes)
    run = TrainingRun(
        model,
        optimizer,
        scheduler,
        train_loader,
        device,
        precision,
        config.epochs,
        stop or StopRequest(),
        checkpoint,
        lower_max_lr(max_lr, picked),
    )
    state = (
        checkpoint.resume(config.epochs, model, optimizer, scheduler, train_loader.generator) if checkpoint else None
    )
    history = state.history if state else []
    step_lrs = state.step_lrs if state else []
    chance_warning = state.chance_warning if state else None
    resumed = state and state.start_loss is not None
    start = _start(state.start_loss, state.start_error, train_loader) if resumed else None
    for epoch in range(len(history) + 1, config.epochs + 1):
        stats = train_epoch(run, epoch)
        start = start or stats.first_step
        tested = predict(model, test_loader, device, precision)
        history.append(
            {
                "epoch": epoch,
                "train_loss": stats.loss,
                "train_accuracy": stats.accuracy,
                "test_loss": tested.loss,
                "test_accuracy": tested.accuracy,
                "lr": stats.step_lrs[-1],
                "seconds": stats.seconds,
            }
        )
        step_lrs += stats.step_lrs
        log.info(
            "epoch %d/%d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | lr %.3g | %.1f s",
            epoch,
            config.epochs,
            stats.loss,
            stats.accuracy,
            tested.loss,
            tested.accuracy,
            stats.step_lrs[-1],
            stats.seconds,
        )
        # Said once, and kept as the last epoch reads: the failure's line after the run named an
        # earlier epoch's loss ("2.64 in the last epoch", which ended at 2.04) and its advice.
        warned, chance_warning = (
            chance_warning,
            not_learning_warning(
                history,
                num_classes,
                test_loader.images_per_epoch,
                config.onecycle.max_at_epoch,
                max_lr,
                len(step_lrs),
                start,
                config.weight_decay,
                picked,
                guess,
            ),
        )
        if chance_warning and not warned:
            log.warning("\n%s\nWARNING: %s\n%s", "!" * 80, chance_warning, "!" * 80)
        if checkpoint:
            checkpoint.save(
                TrainingState(
                    epoch,
                    model.state_dict(),
                    optimizer.state_dict(),
                    scheduler.state_dict(),
                    train_loader.generator.get_state(),
                    history,
                    step_lrs,
                    chance_warning,
                    start.loss,
                    start.error,
                )
            )
    if run.stop.signal_name:  # it came after the last step's check: train exited 0 and replaced its outputs
        hint = run.checkpoint.resume_hint(len(history) + 1, config.epochs) if run.checkpoint else None
        stopped = f"stopped by {run.stop.signal_name} after epoch {len(history)}"
        raise TrainingError(f"{stopped}; {hint or 'no checkpoint was kept'}")
    return FitResult(history, step_lrs, chance_warning, start)
