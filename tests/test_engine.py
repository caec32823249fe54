import copy
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from cifar.config import AugmentConfig, OneCycleConfig, TrainConfig
from cifar.errors import ConfigError, TrainingError
from cifar.training.chance import (
    STRONG_WEIGHT_DECAY,
    Start,
    at_chance,
    at_chance_after_the_peak,
    binomial_tail,
    diverged,
    guessing_accuracy,
    likely_cause,
    not_learning_warning,
    right_to_pass,
)
from cifar.training.checkpoint import EPOCH_ROW_KEYS
from cifar.training.engine import TrainingRun, fit, train_epoch
from cifar.training.inference import predict
from cifar.training.loader import DeviceLoader
from generated import CPU, cpu_recipe, random_split


def tiny_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))


def config(epochs=3, max_at_epoch=1, max_lr="find"):
    return TrainConfig(epochs=epochs, batch_size=16, onecycle=OneCycleConfig(max_at_epoch=max_at_epoch), max_lr=max_lr)


@pytest.mark.parametrize(
    ("max_lr", "advice"),
    [
        ("find", "set train.max_lr to a number below lr_find's pick, 0.001"),
        (1e-3, "lower train.max_lr (this run's is 0.001) or pick it with lr_find"),
    ],
    ids=["lr_finds-pick", "a-number"],
)
def test_non_finite_loss_stops_with_epoch_step_and_lr(max_lr, advice):
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = tiny_model()
            self.calls = 0

        def forward(self, x):
            self.calls += self.training
            out = self.linear(x)
            return out * float("nan") if self.calls == 7 else out

    loader = DeviceLoader(random_split(64, 0), 16, CPU, shuffle=True)
    with pytest.raises(TrainingError) as caught:
        fit(cpu_recipe(train=config(max_lr=max_lr)), Exploding(), loader, loader, max_lr=1e-3, num_classes=10)
    message = str(caught.value)
    # 4 training steps per epoch: the 7th is epoch 2, step 3.
    assert "loss became nan at epoch 2, step 3 (global step 7), learning rate" in message
    assert message.endswith(f"training diverged: {advice}")


def test_chance_level_after_the_peak_is_reported():
    # Random labels cannot be learnt: test accuracy stays near 10%.
    train, test = random_split(64, 1), random_split(200, 2)
    result = fit(
        cpu_recipe(train=config()),
        tiny_model(),
        DeviceLoader(train, 16, CPU, shuffle=True),
        DeviceLoader(test, 100, CPU),
        max_lr=1e-4,
        num_classes=10,
    )
    assert result.chance_warning is not None
    largest = np.bincount(test.labels, minlength=10).max() / len(test)  # random labels: not ten equal classes
    assert f"on 200 images is not above chance ({largest:.3f}, its largest class's share)" in result.chance_warning
    assert "after the OneCycle peak at epoch 1" in result.chance_warning


def test_the_chance_warning_reads_the_last_epoch_and_is_said_once(caplog):
    """The failure's line after the run named the first epoch at chance after the peak ("2.64 in
    the last epoch", which ended at 2.04) and the advice for it."""
    train, test = random_split(64, 1), random_split(200, 2)
    caplog.set_level(logging.WARNING)
    result = fit(
        cpu_recipe(train=config(epochs=4)),
        tiny_model(),
        DeviceLoader(train, 16, CPU, shuffle=True),
        DeviceLoader(test, 100, CPU),
        max_lr=1e-4,
        num_classes=10,
    )
    assert "at epoch 4, after the OneCycle peak at epoch 1" in result.chance_warning
    last = result.history[-1]["train_loss"]
    assert f"to {last:.3g} in the last epoch" in result.chance_warning
    assert sum("not above chance" in message for message in caplog.messages) == 1


@pytest.mark.parametrize(
    ("accuracy", "images", "at_chance_level"),
    # 0.148 on 500 images is a newcomer's small run that learns: guessing scores that well
    # about once in 2,200 tries. 0.11 on 500 is what guessing does (one try in four).
    [
        (0.148, 500, False),
        (0.11, 500, True),
        (0.10, 10_000, True),
        (0.105, 10_000, True),
        (0.12, 10_000, False),
        (0.9, 50, False),
    ],
)
def test_chance_is_a_significance_test_on_the_number_of_test_images(accuracy, images, at_chance_level):
    assert at_chance(accuracy, 0.1, images) is at_chance_level


