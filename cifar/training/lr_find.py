"""The learning-rate range test, through torch-lr-finder, and a reading of its curve: did the
loss fall beyond its own noise, and if so, which LR to train at."""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch_lr_finder import LRFinder, TrainDataLoaderIter

from cifar.config import MAX_OPTIMIZER_FACTOR, MIN_LEARNING_RATE, LRFindConfig
from cifar.errors import DataError, TrainingError
from cifar.training.loader import DeviceLoader
from cifar.training.recipe import Recipe, loss_function

# torch-lr-finder's steepest-gradient suggestion ignores this many points at each end.
SKIP_START, SKIP_END = 10, 5
# torch-lr-finder's default, passed explicitly: reading the curve undoes this smoothing.
SMOOTH_F = 0.05
# The verdict compares the loss's level, the median of this many consecutive steps' own
# losses, at the start of the range and at its lowest; a fall (or a rise after the lowest)
# is real when it exceeds CLEAR_BEYOND times the noise of one step's loss. On pure noise
# that reads a descent in fewer than 1 curve in 300 (docs/lr-finder.md).
LEVEL_STEPS, CLEAR_BEYOND = 5, 4.0
# torch-lr-finder's default, passed explicitly: the test stops where the smoothed loss passes
# this many times its lowest so far, and the verdict names that LR.
DIVERGE_TH = 5
# The default range's density of steps, which advice for a finer range keeps: 16 steps over
# 11 decades, advised without a number of steps, found no descent again.
_DEFAULT_RANGE = LRFindConfig()
# Below this many images a step, the loss of one step says little of the LR it ran at.
STEADY_BATCH = 16
STEPS_PER_DECADE = _DEFAULT_RANGE.num_iter / math.log10(_DEFAULT_RANGE.end_lr / _DEFAULT_RANGE.start_lr)


@dataclass(frozen=True)
class CurveReading:
    """Whether the loss fell beyond its own noise: the verdict and the numbers behind it."""

    verdict: str  # "descent", "flat" (no clear fall, no clear rise) or "rising" (only a clear rise)
    noise: float  # a robust standard deviation of one step's loss about its trend
    start: float  # the loss's level over the first steps
    lowest: float  # its lowest level, around lr_at_lowest
    lr_at_lowest: float
    highest_after: float  # its highest level after the lowest, around lr_at_highest
    lr_at_highest: float

    @property
    def fall(self) -> float:
        return self.start - self.lowest


