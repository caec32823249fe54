"""Whether a model learns at all: test accuracy against guessing, and a hint at why not."""

from __future__ import annotations

import math

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


def not_learning_warning(history: list[dict], num_classes: int, tested_on: int, peak_epoch: int, max_lr: float, steps: int) -> str | None:
    """The warning for the last epoch of `history` when, after the OneCycle peak, its test
    accuracy on `tested_on` images is still at chance; None otherwise."""
    epoch, accuracy = history[-1]["epoch"], history[-1]["test_accuracy"]
    if epoch <= peak_epoch or not at_chance(accuracy, num_classes, tested_on):
        return None
    return (
        f"test accuracy {accuracy:.3f} on {tested_on} images is not above chance ({1 / num_classes:.3f}) "
        f"at epoch {epoch}, after the OneCycle peak at epoch {peak_epoch}: the model is not "
        f"learning; {likely_cause(history, num_classes, max_lr, steps)}"
    )


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