@pytest.mark.parametrize(
    ("train_losses", "max_lr", "advice"),
    [
        # A pick far too small (ResNet18-GN): the loss falls, but stays at guessing's 2.303.
        (
            [2.41, 2.35, 2.31],
            3.36e-6,
            "the training loss went from 2.41 to 2.31, still near guessing's 2.3: "
            "the model barely moved, so raise max_lr (this run's is 3.36e-06)",
        ),
        (
            [2.41, 2.42, 2.42],
            1e-7,
            "still near guessing's 2.3: the model barely moved, so raise max_lr (this run's is 1e-07)",
        ),
        (
            [2.4, 7932.0],
            0.0483,
            "the training loss went from 2.4 to 7.93e+03 (highest 7.93e+03; guessing scores 2.3): "
            "it diverged, so lower max_lr (this run's is 0.0483)",
        ),
        # An untrained network's first epoch at a small LR, then falling every epoch: too small a LR.
        (
            [4.03, 2.48],
            1e-4,
            "the training loss went from 4.03 to 2.48, still near guessing's 2.3: the model barely moved, so raise "
            "max_lr (this run's is 0.0001)",
        ),
        # Adam at max_lr 1e-6: falling from an untrained start, still far above guessing's.
        (
            [4.85, 4.62],
            1e-6,
            "the training loss went from 4.85 to 4.62, falling from an untrained network's start far above "
            "guessing's 2.3: the model barely moved, so raise max_lr (this run's is 1e-06)",
        ),
        # Adam at max_lr 0.3: blown up in the first epoch, then below guessing's: not "too few steps".
        ([17.8, 2.19], 0.3, "(highest 17.8; guessing scores 2.3): it diverged, so lower max_lr (this run's is 0.3)"),
        # Blown up in the first epoch, then collapsed to guessing's loss: falling, but diverged.
        ([812.0, 2.35, 2.3], 1.0, "(highest 812; guessing scores 2.3): it diverged, so lower max_lr (this run's is 1)"),
        ([2.4, float("nan")], 0.5, "it diverged, so lower max_lr (this run's is 0.5)"),
        # Far above guessing's from the first epoch and never moving: weights that began far off
        # (edited into a resumed checkpoint), not a LR that blew them up, least of all 1e-30.
        (
            [7.9e3, 7.9e3, 7.9e3],
            1e-30,
            "the training loss stayed near 7.9e+03 from the first epoch, far above guessing's 2.3: the model began "
            "far off and never moved: if it resumed from a checkpoint (its log says which), delete that file",
        ),
        # Flat within 5% of guessing's loss, so stuck too, not a rise.
        ([7.9e3, 7.9e3 + 0.1, 7.9e3 + 0.05], 1e-30, "the model began far off and never moved"),
        # Down by 1.5 (more than 5% of guessing's), still far above it: it moved, it diverged.
        ([812.0, 811.0, 810.5], 1.0, "(highest 812; guessing scores 2.3): it diverged, so lower max_lr"),
        (
            [2.2, 1.9],
            0.002,
            "the training loss went from 2.2 to 1.9, below guessing's 2.3: the model fits its training "
            "batches, but 60 steps in all were too few: raise train.epochs",
        ),
        # A clear rise is divergence even while the loss stays below guessing's.
        ([2.0, 2.3], 0.05, "the training loss went from 2 to 2.3 (highest 2.3; guessing scores 2.3): it diverged"),
        # A rise smaller than the rest of guessing's loss (5% of 2.3) is flat.
        (
            [2.30, 2.35],
            1e-5,
            "the training loss went from 2.3 to 2.35, still near guessing's 2.3: the model barely moved",
        ),
    ],
    ids=[
        "falling-at-a-tiny-lr",
        "flat",
        "rising",
        "an-untrained-first-epoch-then-falling",
        "falling-from-an-untrained-start-far-above",
        "blown-up-in-the-first-epoch-then-below-guessing",
        "exploded-then-collapsed",
        "non-finite",
        "stuck-far-above",
        "stuck-within-flat",
        "falling-far-above",
        "too-few-steps",
        "rising-below-guessing",
        "rising-within-flat",
    ],
)
def test_the_chance_alarm_advises_from_the_training_loss(train_losses, max_lr, advice):
    assert advice in likely_cause([{"train_loss": loss} for loss in train_losses], 10, max_lr, 60)


@pytest.mark.parametrize(
    ("losses", "max_lr", "advice"),
    [
        ([(5.57, 206_630.0), (5.52, 150_000.0)], 0.07, "but the test loss reached 2.07e+05"),
        ([(4.24, 7_976.0), (2.24, 313.0)], 0.025, "but the test loss reached 7.98e+03"),
        ([(2.41, 2.4), (2.31, 2.35)], 3.36e-6, "the model barely moved, so raise max_lr"),
        ([(7.9e3, 8e3), (7.9e3, 8e3)], 1e-30, "the model began far off and never moved"),
    ],
    ids=["flat-training-loss", "falling-training-loss", "no-blow-up", "began-far-off"],
)
def test_the_chance_alarm_reads_a_test_loss_blown_up_as_divergence(losses, max_lr, advice):
    """Adam at max_lr 0.07 (5.57, then 5.52; test loss 206,630) was told the model "never moved",
    and at 0.025 (4.24, then 2.24; test loss 7,976) "barely moved, so raise max_lr": BatchNorm's
    statistics blown up show in the test loss first."""
    history = [{"train_loss": train, "test_loss": test} for train, test in losses]
    assert advice in likely_cause(history, 10, max_lr, 60)


@pytest.mark.parametrize(
    ("last_loss", "failed"), [(1.37e6, True), (3.5, True), (3.4, False), (1.9, False)], ids=["1e6", "3.5", "3.4", "1.9"]
)
def test_a_run_whose_last_training_loss_stays_far_above_guessing_has_diverged(last_loss, failed):
    """At train.max_lr 1000 the loss ended at 1.37e6, while 37 of 200 test images landed in the right
    class, above chance: the run was recorded as done. 1.5 times guessing's 2.3 is 3.45."""
    history = [{"train_loss": 2.2}, {"train_loss": last_loss}]
    expected = (
        f"training diverged: the last epoch's training loss is {last_loss:.3g}, above 1.5 times guessing's 2.3, so "
        "lower train.max_lr (this run's is 1e+03) or pick it with lr_find"
    )
    assert diverged(history, 10, 1000.0) == (expected if failed else None)


