"""Training and evaluation loops.

Losses and correct counts accumulate on the device; the host reads them back only every
`sync_every` steps (for the progress bar and the finiteness check) and at the end of an
epoch, so the GPU is never stalled by a per-step `.item()`.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cifar.checkpoint import CheckpointFile, TrainingState
from cifar.config import TrainConfig
from cifar.errors import TrainingError
from cifar.loader import DeviceLoader
from cifar.optim import build_optimizer
from cifar.runtime import autocast
from cifar.schedule import one_cycle

log = logging.getLogger(__name__)


class StopRequested:
    """Set from a signal handler; the training loop stops after the step in flight."""

    def __init__(self):
        self.signal_name: str | None = None

    def __call__(self, signal_number, frame) -> None:
        self.signal_name = signal.Signals(signal_number).name


STOP = StopRequested()


@contextmanager
def stop_after_the_step_on(*signals: int):
    """Turn these signals into a clean stop between steps instead of death mid-write."""
    previous = {sig: signal.signal(sig, STOP) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float
    seconds: float
    step_lrs: list[float]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_epoch(
    model: nn.Module,
    loader: DeviceLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    epoch: int,
    epochs: int,
    first_step: int,
    total_steps: int,
    device: torch.device,
    precision: str,
    sync_every: int = 20,
) -> EpochStats:
    """One pass over loader. `first_step` is the global index of its first step."""
    model.train()
    criterion = nn.CrossEntropyLoss()
    step_losses = torch.zeros(len(loader), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    step_lrs: list[float] = []
    checked = 0
    synchronize(device)
    started = time.perf_counter()
    bar = tqdm(total=len(loader), desc=f"epoch {epoch}/{epochs}", unit="step", leave=True)
    for step, (images, labels) in enumerate(loader):
        step_lrs.append(optimizer.param_groups[0]["lr"])
        with autocast(device, precision):
            logits = model(images)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if first_step + step + 1 < total_steps:
            scheduler.step()
        step_losses[step] = loss.detach()
        correct += (logits.argmax(1) == labels).sum()
        bar.update(1)
        if STOP.signal_name:
            bar.close()
            raise TrainingError(
                f"stopped by {STOP.signal_name} after step {step + 1} of epoch {epoch}; the checkpoint holds every "
                f"completed epoch: run `dvc repro` (or `python -m stages.train`) to resume from epoch {epoch}"
            )
        if (step + 1) % sync_every == 0 or step + 1 == len(loader):
            _check_finite(step_losses, checked, step + 1, step_lrs, epoch, first_step)
            checked = step + 1
            seen = (step + 1) * loader.batch_size
            bar.set_postfix(loss=f"{step_losses[:checked].mean().item():.3f}", acc=f"{correct.item() / seen:.3f}", lr=f"{step_lrs[-1]:.2e}")
    bar.close()
    synchronize(device)
    seconds = time.perf_counter() - started
    return EpochStats(step_losses.mean().item(), correct.item() / loader.images_per_epoch, seconds, step_lrs)


def _check_finite(step_losses, start, stop, step_lrs, epoch, first_step) -> None:
    window = step_losses[start:stop]
    bad = torch.nonzero(~torch.isfinite(window))
    if len(bad):
        step = start + int(bad[0])
        raise TrainingError(
            f"loss became {window[int(bad[0])].item()} at epoch {epoch}, step {step + 1} "
            f"(global step {first_step + step + 1}), learning rate {step_lrs[step]:.3g}; "
            f"training diverged: lower train.max_lr or pick it with lr_find"
        )


@dataclass(frozen=True)
class Predictions:
    labels: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray  # softmax probability of the predicted class
    loss: float  # mean cross-entropy
    flip_tta_predicted: np.ndarray | None  # predictions from the mean of image and mirror

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean())


@torch.no_grad()
def predict(
    model: nn.Module, loader: DeviceLoader, device: torch.device, precision: str, flip_tta: bool = False
) -> Predictions:
    """Every image's prediction; results stay on the device until the end (one sync)."""
    model.eval()
    total_loss = torch.zeros((), device=device)
    labels, probabilities, tta_probabilities = [], [], []
    for images, batch_labels in loader:
        with autocast(device, precision):
            logits = model(images).float()
            if flip_tta:
                mirrored = model(images.flip(3)).float()
        total_loss += nn.functional.cross_entropy(logits, batch_labels, reduction="sum")
        labels.append(batch_labels)
        probabilities.append(logits.softmax(1))
        if flip_tta:
            tta_probabilities.append((logits.softmax(1) + mirrored.softmax(1)) / 2)
    confidence, predicted = torch.cat(probabilities).max(1)
    return Predictions(
        labels=torch.cat(labels).cpu().numpy(),
        predicted=predicted.cpu().numpy(),
        confidence=confidence.cpu().numpy(),
        loss=total_loss.item() / loader.images_per_epoch,
        flip_tta_predicted=torch.cat(tta_probabilities).argmax(1).cpu().numpy() if flip_tta else None,
    )