@dataclass(frozen=True)
class RangeTest:
    lrs: list[float]
    losses: list[float]  # exponentially smoothed by SMOOTH_F, as torch-lr-finder records them
    pick: str
    reading: CurveReading
    min_loss: float  # of the smoothed loss
    lr_at_min_loss: float
    max_lr: float | None  # the pick; None without a descent: there is nothing to pick
    steepest_lr: float | None  # None when the test stopped too early to estimate a slope
    valley_lr: float
    at_range_end: bool  # the pick lies in the last tenth of the range: the range may be too short
    past_descent: bool  # the loss no longer falls at the pick: the edge of divergence
    diverged_at: float | None  # the LR where the loss passed DIVERGE_TH times its lowest, or was not finite
    tested: LRFindConfig  # the range asked for, which advice for another starts from
    images_a_step: int | None = None  # train.batch_size where the test ran here; None for a recorded curve

    def metrics(self) -> dict[str, float | bool]:
        """What metrics/lr_find.json records of it; figures re-reads the curve and expects the same."""
        metrics = {
            # Metrics stay numbers (dvc metrics diff compares them): the verdict as two booleans, both false when flat.
            "descent": self.reading.verdict == "descent",
            "rising": self.reading.verdict == "rising",
            "fall": self.reading.fall,
            "noise": self.reading.noise,
            "min_loss": self.min_loss,
            "lr_at_min_loss": self.lr_at_min_loss,
            "valley_lr": self.valley_lr,
            "steps": len(self.lrs),
        }
        if self.max_lr is not None:  # a curve without a descent has nothing to pick
            metrics |= {
                "max_lr": self.max_lr,
                "pick_at_range_end": self.at_range_end,
                "pick_past_descent": self.past_descent,
            }
        if self.steepest_lr is not None:  # a range too short to estimate a slope has none
            metrics["steepest_lr"] = self.steepest_lr
        return metrics

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
                f"the edge of divergence; {self._inside_the_descent()}"
            )
        if self.max_lr is not None and self.max_lr >= self.lrs[0]:
            at = step_at(self.max_lr, self.lrs)
            if self.losses[at] > self.losses[0]:  # valley over a linear range picked 0.632, at twice the start's loss
                found.append(
                    f"the smoothed loss at the chosen max_lr {self.max_lr:.3g} ({self.losses[at]:.3g}) is above the "
                    f"range's first ({self.losses[0]:.3g}): training there may diverge; {self._inside_the_descent()}"
                )
        if self.max_lr is not None and self.max_lr < self.lrs[0]:
            # A start a tenth of the pick was advised, and the loss fell within its first steps,
            # before any median could show it: start from the default start, as densely.
            start = min(self.max_lr / 10, _DEFAULT_RANGE.start_lr)
            found.append(
                f"the chosen max_lr {self.max_lr:.3g} lies below the range tested (lr {self.lrs[0]:.3g} to "
                f"{self.lrs[-1]:.3g}), where the curve says nothing of how training goes; test a range from below it: "
                f"{self._finer_range(start, self.lrs[-1])}"
            )
        return found

    def _inside_the_descent(self) -> str:
        """The other pick rules whose pick on this curve lies where the smoothed loss still falls,
        below its first: rules named without checking them sent a user from one warning to the
        other, and back."""
        sound = [
            f"{rule!r} ({lr:.3g} on this curve)"
            for rule, lr in rule_picks(self.lrs, self.losses).items()
            if rule != self.pick
            and lr is not None
            and lr >= self.lrs[0]
            and loss_falls_at(lr, self.lrs, self.losses)
            and self.losses[step_at(lr, self.lrs)] <= self.losses[0]
        ]
        if sound:
            return f"lr_find.pick = {' or '.join(sound)} picks inside the descent"
        # "set train.max_lr to an LR where it falls", followed at the curve's first fall, diverged:
        # the descent lies below the range
        lower = min(self.lrs[0] / 10, _DEFAULT_RANGE.start_lr)
        return (
            f"no pick rule picks inside the descent on this curve; test a range from lower LRs: "
            f"{self._finer_range(lower, self.lrs[-1])}"
        )

    @property
    def no_descent(self) -> str | None:
        """What the curve shows when it has no descent, in words; None when the loss fell."""
        reading = self.reading
        if reading.verdict == "descent":
            return None
        if reading.verdict == "rising":
            then = f"then rose to {reading.highest_after:.3g} near lr {reading.lr_at_highest:.3g}"
        elif self.diverged_at is not None:
            then = f"then diverged at lr {self.diverged_at:.3g} (above {DIVERGE_TH} times its lowest)"
        else:
            then = "and never rose clearly either"
        return (
            f"lr_find found no descent: the loss fell by {reading.fall:.2g} at most, from {reading.start:.3g} to "
            f"{reading.lowest:.3g} near lr {reading.lr_at_lowest:.3g} (medians of {LEVEL_STEPS} steps), less than "
            f"{CLEAR_BEYOND:g} times its step-to-step noise of {reading.noise:.2g}, {then} "
            f"(lr {self.lrs[0]:.3g} to {self.lrs[-1]:.3g} in {len(self.lrs)} steps)"
        )

    def _start_below(self, highest: float) -> float:
        """Where a finer range should start: below the divergence and the lowest loss seen (a start
        of 0.1 was advised where the lowest loss lay at 2.9e-6, and that range failed alike), and
        at most the default start (linear steps from 1e-7 to 1,000 in 12 had 0.018 advised, whose
        range picked 0.157, where training diverged)."""
        return min(max(min(highest / 1e4, self.reading.lr_at_lowest / 100), self.lrs[0]), _DEFAULT_RANGE.start_lr)

    def _finer_range(self, start: float, end: float) -> str:
        """The settings of a range from about start to end, its exponential steps as dense as the
        default range's: 16 steps over the 11 decades advised found no descent again, and linear
        steps leave all decades but the last without one."""
        start = max(float(f"{start:.2g}"), MIN_LEARNING_RATE)
        steps = max(2 * LEVEL_STEPS, len(self.lrs), math.ceil(STEPS_PER_DECADE * math.log10(end / start)))
        spacing = " with lr_find.step_mode = 'exp'" if self.tested.step_mode != "exp" else ""
        return (
            f"set lr_find.start_lr to about {start:.2g}, lr_find.end_lr to about {end:.3g} and lr_find.num_iter to "
            f"{steps} or more{spacing}"
        )

    def require_descent(self) -> None:
        """Stop when there is no LR to train at, saying what to do: each advice, followed, tests a
        range that has learnt with this recipe (docs/lr-finder.md)."""
        if not self.no_descent:
            return
        if self.images_a_step is not None and self.images_a_step < STEADY_BATCH:
            # Batches of 1 image: a step-to-step noise of 2.1 hid any descent, and more steps or a
            # wider range, as advised, stopped at the same line.
            raise TrainingError(
                f"{self.no_descent}; each step's loss is that of {self.images_a_step} image(s), whose noise hides a "
                f"descent: raise train.batch_size, which lr_find runs at, to {STEADY_BATCH} or more, or set "
                f"train.max_lr to a number"
            )
        tested = f"lr {self.lrs[0]:.3g} to {self.lrs[-1]:.3g} in {len(self.lrs)} steps"
        diverged_from_the_start = self.diverged_at is not None and int(np.argmin(self.losses)) == 0
        # A rise after a fall within the noise is no sign where the default range was tested:
        # ResNet18-GN's loss rose after 7.85e-6 on 20 steps to 0.1, and trained to 0.83 at 0.03.
        rose_from_the_start = self.reading.verdict == "rising" and (
            self.reading.fall <= 0 or self.lrs[0] > _DEFAULT_RANGE.start_lr
        )
        if (diverged_from_the_start or rose_from_the_start) and self.lrs[0] > MIN_LEARNING_RATE:
            # The LRs that learn lie below the range. A ten-thousandth of a start of 100 rose from
            # its first step again; the default start learns with every recipe here.
            start = min(self.lrs[0] / 1e4, _DEFAULT_RANGE.start_lr)
            if diverged_from_the_start:
                rose_at = self.diverged_at
                what = (
                    f"lr_find found no descent: the loss rose from its first step at lr_find.start_lr = "
                    f"{self.lrs[0]:.3g} and diverged at lr {rose_at:.3g} ({tested})"
                )
            else:
                rose_at, what = self.reading.lr_at_highest, self.no_descent
            if self.tested.step_mode == "linear" and self.lrs[1] > 10 * self.lrs[0]:
                # 20 linear steps to 0.1 test nothing between 1e-7 and 5.3e-3, where SGD learnt: a range
                # from 1e-11 was advised, whose first hundred steps were flat (530 s against 84 s).
                start = min(self.lrs[0], _DEFAULT_RANGE.start_lr)
                raise TrainingError(
                    f"{what}: its linear steps, {self.lrs[1] - self.lrs[0]:.2g} apart, test no LR between "
                    f"{self.lrs[0]:.3g} and {self.lrs[1]:.3g}, where the LRs that learn may lie; "
                    f"{self._finer_range(start, rose_at)}, or set train.max_lr to a number"
                )
            raise TrainingError(
                f"{what}: the range starts above the LRs that learn; {self._finer_range(start, rose_at)}, or set "
                f"train.max_lr to a number"
            )
        if self.reading.verdict == "flat" and self.diverged_at is not None:
            # A flat stretch, then a blow-up: the LRs that learn lie just below the divergence,
            # where a range that already reaches its bounds took too few steps.
            highest = self.diverged_at
            raise TrainingError(
                f"{self.no_descent}; test more steps just below lr {highest:.3g}: "
                f"{self._finer_range(self._start_below(highest), highest)}, or set train.max_lr to a number"
            )
        if self.diverged_at is None and self.tested.end_lr < _DEFAULT_RANGE.end_lr:
            # A range that ends below the default end (1e-6 typed for 1e-1) was told to take more
            # steps, which found no descent again; the default range learns with every recipe here.
            start = max(self.lrs[0], _DEFAULT_RANGE.start_lr)
            raise TrainingError(
                f"{self.no_descent}: the range ends below the LRs that learn; "
                f"{self._finer_range(start, _DEFAULT_RANGE.end_lr)}, or set train.max_lr to a number"
            )
        if len(self.lrs) < 2 * LEVEL_STEPS:
            # One median of 5 steps at the start is also the lowest: the loss "fell by 0".
            raise TrainingError(
                f"lr_find found no descent: {len(self.lrs)} steps, lr {self.lrs[0]:.3g} to {self.lrs[-1]:.3g}, are "
                f"too few to tell one from noise (it compares medians of {LEVEL_STEPS} steps at the start and at the "
                f"lowest); "
                f"{self._finer_range(self.lrs[0], self.lrs[-1])}, or set train.max_lr to a number"
            )
        # Only what params.yaml allows: "raise lr_find.end_lr" was advised at its most, 1,000.
        options = [
            "raise lr_find.num_iter",
            *(["lower lr_find.start_lr"] if self.tested.start_lr > MIN_LEARNING_RATE else []),
            *(["raise lr_find.end_lr"] if self.tested.end_lr < MAX_OPTIMIZER_FACTOR else []),
        ]
        listed = " or ".join([", ".join(options[:-1]), options[-1]] if len(options) > 1 else options)
        raise TrainingError(
            f"{self.no_descent}; test a longer or wider range ({listed}) or set train.max_lr to a number"
        )


