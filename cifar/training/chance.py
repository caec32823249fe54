"""Whether a model learns at all: test accuracy against guessing, and a hint at why not."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

# A model is "at chance" unless guessing would score as well as it did less than once in
# this many tries: strict enough that a real model on a few hundred test images passes.
CHANCE_SIGNIFICANCE = 1e-3
# An epoch's mean training loss below this fraction of guessing's means the model tells
# classes apart on its training batches (a change smaller than the rest of guessing's is
# flat); above this multiple of guessing's, its outputs blew up.
LEARNING, BLOWN_UP = 0.95, 1.5
# A first epoch's mean above BLOWN_UP times guessing's is an untrained network's start at a
# small LR too (ResNet-9 at max_lr 1e-4: 4.03, then 2.48; Adam at 1e-6: 4.85, then 4.62); one
# this far above is a blow-up (Adam at max_lr 0.3: 17.8, then 2.19, was told to train longer).
# Where the untrained network's own loss (the start, below) is known, it replaces this guess
# for the training loss; the test loss is read against this multiple still.
FIRST_EPOCH_BLOWN_UP = 4
# The start is one batch's loss, the loss of the first step's batch before any update, and an
# epoch's mean is above it "clearly" (the loss rose from where it began) by more than this
# share of it, more than START_ERRORS standard errors of that batch's mean, and more than the
# rest of guessing's. An untrained network's losses spread by 0.2 (ResNet18-GN) to 0.45 (the
# custom ResNet) of their mean, image to image (on random images): one batch of 512's mean
# lies within 2% of the network's, of 32 within 8%, of 8 within 16% (one standard error),
# which a share alone read as a rise one run in four. A blow-up goes far past it (ResNet18-GN
# at Adam max_lr 0.035: from 2.45 to 5.38, then 4.74).
ROSE_FROM_START, START_ERRORS = 0.1, 3
# Fewer optimizer steps than this may teach a network little at any max_lr: 4 steps (300 images
# in batches of 150, 2 epochs) at 0.001 went from 4.38 to 3.04 and were told to raise max_lr,
# and at 0.003 to 0.005 ended higher; 75 steps at 0.001 (batches of 8) learned. A run of fewer
# that did not blow up is advised more of them, or lr_find, not a larger max_lr; one that did,
# and fell clearly all the same, more of them besides a smaller max_lr.
FEW_STEPS = 50


# A test split where passing the chance test takes this many times guessing's accuracy is too
# small to tell learning from chance: 6 of 10 images right (six times 1 in 10), or 14 of 50; 35
# of 200 (1.75 times) is what the pipeline's smallest recipe tests on.
FEW_TEST_IMAGES = 2.5


# Weight decay past this (twenty times the 5e-4 of the strongest recipe in use) can hold the
# weights near zero whatever max_lr: SGD at weight decay 1 collapsed onto uniform outputs
# (train and test loss ln 10 to four digits) at max_lr 0.01, was told to raise it, and at 0.03
# and 0.1 to lower it again; at 5e-4 it learned. Named only for such a collapse: a run that blew
# up (SGD at 3, weight decay 0.02) or barely moved (Adam at 1e-6) was told to lower the decay,
# which changed nothing, and Adam learned at 0.02 as at 5e-4.
STRONG_WEIGHT_DECAY = 0.01
# How near guessing's loss the last epoch's must lie to read as uniform outputs (a collapse).
COLLAPSED = 0.005

TRAIN_LONGER = "train longer (raise train.epochs or data.train_limit, or lower train.batch_size)"
# "unless": train.max_lr set to lr_find's own pick, as a number, was told to let lr_find pick it,
# and ran the same run again.
LR_FIND = "let lr_find pick max_lr (train.max_lr: find), unless this is its pick"


def lower_max_lr(max_lr: float, picked: bool) -> str:
    """The advice for a max_lr too large, `picked` where lr_find picked it: "pick it with lr_find"
    was advised of its pick."""
    if picked:
        return f"set train.max_lr to a number below lr_find's pick, {max_lr:.3g}"
    return f"lower train.max_lr (this run's is {max_lr:.3g}) or pick it with lr_find"


def _train_longer_or_lr_find(picked: bool) -> str:
    """For a run too short to tell a max_lr too small from one too large: lr_find's pick was
    advised "let lr_find pick max_lr", which changed nothing."""
    other = "set train.max_lr to a number other than lr_find's pick" if picked else LR_FIND
    return f"{TRAIN_LONGER}, or {other}"


@dataclass(frozen=True)
class Start:
    """The untrained network's loss: the mean over the first step's batch, before its update,
    and that mean's standard error (one image's loss differs from another's); and, from the same
    spread, the standard error of an epoch's mean."""

    loss: float
    error: float = 0.0
    epoch_error: float = 0.0

    def risen_above(self, losses: list[float], guessing: float) -> bool:
        """Whether some epoch's mean is clearly above it."""
        margin = max(ROSE_FROM_START * self.loss, START_ERRORS * self.error, (1 - LEARNING) * guessing)
        return max(losses) - self.loss > margin