@dataclass(frozen=True)
class FitResult:
    history: list[dict]  # one row per epoch
    step_lrs: list[float]  # the LR each optimizer step ran at
    chance_warning: str | None


def fit(
    model: nn.Module,
    train_loader: DeviceLoader,
    test_loader: DeviceLoader,
    *,
    max_lr: float,
    config: TrainConfig,
    num_classes: int,
    device: torch.device,
    precision: str,
    checkpoint: CheckpointFile | None = None,
) -> FitResult:
    """The configured optimizer + cross-entropy under OneCycle; test loss and accuracy after every epoch.

    With a checkpoint file, resumes from it when it belongs to this run and saves to it
    after every epoch.
    """
    optimizer = build_optimizer(model, max_lr, config, device)
    steps_per_epoch = len(train_loader)
    total_steps = config.epochs * steps_per_epoch
    scheduler = one_cycle(optimizer, max_lr, config.epochs, steps_per_epoch, config.onecycle)
    state = checkpoint.resume(config.epochs, model, optimizer, scheduler, train_loader.generator) if checkpoint else None
    history = state.history if state else []
    step_lrs = state.step_lrs if state else []
    chance_warning = state.chance_warning if state else None
    for epoch in range(len(history) + 1, config.epochs + 1):
        stats = train_epoch(
            model, train_loader, optimizer, scheduler,
            epoch=epoch, epochs=config.epochs, first_step=(epoch - 1) * steps_per_epoch,
            total_steps=total_steps, device=device, precision=precision,
        )
        tested = predict(model, test_loader, device, precision)
        test_loss, test_accuracy = tested.loss, tested.accuracy
        history.append({
            "epoch": epoch,
            "train_loss": stats.loss,
            "train_accuracy": stats.accuracy,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "lr": stats.step_lrs[-1],
            "seconds": stats.seconds,
        })
        step_lrs += stats.step_lrs
        log.info(
            "epoch %d/%d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | lr %.3g | %.1f s",
            epoch, config.epochs, stats.loss, stats.accuracy, test_loss, test_accuracy, stats.step_lrs[-1], stats.seconds,
        )
        tested_on = test_loader.images_per_epoch
        if chance_warning is None and epoch > config.onecycle.max_at_epoch and at_chance(test_accuracy, num_classes, tested_on):
            chance_warning = (
                f"test accuracy {test_accuracy:.3f} on {tested_on} images is not above chance ({1 / num_classes:.3f}) "
                f"at epoch {epoch}, after the OneCycle peak at epoch {config.onecycle.max_at_epoch}: the model is not "
                f"learning; {likely_cause(history, num_classes, max_lr, len(step_lrs))}"
            )
            log.warning("\n%s\nWARNING: %s\n%s", "!" * 80, chance_warning, "!" * 80)
        if checkpoint:
            checkpoint.save(TrainingState(
                epoch, model.state_dict(), optimizer.state_dict(), scheduler.state_dict(),
                train_loader.generator.get_state(), history, step_lrs, chance_warning,
            ))
    return FitResult(history, step_lrs, chance_warning)


# A model is "at chance" unless guessing would score as well as it did less than once in
# this many tries: strict enough that a real model on a few hundred test images passes.
CHANCE_SIGNIFICANCE = 1e-3


def at_chance(accuracy: float, num_classes: int, num_images: int) -> bool:
    """Not significantly better than guessing, by a one-sided binomial test on the test set."""
    return binomial_tail(round(accuracy * num_images), num_images, 1 / num_classes) >= CHANCE_SIGNIFICANCE


def binomial_tail(successes: int, trials: int, probability: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, probability), summed in log space."""
    log_p, log_q = math.log(probability), math.log1p(-probability)
    terms = [
        math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1) + k * log_p + (trials - k) * log_q
        for k in range(max(successes, 0), trials + 1)
    ]
    if not terms:
        return 0.0
    largest = max(terms)
    return min(1.0, math.exp(largest) * sum(math.exp(term - largest) for term in terms))


def likely_cause(history: list[dict], num_classes: int, max_lr: float, steps: int) -> str:
    """A hint from what training saw: a loss that rose above guessing's means divergence;
    a loss that fell means the run was too short to reach a useful model."""
    guessing_loss = math.log(num_classes)
    first, last = history[0]["train_loss"], history[-1]["train_loss"]
    if not math.isfinite(last) or last > guessing_loss or last >= first:
        return f"the training loss went from {first:.3g} to {last:.3g}: it diverged, so lower max_lr (this run's is {max_lr:.3g}) or let lr_find pick it"
    return (
        f"the training loss fell from {first:.3g} to {last:.3g}, so the model learns but {steps} steps in all were too few: "
        f"raise train.epochs or data.train_limit, or lower train.batch_size"
    )