def range_test(recipe: Recipe, model: nn.Module, loader: DeviceLoader) -> RangeTest:
    """The recipe's optimizer and loss from lr_find.start_lr to end_lr, read by read_curve."""
    config, device = recipe.params.lr_find, recipe.device
    optimizer = recipe.optimizer(model, config.start_lr)
    amp = {}
    if recipe.precision == "bf16":
        amp = dict(
            amp_backend="torch",
            amp_config={"device_type": device.type, "dtype": torch.bfloat16},
            # torch-lr-finder insists on a scaler; bf16 has fp32's range and needs none.
            grad_scaler=torch.amp.GradScaler(device.type, enabled=False),
        )
    finder = LRFinder(model, optimizer, loss_function(), device=device, **amp)
    # torch-lr-finder prints a hint about its own plot() on stdout; the stage log is ours.
    with contextlib.redirect_stdout(io.StringIO()):
        finder.range_test(
            TrainDataLoaderIter(loader),
            start_lr=config.start_lr,
            end_lr=config.end_lr,
            num_iter=config.num_iter,
            step_mode=config.step_mode,
            smooth_f=SMOOTH_F,
            diverge_th=DIVERGE_TH,
        )
    lrs, losses = finder.history["lr"], finder.history["loss"]
    finder.reset()
    return replace(read_curve(lrs, losses, config), images_a_step=recipe.params.train.batch_size)