def _epoch_to_epoch(guessing: float, start: Start | None) -> float:
    """How far two epochs' means may lie apart and be one: the rest of guessing's loss, or, on
    few images, one standard error of their difference (300 images in batches of 8: a network
    that did not move went from 4.722 to 4.838 and was told to lower max_lr 1e-7). The images'
    spread overstates that error, as the same images return each epoch and only their crops,
    flips and batches change: read at three standard errors, a rise from 3.83 to 4.43 (200
    images in batches of 16 at SGD max_lr 0.001) was taken for a network that never moved, and
    raising max_lr advised, which ended higher; lowering it learned."""
    return max((1 - LEARNING) * guessing, math.sqrt(2) * (start.epoch_error if start else 0.0))


def _test_loss_blown_up(history: list[dict], guessing: float) -> float | None:
    """The highest test loss when some epoch's is not finite or above FIRST_EPOCH_BLOWN_UP times
    guessing's, else None."""
    test_losses = [row.get("test_loss", 0.0) for row in history]
    if all(loss <= FIRST_EPOCH_BLOWN_UP * guessing for loss in test_losses):
        return None
    return next((loss for loss in test_losses if not math.isfinite(loss)), max(test_losses))


def guessing_accuracy(labels, num_classes: int) -> float:
    """The test accuracy of always guessing the test split's largest class: 1 / num_classes on a
    balanced split. Against 1 / num_classes alone, a model that learned only which class is most
    common passed on an unbalanced one (0.468 on 190 images, 100 of them of one class)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return float(counts.max() / counts.sum()) if counts.sum() else 1 / num_classes


def at_chance(accuracy: float, guessing: float, num_images: int) -> bool:
    """Not significantly better than guessing (`guessing`, its accuracy: guessing_accuracy), by a
    one-sided binomial test on the test set."""
    return binomial_tail(round(accuracy * num_images), num_images, guessing) >= CHANCE_SIGNIFICANCE


def at_chance_after_the_peak(history: list[dict], peak_epoch: int, guessing: float, num_images: int) -> bool:
    """Whether any epoch after the OneCycle peak tested at chance, a later one above it too
    (metrics/train.json's at_chance_level): train wrote the last epoch's alone, and figures,
    reading any, refused the outputs of a run that recovered, advising the same run again."""
    return any(at_chance(row["test_accuracy"], guessing, num_images) for row in history if row["epoch"] > peak_epoch)


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


def not_learning_warning(
    history: list[dict],
    num_classes: int,
    tested_on: int,
    peak_epoch: int,
    max_lr: float,
    steps: int,
    start: Start | None = None,
    weight_decay: float = 0.0,
    picked: bool = False,
    guess: float | None = None,
) -> str | None:
    """The warning for the last epoch of `history` when, after the OneCycle peak, its test
    accuracy on `tested_on` images is still at chance; None otherwise. `start` is the untrained
    network's loss, at the first step (likely_cause); a loss collapsed onto guessing's under a
    `weight_decay` past STRONG_WEIGHT_DECAY names the decay, as no max_lr may help; `picked`
    where lr_find picked max_lr; `guess` the accuracy of always guessing the test split's largest
    class (guessing_accuracy; 1 / num_classes unless given)."""
    epoch, accuracy = history[-1]["epoch"], history[-1]["test_accuracy"]
    chance = guess or 1 / num_classes
    if epoch <= peak_epoch or not at_chance(accuracy, chance, tested_on):
        return None
    largest = ", its largest class's share" if chance > 1 / num_classes else ""
    guessing, last = math.log(num_classes), history[-1]["train_loss"]
    cause = (
        f"the training loss ended at {last:.4g}, guessing's {guessing:.4g} (uniform outputs), under "
        f"train.weight_decay = {weight_decay:g}, far above the 1e-7 to 5e-4 of the recipes in use: decay that strong "
        f"can hold the weights near zero whatever max_lr, so lower it (to 5e-4, say) and run again"
        if weight_decay > STRONG_WEIGHT_DECAY and abs(last - guessing) <= COLLAPSED * guessing
        else likely_cause(history, num_classes, max_lr, steps, start, picked)
    )
    needed = right_to_pass(chance, tested_on)
    if needed >= FEW_TEST_IMAGES * chance * tested_on:
        # 10 test images at 0.2, 0.4, 0.4 (the test loss falling from 2.33 to 1.58) were told the
        # model was not learning, and to train longer: any model under 6 of 10 fails there.
        cause = (
            f"{tested_on} test images are too few to tell a model that learned from chance, as only {needed} or more "
            f"right ({needed / tested_on:.2f}) count as above it: raise data.test_limit (where it takes every test "
            f"image already, give the test split more); else {cause}"
        )
    elif chance > 1 / num_classes and not at_chance(accuracy, 1 / num_classes, tested_on):
        # A test split of 9 cats to 1 of each other class: a model that learned (0.35, where a
        # random class scores 0.1) was told it was not, and to raise max_lr.
        cause = (
            f"the test split is unbalanced ({chance:.0%} of it one class), and the model scores above a class "
            f"picked at random ({1 / num_classes:.3f}) but not above always guessing that class: give the test split "
            f"as many images of each class (data.test_limit takes a class-balanced subset); else {cause}"
        )
    else:
        cause = f"the model is not learning; {cause}"
    return (
        f"test accuracy {accuracy:.3f} on {tested_on} images is not above chance ({chance:.3f}{largest}) "
        f"at epoch {epoch}, after the OneCycle peak at epoch {peak_epoch}: {cause}"
    )


def right_to_pass(guessing: float, num_images: int) -> int:
    """How many test images a model must get right to test above chance (num_images + 1 where
    none do). Bisected, as the tail falls with each more right: counted up one at a time, it took
    5 to 28 s of CPU each epoch on 10,000 test images."""
    low, high = 0, num_images + 1
    while low < high:
        middle = (low + high) // 2
        if binomial_tail(middle, num_images, guessing) < CHANCE_SIGNIFICANCE:
            high = middle
        else:
            low = middle + 1
    return low


def likely_cause(
    history: list[dict], num_classes: int, max_lr: float, steps: int, start: Start | None = None, picked: bool = False
) -> str:
    """Which way to move, read from the training loss per epoch against guessing's loss
    (uniform probabilities, ln(num_classes)) and, where given, against `start`, the untrained
    network's loss (its first step's, before the update): a loss that rose (from epoch to
    epoch, or clearly above the start), blew up or stopped being finite means max_lr was too
    large; one that fell or stayed flat but never went clearly below guessing's means it was
    too small to move the model; one that went clearly below guessing's while the test set
    stays at chance means the model fits its batches but trained too briefly. Without the
    start, the first epoch's mean stands in for it."""
    guessing = math.log(num_classes)
    losses = [row["train_loss"] for row in history]
    first, last, highest = losses[0], losses[-1], max(losses)
    went = (
        f"the training loss went from {first:.3g} to {last:.3g}"
        if start is None
        else f"the training loss went from {start.loss:.3g} at the first step to {last:.3g} in the last epoch"
    )
    apart = _epoch_to_epoch(guessing, start)
    rose = last - first > apart
    # Above the untrained network's own loss: the first epoch's mean ran from 2.45 to 5.38
    # (ResNet18-GN at Adam max_lr 0.035), which "falling from an untrained network's start" read
    # as too small a max_lr.
    rose_from_start = start is not None and start.risen_above(losses, guessing)
    flat = highest - min(losses) <= apart
    # A test loss blown up from an untrained start while the training loss is not (Adam at max_lr
    # 0.07: 5.57, then 5.52, test loss 206,630) was read as "never moved" or "barely moved, raise
    # max_lr", and a max_lr raised as told was told the same.
    highest_test = _test_loss_blown_up(history, guessing)
    test_blown_up = (first if start is None else start.loss) <= FIRST_EPOCH_BLOWN_UP * guessing and (
        highest_test is not None
    )
    # A start clearly above every epoch moved in the first one (4.9, then 4.62 and 4.60 was said
    # never to have moved).
    fell_in_the_first_epoch = start is not None and start.loss - min(losses) > max(apart, START_ERRORS * start.error)
    stuck = flat and last > BLOWN_UP * guessing and not (test_blown_up or rose_from_start or fell_in_the_first_epoch)
    if all(map(math.isfinite, losses)) and stuck:
        # No step moved it, up or down: it began far off, which a LR (even a huge one) does
        # not do within its first epoch without moving on; weights edited in a checkpoint do.
        return (
            f"the training loss stayed near {last:.3g} from the first epoch, far above guessing's {guessing:.3g}: "
            f"the model began far off and never moved: if it resumed from a checkpoint (its log says which), "
            f"delete that file and run again, else raise max_lr (this run's is {max_lr:.3g})"
        )
    if start is None:
        blown_up = highest > (BLOWN_UP if losses.index(highest) > 0 else FIRST_EPOCH_BLOWN_UP) * guessing
    else:  # the start says where the first epoch began: no guess at it
        blown_up = rose_from_start
    # Falling every epoch from an untrained network's start, still far above guessing's (Adam at
    # max_lr 1e-6: 4.85, then 4.62) was called diverged, and "lower max_lr" advised.
    still_falling = _fell_from_an_untrained_start(losses, guessing, start)
    if not all(map(math.isfinite, losses)) or rose or blown_up or (last > BLOWN_UP * guessing and not still_falling):
        return (
            f"{went} (highest {highest:.3g}; guessing scores {guessing:.3g}): it diverged, "
            f"so lower max_lr (this run's is {max_lr:.3g})"
        )
    # A loss falling clearly in a few steps may need more of them rather than another max_lr: 24
    # steps at Adam max_lr 0.005 went from 4.85 to 2.58 with a test loss of 52 at the peak, and
    # lowered ones were told to raise it; 48 steps at 0.005 learned.
    longer = (
        f", or, as it fell in only {steps} steps in all, train longer: raise train.epochs or data.train_limit, or "
        f"lower train.batch_size"
        if steps < FEW_STEPS and (start.loss if start else first) - last > apart
        else ""
    )
    if test_blown_up:
        return (
            f"{went}, but the test loss reached {highest_test:.3g} (guessing scores {guessing:.3g}): it diverged, "
            f"so lower max_lr (this run's is {max_lr:.3g}){longer}"
        )
    # In fewer steps a loss that fell a little, stayed or rose a little cannot tell a max_lr too
    # small from one too large: 24 steps of SGD at 0.003 went from 4.85 to 4.76, "raise" was
    # advised, and 0.01 ended at 8.76 ("lower"), 0.001 at 4.25; 4 epochs at 0.003 learned. One
    # that fell clearly in every epoch and stayed far above guessing's can: 45 steps of Adam at
    # 1e-6 went from 5.25 to 4.69, 4.56, 4.42, were told to train longer, and in 93 stayed at
    # chance; 45 at 0.001 learned.
    barely_moved = still_falling and (first if start is None else start.loss) - last > apart
    if last > LEARNING * guessing and steps < FEW_STEPS and not (barely_moved and last > BLOWN_UP * guessing):
        return (
            f"{went} (guessing scores {guessing:.3g}) in only {steps} steps in all, too few to tell whether max_lr "
            f"(this run's is {max_lr:.3g}) is too small or too large: {_train_longer_or_lr_find(picked)}"
        )
    # Above the start by more than the flat margin, though within its noise, and back: ResNet18-GN
    # at SGD 0.003 went from 2.54 to 2.72 and back to 2.54 in 50 steps and was told to raise
    # max_lr; 0.01 ended higher and was told the same, 0.03 to lower it.
    if last > LEARNING * guessing and start is not None and highest - start.loss > apart:
        return (
            f"{went} (highest {highest:.3g}; guessing scores {guessing:.3g}): it rose above the first step's loss "
            f"and fell back, as a max_lr too small or too large can each make it (this run's is {max_lr:.3g}): "
            f"{_train_longer_or_lr_find(picked)}"
        )
    if last > BLOWN_UP * guessing:
        return (
            f"{went}, falling from an untrained network's start far above guessing's {guessing:.3g}: the model "
            f"barely moved, so raise max_lr (this run's is {max_lr:.3g})"
        )
    if last > LEARNING * guessing:
        return (
            f"{went}, still near guessing's {guessing:.3g}: the model barely moved, so raise max_lr "
            f"(this run's is {max_lr:.3g})"
        )
    return (
        f"{went}, below guessing's {guessing:.3g}: the model fits its training batches, but {steps} steps in all "
        f"were too few: raise train.epochs or data.train_limit, or lower train.batch_size"
    )