@pytest.mark.parametrize(
    ("accuracies", "expected"),
    [([0.3, 0.1, 0.3], True), ([0.1, 0.3, 0.3], False), ([0.3, 0.3, 0.1], True), ([0.3, 0.3, 0.3], False)],
    ids=["after-the-peak-and-recovered", "only-at-the-peak", "at-the-end", "never"],
)
def test_at_chance_level_is_any_epoch_after_the_peak_at_chance(accuracies, expected):
    """The at_chance_level of train's metrics: train wrote the last epoch's alone, figures read any
    epoch's after the peak, and refused a run that recovered, advising `dvc repro train`, which
    wrote the same again."""
    history = [{"epoch": epoch, "test_accuracy": accuracy} for epoch, accuracy in enumerate(accuracies, 1)]
    assert at_chance_after_the_peak(history, 1, 0.1, 200) is expected


def test_chance_on_an_unbalanced_test_split_is_guessing_its_largest_class():
    """100 of 190 test images of one class: a model that learned only that class's share (0.468,
    noise data) passed against 1 / 10, and train recorded it as a success."""
    labels = np.array([0] * 100 + [cls for cls in range(1, 10) for _ in range(10)])
    assert guessing_accuracy(labels, 10) == pytest.approx(100 / 190)
    assert guessing_accuracy(np.repeat(np.arange(10), 20), 10) == pytest.approx(0.1)
    assert at_chance(0.468, guessing_accuracy(labels, 10), 190)
    assert not at_chance(0.468, 0.1, 190)
    history = [
        {"epoch": 1, "test_accuracy": 0.4, "train_loss": 2.0},
        {"epoch": 2, "test_accuracy": 0.468, "train_loss": 1.9},
    ]
    warning = not_learning_warning(history, 10, 190, 1, 0.01, 60, guess=guessing_accuracy(labels, 10))
    # and one above a class picked at random was told it was not learning, and to raise max_lr
    assert warning.startswith(
        "test accuracy 0.468 on 190 images is not above chance (0.526, its largest class's share) at epoch 2, after "
        "the OneCycle peak at epoch 1: the test split is unbalanced (53% of it one class), and the model scores above "
        "a class picked at random (0.100) but not above always guessing that class: give the test split as many "
        "images of each class (data.test_limit takes a class-balanced subset); else "
    ), warning


@pytest.mark.parametrize(("guessing", "images"), [(0.1, 10), (0.1, 200), (0.526, 190), (0.1, 1000)])
def test_the_images_right_to_pass_are_the_fewest_that_test_above_chance(guessing, images):
    """Bisected: counted up one at a time, 10,000 test images took seconds each epoch."""
    right = right_to_pass(guessing, images)
    assert not at_chance(right / images, guessing, images)
    assert at_chance((right - 1) / images, guessing, images)


def test_a_test_split_too_small_to_tell_learning_from_chance_is_named():
    """data.test_limit 10: 0.2, 0.4, 0.4 (the test loss falling from 2.33 to 1.58) was "the model is
    not learning", and train longer advised: any model under 6 of 10 right fails there."""
    history = [{"epoch": epoch, "test_accuracy": accuracy, "train_loss": loss} for epoch, accuracy, loss in
               [(1, 0.2, 2.76), (2, 0.4, 1.98), (3, 0.4, 1.68)]]  # fmt: skip
    warning = not_learning_warning(history, 10, 10, 1, 0.001, 45, Start(2.5))
    assert (
        "after the OneCycle peak at epoch 1: 10 test images are too few to tell a model that learned from chance, as "
        "only 6 or more right (0.60) count as above it: raise data.test_limit (where it takes every test image "
        "already, give the test split more); else the training loss went from"
    ) in warning
    assert "the model is not learning" in not_learning_warning(
        [{**row, "test_accuracy": 0.12} for row in history], 10, 200, 1, 0.001, 45, Start(2.5)
    )


def test_a_max_lr_lr_find_picked_is_never_advised_to_lr_find():
    """A run at chance at lr_find's pick was told to "let lr_find pick max_lr (train.max_lr: find)",
    as params.yaml said already, and a diverged one to "pick it with lr_find": neither changed a
    thing. Where lr_find picked it, the advice is a number in its place."""
    too_short, rose_and_fell = [{"train_loss": 2.38}], [{"train_loss": 2.72}, {"train_loss": 2.54}]
    assert likely_cause(too_short, 10, 0.00113, 6, Start(5.0), picked=True).endswith(
        "too few to tell whether max_lr (this run's is 0.00113) is too small or too large: train longer (raise "
        "train.epochs or data.train_limit, or lower train.batch_size), or set train.max_lr to a number other than "
        "lr_find's pick"
    )
    assert likely_cause(rose_and_fell, 10, 0.003, 60, Start(2.54, 0.13), picked=True).endswith(
        "(this run's is 0.003): train longer (raise train.epochs or data.train_limit, or lower train.batch_size), or "
        "set train.max_lr to a number other than lr_find's pick"
    )
    assert diverged([{"train_loss": 2.2}, {"train_loss": 3.5}], 10, 0.02, picked=True).endswith(
        "so set train.max_lr to a number below lr_find's pick, 0.02"
    )