def check_handed_curve(curve_path: str, curve: bytes, record_path: str, recorded_sha256: object, fix: str) -> None:
    """The curve is the one whose digest lr_find recorded beside its pick: a loss edited in
    mid-curve kept the pick and was drawn, and a pick read off another curve was trained at."""
    if hashlib.sha256(curve).hexdigest() != recorded_sha256:
        raise DataError(
            f"{curve_path}: not the curve lr_find wrote (its SHA-256 is not the one {record_path} records); {fix}"
        )


def read_curve(lrs: list[float], losses: list[float], config: LRFindConfig) -> RangeTest:
    """The verdict on a recorded curve (LRs and smoothed losses) and, with a descent, the pick by config.pick."""
    if not np.isfinite(losses[0]):
        raise TrainingError(
            f"lr_find: the loss is {losses[0]} at the first step (lr {lrs[0]:.3g}); lower lr_find.start_lr"
        )
    diverged = [
        lr for lr, loss, lowest in zip(lrs, losses, np.minimum.accumulate(losses)) if not loss <= DIVERGE_TH * lowest
    ]
    # A loss that blew up to inf or NaN ends the curve: nothing after it can be read.
    finite = np.isfinite(losses)
    end = len(losses) if finite.all() else int(np.argmin(finite))
    lrs, losses = list(lrs[:end]), list(losses[:end])
    reading = read_levels(lrs, unsmoothed(losses, SMOOTH_F))
    fell = reading.verdict == "descent"
    best = int(np.argmin(losses))
    candidates = rule_picks(lrs, losses)
    if config.pick == "steepest" and candidates["steepest"] is None and fell:
        needed = SKIP_START + SKIP_END + 2
        if len(lrs) < config.num_iter:
            why, fix = f"the range test stopped after {len(lrs)} (the loss diverged)", "lower lr_find.end_lr"
        else:  # "the loss diverged" was said of 16 steps that never did, and lowering end_lr failed alike
            why, fix = f"lr_find.num_iter is {config.num_iter}", f"raise lr_find.num_iter to {needed} or more"
        raise TrainingError(
            f"lr_find.pick = 'steepest' needs at least {needed} recorded steps, but {why}; {fix} or use "
            f"lr_find.pick = 'valley'"
        )
    chosen = candidates[config.pick] if fell else None
    return RangeTest(
        lrs,
        losses,
        config.pick,
        reading,
        losses[best],
        lrs[best],
        chosen,
        candidates["steepest"],
        candidates["valley"],
        at_range_end=fell and bool(in_last_tenth(chosen, config)),
        # A pick below the range (min_loss_div10 of a lowest loss in its first decade) lies where
        # nothing was recorded: "the edge of divergence" was said of it.
        past_descent=fell and chosen >= lrs[0] and not loss_falls_at(chosen, lrs, losses),
        diverged_at=float(diverged[0]) if diverged else None,
        tested=config,
    )