def _fell_from_an_untrained_start(losses: list[float], guessing: float, start: Start | None = None) -> bool:
    """None rising from one epoch to the next by more than the rest of guessing's loss, none
    above the untrained network's start: a small max_lr's run, not a blown-up one. Without
    `start`, more than one epoch and none above FIRST_EPOCH_BLOWN_UP times guessing's stand in
    for it."""
    apart = _epoch_to_epoch(guessing, start)
    rose = any(later - earlier > apart for earlier, later in itertools.pairwise(losses))
    finite = all(map(math.isfinite, losses))
    if start is None:
        return finite and len(losses) > 1 and not rose and max(losses) <= FIRST_EPOCH_BLOWN_UP * guessing
    return finite and not rose and not start.risen_above(losses, guessing)


def diverged(
    history: list[dict], num_classes: int, max_lr: float, start: Start | None = None, picked: bool = False
) -> str | None:
    """Why a run failed though its test accuracy ended above chance, if it did: its last
    epoch's training loss stayed far above guessing's, and (where `start`, the untrained
    network's loss at the first step, is given) it rose above that start or from one epoch to
    the next. At train.max_lr 1000 the loss was 1e6 and the test loss 1e8, while 37 of 200 test
    images landed in the right class (0.185), and the run was recorded as an experiment."""
    guessing, losses = math.log(num_classes), [row["train_loss"] for row in history]
    last = losses[-1]
    if last <= BLOWN_UP * guessing:
        return None
    # Not rising from an untrained start, and learning on the test set: a short run (4 steps of
    # SGD: 4.71, then 3.86, or 4.705 then 4.733) was told to lower max_lr, and at a lower one to
    # raise it.
    # unless its test loss blew up meanwhile (51.9 at the peak, on 300 images in batches of 8 at
    # max_lr 0.01, whose rise from 3.71 to 3.94 lay within the few images' noise)
    highest_test = _test_loss_blown_up(history, guessing)
    if _fell_from_an_untrained_start(losses, guessing, start) and highest_test is None:
        return None
    above_start = start is not None and start.risen_above([last], guessing)
    also = f" and the untrained network's {start.loss:.3g} at the first step" if above_start else ""
    also += f", and the test loss reached {highest_test:.3g}" if highest_test is not None else ""
    return (
        f"training diverged: the last epoch's training loss is {last:.3g}, above {BLOWN_UP:g} times guessing's "
        f"{guessing:.3g}{also}, so {lower_max_lr(max_lr, picked)}"
    )