@pytest.mark.parametrize(
    ("epoch", "accuracy", "warned"),
    # The OneCycle peak at epoch 2; 0.1 on 500 images is guessing, 0.9 is learning.
    [(3, 0.1, True), (2, 0.1, False), (1, 0.1, False), (3, 0.9, False)],
    ids=["at-chance-after-the-peak", "at-chance-at-the-peak", "at-chance-before-the-peak", "learning-after-the-peak"],
)
def test_the_chance_alarm_sounds_after_the_peak_only_and_at_chance_only(epoch, accuracy, warned):
    history = [
        {"epoch": number, "test_accuracy": accuracy, "train_loss": loss}
        for number, loss in zip(range(1, epoch + 1), [2.2, 2.0, 1.9])
    ]
    warning = not_learning_warning(history, 10, tested_on=500, peak_epoch=2, max_lr=0.01, steps=30)
    if not warned:
        assert warning is None
    else:
        assert warning == (
            "test accuracy 0.100 on 500 images is not above chance (0.100) at epoch 3, after the OneCycle peak at "
            "epoch 2: the model is not learning; the training loss went from 2.2 to 1.9, below guessing's 2.3: the "
            "model fits its training batches, but 30 steps in all were too few: raise train.epochs or "
            "data.train_limit, or lower train.batch_size"
        )


def test_the_chance_test_sums_the_binomial_tail_exactly_and_stays_a_probability():
    for trials in range(1, 13):
        for probability in (0.1, 0.5):
            for successes in range(-1, trials + 2):
                exact = sum(
                    math.comb(trials, k) * probability**k * (1 - probability) ** (trials - k)
                    for k in range(max(successes, 0), trials + 1)
                )
                tail = binomial_tail(successes, trials, probability)
                assert tail == pytest.approx(exact, rel=1e-9, abs=1e-300), (successes, trials, probability)
                # Rounding in the sum may pass 1 (1 + 2e-16 for 3 trials); a probability may not.
                assert 0.0 <= tail <= 1.0


def test_history_and_schedule_cover_every_epoch_and_step():
    train = random_split(40, 3)
    model = tiny_model()
    result = fit(
        cpu_recipe(train=config(epochs=3)),
        model,
        DeviceLoader(train, 16, CPU, shuffle=True),
        DeviceLoader(train, 100, CPU),
        max_lr=1e-3,
        num_classes=10,
    )
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert all(row.keys() == EPOCH_ROW_KEYS for row in result.history), "a checkpoint's rows are checked against these"
    assert len(result.step_lrs) == 3 * 2  # full batches only: 40 // 16 steps per epoch
    assert result.step_lrs[0] == pytest.approx(1e-3 / 100) and result.step_lrs[-1] == pytest.approx(1e-3 / 1e4)
    assert [row["lr"] for row in result.history] == result.step_lrs[1::2]  # each epoch's last step
    # The last row is the trained model's test score.
    final = predict(model, DeviceLoader(train, 100, CPU), CPU, "fp32")
    assert (result.history[-1]["test_accuracy"], result.history[-1]["test_loss"]) == (final.accuracy, final.loss)


def test_flip_tta_averages_the_image_and_its_mirror():
    class LeftHalfMatters(nn.Module):
        """Logits from the left half only, so a mirror changes the prediction."""

        def forward(self, x):
            return x[..., :16].mean(dim=(2, 3)).repeat(1, 4)[:, :10]

    loader = DeviceLoader(random_split(40, 4), 16, CPU)
    plain = predict(LeftHalfMatters(), loader, CPU, "fp32")
    tta = predict(LeftHalfMatters(), loader, CPU, "fp32", flip_tta=True)
    assert plain.flip_tta_predicted is None
    assert np.array_equal(tta.predicted, plain.predicted)  # the plain prediction is unchanged
    images, _ = next(iter(loader))
    mirrored = LeftHalfMatters()(images.flip(3)).softmax(1)
    expected = ((LeftHalfMatters()(images).softmax(1) + mirrored) / 2).argmax(1).numpy()
    assert np.array_equal(tta.flip_tta_predicted[:16], expected)
    assert not np.array_equal(tta.flip_tta_predicted, plain.predicted)


def test_a_training_epoch_yields_full_batches_only_and_counts_the_images_it_trained_on():
    loader = DeviceLoader(random_split(70, 0), 16, CPU, shuffle=True)
    assert len(loader) == 4 and loader.images_per_epoch == 64
    assert [len(labels) for _, labels in loader] == [16] * 4
    evaluation = DeviceLoader(random_split(70, 0), 16, CPU)
    assert [len(labels) for _, labels in evaluation] == [16] * 4 + [6]


def test_a_batch_larger_than_the_training_set_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"train.batch_size = 128 is more than the 70 training images"):
        DeviceLoader(random_split(70, 0), 128, CPU, shuffle=True)


def test_a_training_step_builds_no_tensor_from_python_numbers(monkeypatch):
    """torch.tensor(<python numbers>, device=cuda) is a host-to-device copy that stalls the
    GPU; the constants a step needs (normalisation, Cutout fill, optimizer state) are built
    in the first epoch, never again."""
    loader = DeviceLoader(random_split(64, 0), 16, CPU, augmentation=AugmentConfig(), shuffle=True)
    model = tiny_model()
    recipe = cpu_recipe(train=config(epochs=2))
    optimizer = recipe.optimizer(model, 1e-3)
    scheduler = recipe.schedule(optimizer, 1e-3, len(loader))
    run = TrainingRun(model, optimizer, scheduler, loader, CPU, "fp32", epochs=2)
    train_epoch(run, epoch=1)
    built = []
    real_tensor = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *args, **kwargs: built.append(args) or real_tensor(*args, **kwargs))
    train_epoch(run, epoch=2)
    assert built == []