def read_levels(lrs: list[float], raw: np.ndarray) -> CurveReading:
    """The verdict on each step's own loss: its level (a running median, robust to a single
    odd batch and free of the lag of exponential smoothing) at the start and at its lowest."""
    noise = step_noise(raw)
    window = min(LEVEL_STEPS, len(raw))
    levels = np.median(np.lib.stride_tricks.sliding_window_view(raw, window), axis=1)
    centre = window // 2  # a level's step, to name its LR
    lowest = int(np.argmin(levels))
    highest = lowest + int(np.argmax(levels[lowest:]))
    if levels[0] - levels[lowest] > CLEAR_BEYOND * noise:
        verdict = "descent"
    elif levels[highest] - levels[lowest] > CLEAR_BEYOND * noise:
        verdict = "rising"
    else:
        verdict = "flat"
    return CurveReading(
        verdict,
        noise,
        float(levels[0]),
        float(levels[lowest]),
        float(lrs[lowest + centre]),
        float(levels[highest]),
        float(lrs[highest + centre]),
    )


def rule_picks(lrs: list[float], losses: list[float]) -> dict[str, float | None]:
    """What each lr_find.pick rule picks on a curve (steepest: None on a curve too short for it)."""
    lowest = lrs[int(np.argmin(losses))]
    return {
        "min_loss": lowest,
        "min_loss_div10": lowest / 10,
        "steepest": steepest_lr(lrs, losses),
        "valley": lrs[valley_index(losses)],
    }