@pytest.mark.parametrize(
    ("losses", "failed"),
    [
        ([4.71, 3.86], False),
        ([4.705, 4.733], False),
        ([30.0, 24.0], True),
        ([4.71, 3.86, 4.5], True),
        ([3.86], True),
        ([4.71, float("nan")], True),
    ],
    ids=[
        "falling-from-an-untrained-start",
        "flat-from-it",
        "falling-but-blown-up",
        "rising-at-the-end",
        "one-epoch",
        "not-finite",
    ],
)
def test_a_loss_that_never_rose_from_its_start_has_not_diverged(losses, failed):
    """Four steps of SGD: 4.71, then 3.86, above 1.5 times guessing's, with test accuracy above
    chance, was called diverged ("lower max_lr"), and at a lower max_lr "barely moved"."""
    assert (diverged([{"train_loss": loss} for loss in losses], 10, 0.01) is not None) == failed


@pytest.mark.parametrize(
    ("start", "train_losses", "max_lr", "advice"),
    [
        # ResNet18-GN at Adam max_lr 0.035: the untrained network's 2.45 at the first step, then
        # epochs of 5.38 and 4.74, falling but above where the loss began: "raise max_lr" was advised.
        (
            2.45,
            [5.38, 4.74],
            0.035,
            "the training loss went from 2.45 at the first step to 4.74 in the last epoch (highest 5.38; guessing "
            "scores 2.3): it diverged, so lower max_lr (this run's is 0.035)",
        ),
        # The custom ResNet at Adam max_lr 1e-6 starts about as high as its epochs end.
        (
            4.9,
            [4.85, 4.62],
            1e-6,
            "the training loss went from 4.9 at the first step to 4.62 in the last epoch, falling from an untrained "
            "network's start far above guessing's 2.3: the model barely moved, so raise max_lr (this run's is 1e-06)",
        ),
        # One batch's loss below its network's: within ROSE_FROM_START of the start, or three
        # standard errors of a small batch's mean (32 images at a spread of 0.45), is no blow-up;
        # but above it and back is what a max_lr too small or too large can each do (ResNet18-GN
        # at SGD 0.003: 2.54, then 2.72 and 2.54, was told to raise it, and 0.01 ended higher).
        (4.5, [4.85, 4.62], 1e-6, "it rose above the first step's loss and fell back, as a max_lr too small or"),
        ((4.2, 0.33), [4.85, 4.62], 1e-6, "it rose above the first step's loss and fell back, as a max_lr too"),
        (
            (2.54, 0.13),
            [2.72, 2.54],
            0.003,
            "the training loss went from 2.54 at the first step to 2.54 in the last epoch (highest 2.72; guessing "
            "scores 2.3): it rose above the first step's loss and fell back, as a max_lr too small or too large can "
            "each make it (this run's is 0.003): train longer (raise train.epochs or data.train_limit, or lower "
            "train.batch_size), or let lr_find pick max_lr (train.max_lr: find), unless this is its pick",
        ),
        # Above the start and back below guessing's: it fits its batches.
        ((2.3, 0.05), [2.5, 1.9], 0.002, "below guessing's 2.3: the model fits its training batches, but 60 steps"),
        # ResNet-9 at max_lr 1e-4.
        (4.1, [4.03, 2.48], 1e-4, "still near guessing's 2.3: the model barely moved, so raise max_lr"),
        # A network that starts far above 4 x guessing's and falls from there was called blown up.
        (12.0, [11.5, 11.0], 1e-6, "the model barely moved, so raise max_lr (this run's is 1e-06)"),
        (2.4, [17.8, 2.19], 0.3, "(highest 17.8; guessing scores 2.3): it diverged, so lower max_lr"),
        # Flat at guessing's from the start: the start says nothing new.
        (2.4, [2.41, 2.42, 2.42], 1e-7, "still near guessing's 2.3: the model barely moved, so raise max_lr"),
        # Blown up within the first epoch and stuck there: not weights that began far off.
        (2.4, [7.9e3, 7.9e3, 7.9e3], 1.0, "(highest 7.9e+03; guessing scores 2.3): it diverged, so lower max_lr"),
        # Far off from the very start and never moved.
        (7.9e3, [7.9e3, 7.9e3, 7.9e3], 1e-30, "the model began far off and never moved"),
        (2.3, [2.2, 1.9], 0.002, "below guessing's 2.3: the model fits its training batches, but 60 steps"),
        (2.3, [2.0, 2.3], 0.05, "(highest 2.3; guessing scores 2.3): it diverged, so lower max_lr"),
    ],
    ids=[
        "rose-above-the-start-then-fell",
        "falling-from-its-start-far-above",
        "a-start-batch-below-its-network",
        "a-small-start-batch-below-its-network",
        "above-the-start-and-back-in-enough-steps",
        "above-the-start-and-below-guessings",
        "resnet9-falling-from-its-start",
        "falling-from-a-start-above-4x",
        "blown-up-in-the-first-epoch",
        "flat-from-the-start",
        "blown-up-and-stuck",
        "began-far-off",
        "too-few-steps",
        "rising-below-the-start",
    ],
)
def test_the_chance_alarm_reads_the_training_loss_against_the_untrained_networks_start(
    start, train_losses, max_lr, advice
):
    """The epochs' means alone cannot tell a loss that blew up from where it began (ResNet18-GN
    at Adam max_lr 0.035: 2.45, then epochs of 5.38 and 4.74) from one that began that high (the
    custom ResNet at 1e-6: about 4.9, then 4.85 and 4.62): the first step's loss can."""
    start = Start(*start) if isinstance(start, tuple) else Start(start)
    history = [{"train_loss": loss} for loss in train_losses]
    assert advice in likely_cause(history, 10, max_lr, 60, start)
    warning = not_learning_warning(
        [row | {"epoch": epoch, "test_accuracy": 0.1} for epoch, row in enumerate(history, 1)],
        10,
        tested_on=500,
        peak_epoch=0,
        max_lr=max_lr,
        steps=60,
        start=start,
    )
    assert warning.endswith(likely_cause(history, 10, max_lr, 60, start))