def unsmoothed(losses: list[float], smooth_f: float) -> np.ndarray:
    """Each step's own loss. torch-lr-finder records only the smoothed loss,
    s[i] = smooth_f * loss[i] + (1 - smooth_f) * s[i - 1]; this undoes it exactly."""
    smoothed = np.asarray(losses, dtype=float)
    return np.concatenate([smoothed[:1], (smoothed[1:] - (1 - smooth_f) * smoothed[:-1]) / smooth_f])


def step_noise(raw: np.ndarray) -> float:
    """The standard deviation of one step's loss about its trend.

    From second differences, which cancel a trend that changes slowly from step to step,
    and robustly (a median absolute deviation, scaled to a Gaussian's deviation), so the few
    steps where the loss turns or blows up do not sway it. Hand-written: one line of numpy,
    and scipy is not among the pinned dependencies.
    """
    if len(raw) < 3:
        return 0.0
    curvature = np.diff(raw, 2)
    # For independent noise of deviation sigma, a second difference has deviation sigma * sqrt(6).
    return float(1.4826 * np.median(np.abs(curvature - np.median(curvature))) / np.sqrt(6))


def in_last_tenth(lr: float, config: LRFindConfig) -> bool:
    """On the range's own scale: logarithmic for exponential steps, linear otherwise."""
    scale = np.log if config.step_mode == "exp" else (lambda value: value)
    return scale(lr) > scale(config.start_lr) + 0.9 * (scale(config.end_lr) - scale(config.start_lr))


def step_at(lr: float, lrs: list[float]) -> int:
    """The recorded step from which the range reached lr: min_loss_div10 between two steps of a
    coarse linear range was judged by the step after it, nearer on a log scale, past the lowest."""
    return max(0, int(np.searchsorted(lrs, lr, side="right")) - 1)


def loss_falls_at(lr: float, lrs: list[float], losses: list[float]) -> bool:
    """Whether the smoothed loss still falls over the steps between which lr lies; at the range's
    last step, into it (min_loss's pick on a curve that has not turned was said to lie where the
    loss "no longer falls", beside the warning that it may not have turned)."""
    index = step_at(lr, lrs)
    if index + 1 < len(losses):
        return losses[index + 1] < losses[index]
    return index > 0 and losses[index] < losses[index - 1]


def valley_index(losses: list[float]) -> int:
    """Halfway along the longest steady descent of the loss (fastai's "valley" rule).

    The descent is the longest chain of recorded steps, in order though not necessarily
    adjacent (a noisy blip is skipped), over which the loss only falls; halfway along it the
    loss is still falling well, away from both the flat start and the blow-up at the end.
    """
    # Patience sorting, O(n log n): comparing every pair of steps took 30 s of CPU at 20,000
    # steps, and lr_find.num_iter goes to 100,000.
    rising_tails: list[float] = []  # [k]: the least -loss that ends a falling chain of k + 1 steps
    length = np.empty(len(losses), dtype=np.int64)  # of the longest falling chain ending at each step
    for step, loss in enumerate(losses):
        place = bisect.bisect_left(rising_tails, -loss)
        rising_tails[place : place + 1] = [-loss]
        length[step] = place + 1
    end = int(np.argmax(length))
    # Measured back from its end by its length, the descent never starts in a flat stretch
    # before it, which a step-by-step walk back along the chain could jump to.
    start = end - int(length[end]) + 1
    return start + (end - start) // 2


def steepest_lr(lrs: list[float], losses: list[float]) -> float | None:
    """torch-lr-finder's suggestion: the LR where the loss falls fastest (per step)."""
    if len(lrs) < SKIP_START + SKIP_END + 2:
        return None
    window = np.array(losses[SKIP_START:-SKIP_END])
    return lrs[SKIP_START + int(np.gradient(window).argmin())]