@pytest.mark.parametrize(
    ("train_losses", "max_lr", "weight_decay", "decay_named"),
    [
        ([3.05, 2.34, 2.304, 2.3028], 0.01, 1.0, True),
        ([3.05, 2.34, 2.304, 2.3028], 0.01, STRONG_WEIGHT_DECAY, False),
        ([514.92, 23729.13], 3.0, 0.02, False),
        ([4.6851, 4.5623, 4.4208], 1e-6, 0.02, False),
    ],
    ids=["collapsed-under-strong-decay", "collapsed-under-the-bound", "blown-up", "barely-moved"],
)
def test_weight_decay_is_named_for_a_collapse_onto_guessing_under_strong_decay(
    train_losses, max_lr, weight_decay, decay_named
):
    """SGD at weight decay 1 (its bound) and max_lr 0.01 collapsed onto uniform outputs, train and
    test loss ln 10 (5.25 at the first step, then 3.05, 2.34, 2.304, 2.3028), and was told to raise
    max_lr; raised, lr_find and lowered again went round in circles, while weight decay 5e-4
    learned. Named for any run past 0.01, a run that blew up (SGD at 3) or barely moved (Adam at
    1e-6) was told to lower the decay, which changed nothing."""
    history = [{"epoch": epoch, "train_loss": loss, "test_accuracy": 0.1} for epoch, loss in enumerate(train_losses, 1)]
    start = Start(5.25, 0.42, 0.42 * (32 / 500) ** 0.5)
    steps = 15 * len(train_losses)
    told = not_learning_warning(history, 10, 200, 1, max_lr, steps, start, weight_decay)
    if decay_named:
        assert told.endswith(
            "the model is not learning; the training loss ended at 2.303, guessing's 2.303 (uniform outputs), under "
            "train.weight_decay = 1, far above the 1e-7 to 5e-4 of the recipes in use: decay that strong can hold the "
            "weights near zero whatever max_lr, so lower it (to 5e-4, say) and run again"
        )
    else:
        assert told.endswith(likely_cause(history, 10, max_lr, steps, start))


def test_epochs_of_few_images_are_read_against_their_own_noise():
    """300 images in batches of 8 at Adam max_lr 1e-7: two epochs of a network that did not move
    (4.722, then 4.838) differ by more than the rest of guessing's loss, and "lower max_lr" was
    advised, again at 1e-8. The first batch's spread gives an epoch's noise."""
    history = [{"train_loss": 4.7219}, {"train_loss": 4.8383}]
    start = Start(4.72, 0.74, 0.74 * (8 / 300) ** 0.5)
    assert "raise max_lr (this run's is 1e-07)" in likely_cause(history, 10, 1e-7, 75, start)
    assert diverged(history, 10, 1e-7, start) is None


def test_a_rise_from_epoch_to_epoch_on_few_images_is_read_as_one():
    """200 images in batches of 16 at SGD max_lr 0.001: 4.85 at the first step, then epochs of 3.83
    and 4.43, read within the images' spread as a network that never moved, and "raise max_lr"
    advised; raised to 0.003 it ended at 4.63, lowered to 0.0001 at 2.81."""
    history = [{"train_loss": 3.83}, {"train_loss": 4.43}]
    start = Start(4.85, 0.55, 0.55 * (16 / 200) ** 0.5)
    assert "it diverged, so lower max_lr (this run's is 0.001)" in likely_cause(history, 10, 0.001, 26, start)


def test_a_short_run_whose_test_loss_blew_up_is_also_advised_more_steps():
    """24 steps at Adam max_lr 0.005: 4.85, then 3.65 and 2.58, with a test loss of 52 at the peak,
    were told only to lower max_lr, and lowered ones to raise it; 48 steps at 0.005 learned."""
    history = [{"train_loss": 3.65, "test_loss": 52.4}, {"train_loss": 2.58, "test_loss": 6.36}]
    assert likely_cause(history, 10, 0.005, 24, Start(4.85, 0.55)).endswith(
        "it diverged, so lower max_lr (this run's is 0.005), or, as it fell in only 24 steps in all, train "
        "longer: raise train.epochs or data.train_limit, or lower train.batch_size"
    )


GUESSING = "guessing's 2.3"
BARELY_MOVED = "the model barely moved, so raise max_lr"
LONGER = "train longer: raise train.epochs or data.train_limit, or lower train.batch_size"
TOO_FEW_TO_TELL = (
    "too few to tell whether max_lr (this run's is {max_lr}) is too small or too large: train longer (raise "
    "train.epochs or data.train_limit, or lower train.batch_size), or let lr_find pick max_lr (train.max_lr: find), "
    "unless this is its pick"
)


@pytest.mark.parametrize(
    ("train_losses", "max_lr", "steps", "start", "advice"),
    [
        (
            [4.85, 4.62],
            1e-6,
            50,
            Start(4.9),
            f"the training loss went from 4.9 at the first step to 4.62 in the last epoch, falling from an untrained "
            f"network's start far above {GUESSING}: {BARELY_MOVED} (this run's is 1e-06)",
        ),
        (
            [2.41, 2.42, 2.42],
            1e-7,
            60,
            Start(2.4),
            f"the training loss went from 2.4 at the first step to 2.42 in the last epoch, still near {GUESSING}: "
            f"{BARELY_MOVED} (this run's is 1e-07)",
        ),
        (
            [4.62, 4.60],
            1e-6,
            60,
            Start(4.9),
            f"the training loss went from 4.9 at the first step to 4.6 in the last epoch, falling from an untrained "
            f"network's start far above {GUESSING}: {BARELY_MOVED} (this run's is 1e-06)",
        ),
        (
            [4.9978, 4.7596],
            0.003,
            24,
            Start(4.85, 0.55, 0.55 * (16 / 200) ** 0.5),
            f"the training loss went from 4.85 at the first step to 4.76 in the last epoch (guessing scores 2.3) in "
            f"only 24 steps in all, {TOO_FEW_TO_TELL.format(max_lr='0.003')}",
        ),
        (
            [2.4839, 2.5918],
            0.003,
            14,
            Start(2.41, 0.1, 0.1 * (32 / 200) ** 0.5),
            f"the training loss went from 2.41 at the first step to 2.59 in the last epoch (guessing scores 2.3) in "
            f"only 14 steps in all, {TOO_FEW_TO_TELL.format(max_lr='0.003')}",
        ),
        (
            [4.6851, 4.5622, 4.4207],
            1e-6,
            45,
            Start(5.25, 0.42, 0.42 * (32 / 500) ** 0.5),
            f"the training loss went from 5.25 at the first step to 4.42 in the last epoch, falling from an untrained "
            f"network's start far above {GUESSING}: {BARELY_MOVED} (this run's is 1e-06)",
        ),
        (
            [2.0],
            0.002,
            30,
            None,
            f"the training loss went from 2 to 2, below {GUESSING}: the model fits its training batches, but 30 steps "
            f"in all were too few: raise train.epochs or data.train_limit, or lower train.batch_size",
        ),
        (
            [2.3, 4.0, 2.3],
            0.01,
            30,
            None,
            "the training loss went from 2.3 to 2.3 (highest 4; guessing scores 2.3): it diverged, so lower max_lr "
            "(this run's is 0.01)",
        ),
        (
            [3.83, 4.08],
            0.001,
            26,
            Start(4.85, 0.55, 0.55 * (16 / 200) ** 0.5),
            "the training loss went from 4.85 at the first step to 4.08 in the last epoch (highest 4.08; guessing "
            "scores 2.3): it diverged, so lower max_lr (this run's is 0.001)",
        ),
    ],
    ids=[
        "fell-in-enough-steps",
        "flat",
        "fell-in-the-first-epoch",
        "too-few-steps-to-tell",
        "too-few-steps-to-tell-a-rise-within-the-noise",
        "few-steps-falling-clearly-far-above-guessing",
        "one-epoch-below-guessing",
        "a-peak-between",
        "a-rise-just-past-one-standard-error",
    ],
)
def test_the_chance_advice_in_full(train_losses, max_lr, steps, start, advice):
    """Whole messages: a direction for max_lr only where the run tells it (the first epoch's 4.62
    after a start of 4.9 was said never to have moved; in 24 steps of SGD at 0.003, 4.85 to 4.76,
    "raise" was advised, and 0.01 ended at 8.76, 0.001 at 4.25, while 4 epochs at 0.003 learned;
    ResNet18-GN rising within the noise in 14 steps was told to raise it, and ended higher), a
    peak in the middle epoch is a blow-up, and two epochs one standard error of their difference
    apart differ."""
    assert likely_cause([{"train_loss": loss} for loss in train_losses], 10, max_lr, steps, start) == advice


@pytest.mark.parametrize(
    ("train_losses", "steps", "longer"),
    [([3.65, 2.58], 50, False), ([4.9, 4.8], 24, False), ([2.6, 2.58], 24, True)],
    ids=["fell-in-enough-steps", "did-not-fall-in-few-steps", "fell-from-the-start-in-few-steps"],
)
def test_a_run_whose_test_loss_blew_up_is_advised_more_steps_only_where_it_fell_in_few(train_losses, steps, longer):
    """More steps besides a smaller max_lr where the training loss fell clearly from the start
    (not from the first epoch's mean) in under 50 steps; not where it did not fall, nor in 50."""
    history = [{"train_loss": loss, "test_loss": test} for loss, test in zip(train_losses, [52.4, 6.36])]
    advice = likely_cause(history, 10, 0.005, steps, Start(4.85, 0.55))
    assert advice.startswith(
        f"the training loss went from 4.85 at the first step to {train_losses[-1]:.3g} in the last epoch, but the test "
        "loss reached 52.4 (guessing scores 2.3): it diverged, so lower max_lr (this run's is 0.005)"
    )
    assert advice.endswith(f", or, as it fell in only {steps} steps in all, {LONGER}") == longer
    assert advice.endswith("(this run's is 0.005)") != longer


def test_a_start_far_above_guessing_whose_test_loss_blew_up_diverged():
    """A test loss blown up is read against the start, not the first epoch's mean: 9.0 at the
    first step, then 9.5 and 9.4, test loss 50: "began far off and never moved" was said."""
    history = [{"train_loss": 9.5, "test_loss": 50.0}, {"train_loss": 9.4, "test_loss": 40.0}]
    assert likely_cause(history, 10, 0.01, 60, Start(9.0)) == (
        "the training loss went from 9 at the first step to 9.4 in the last epoch, but the test loss reached 50 "
        "(guessing scores 2.3): it diverged, so lower max_lr (this run's is 0.01)"
    )


def test_a_rise_above_a_low_start_is_read_against_guessings_loss_too():
    """A start below guessing's rises clearly only past 5% of guessing's, not 10% of the start."""
    assert not Start(1.0).risen_above([1.11], math.log(10))
    assert Start(1.0).risen_above([1.12], math.log(10))


@pytest.mark.parametrize("test_losses", [[float("nan"), 9.0], [9.0, float("nan")], [3.0, float("inf")]])
def test_a_test_loss_not_finite_in_any_epoch_is_divergence(test_losses):
    """The test loss was read by its maximum, which a NaN in any epoch but the first hides."""
    history = [{"train_loss": 4.0, "test_loss": loss} for loss in test_losses]
    found = diverged(history, 10, 0.01, Start(4.6, 0.5))
    bad = next(loss for loss in test_losses if not math.isfinite(loss))
    assert found is not None and f"the test loss reached {bad:.3g}" in found
    assert f"the test loss reached {bad:.3g}" in likely_cause(history, 10, 0.01, 60, Start(4.6, 0.5))


def test_a_loss_falling_in_few_steps_is_advised_more_of_them():
    """4 steps in all (300 images in batches of 150, 2 epochs) at max_lr 0.001: 4.38, then epochs
    of 4.54 and 3.04, were told only to raise max_lr, and a raised one ended higher."""
    advice = likely_cause([{"train_loss": 4.54}, {"train_loss": 3.04}], 10, 0.001, 4, Start(4.38, 0.1))
    assert advice.endswith(f"in only 4 steps in all, {TOO_FEW_TO_TELL.format(max_lr='0.001')}")


def test_a_run_whose_test_loss_blew_up_diverged_though_its_rise_lay_within_the_noise():
    """300 images in batches of 8 at Adam max_lr 0.01: 3.71, then 3.94, within the few images'
    noise, but the test loss reached 51.9 at the peak; the run passed."""
    history = [{"train_loss": 3.708, "test_loss": 51.9}, {"train_loss": 3.936, "test_loss": 8.1}]
    assert diverged(history, 10, 0.01, Start(3.9, 0.55)) == (
        "training diverged: the last epoch's training loss is 3.94, above 1.5 times guessing's 2.3, and the test "
        "loss reached 51.9, so lower train.max_lr (this run's is 0.01) or pick it with lr_find"
    )


@pytest.mark.parametrize(
    ("start", "losses", "failed"),
    [
        (2.45, [5.38, 4.74], True),
        (2.45, [30.0, 24.0], True),
        (4.71, [4.71, 3.86, 4.5], True),
        (4.71, [4.71, float("nan")], True),
        (4.9, [4.85, 4.62], False),
        (4.71, [3.86], False),
        (12.0, [11.5, 11.0], False),
        (30.5, [30.0, 24.0], False),
    ],
    ids=[
        "rose-above-the-start-then-fell",
        "blown-up",
        "rising-at-the-end",
        "not-finite",
        "falling-from-its-start",
        "one-epoch-below-its-start",
        "falling-from-a-start-above-4x",
        "falling-from-a-start-far-above",
    ],
)
def test_a_run_diverged_when_its_loss_rose_above_the_untrained_networks_start(start, losses, failed):
    """ResNet18-GN at Adam max_lr 0.035 (2.45 at the first step, then 5.38 and 4.74) passed as a
    run falling from an untrained start; one that began far above 4 x guessing's and fell from
    there was called diverged."""
    found = diverged([{"train_loss": loss} for loss in losses], 10, 0.035, Start(start))
    assert (found is not None) == failed
    if losses == [5.38, 4.74]:
        assert found == (
            "training diverged: the last epoch's training loss is 4.74, above 1.5 times guessing's 2.3 and the "
            "untrained network's 2.45 at the first step, so lower train.max_lr (this run's is 0.035) or pick it with "
            "lr_find"
        )


def test_the_start_is_the_untrained_networks_loss_on_the_first_steps_batch():
    """Read off the first step's forward pass, before its update: not another forward pass."""
    model, train = tiny_model(), random_split(48, 3)
    untrained = copy.deepcopy(model)
    images, labels = next(iter(DeviceLoader(train, 16, CPU, shuffle=True, seed=5)))
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(module.training))
    result = fit(
        cpu_recipe(train=config(epochs=2)),
        model,
        DeviceLoader(train, 16, CPU, shuffle=True, seed=5),
        DeviceLoader(train, 48, CPU),
        max_lr=1e-2,
        num_classes=10,
    )
    losses = nn.functional.cross_entropy(untrained(images), labels, reduction="none")
    assert result.start.loss == pytest.approx(losses.mean().item(), rel=1e-6)
    assert result.start.error == pytest.approx(losses.std().item() / 4, rel=1e-5)  # of 16 images
    assert calls == [True] * 3 + [False] + [True] * 3 + [False]  # 3 steps and a test pass per epoch
