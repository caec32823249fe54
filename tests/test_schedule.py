import math

import pytest
import torch

from cifar.config import OneCycleConfig
from cifar.errors import ConfigError
from cifar.training.schedule import one_cycle


def run_schedule(max_lr, epochs, steps_per_epoch, config):
    """The LR of every optimizer step, stepping the scheduler after each as the engine does."""
    optimizer = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=max_lr)
    scheduler = one_cycle(optimizer, max_lr, epochs, steps_per_epoch, config)
    lrs = []
    for _ in range(epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("anneal", ["linear", "cos"])
def test_reference_schedule_start_peak_end(anneal):
    max_lr, epochs, steps = 0.02, 24, 98
    config = OneCycleConfig(max_at_epoch=5, div_factor=100, final_div_factor=100, anneal_strategy=anneal)
    lrs = run_schedule(max_lr, epochs, steps, config)
    assert len(lrs) == epochs * steps
    assert lrs[0] == pytest.approx(max_lr / 100)
    peak = 5 * steps - 1  # the last step of epoch 5
    assert lrs[peak] == pytest.approx(max_lr, rel=1e-9)
    assert max(lrs) == pytest.approx(max_lr, rel=1e-9)
    assert all(lrs[i] < lrs[i + 1] for i in range(peak))
    assert all(lrs[i] >= lrs[i + 1] for i in range(peak, len(lrs) - 1))
    assert lrs[-1] == pytest.approx(max_lr / 100 / 100)
    assert min(lrs) > 0, "the LR must never be negative (the reference run logged -5.9e-06)"


@pytest.mark.parametrize("anneal", ["linear", "cos"])
def test_the_lr_moves_from_start_to_peak_to_end_along_the_anneal_strategy(anneal):
    """5 epochs of 4 steps, peak at the last step of epoch 2 (step 7): every step's LR, exactly."""
    max_lr = 0.02
    config = OneCycleConfig(max_at_epoch=2, div_factor=100, final_div_factor=100, anneal_strategy=anneal)
    start, end = max_lr / 100, max_lr / 100 / 100

    def between(low, high, fraction):
        if anneal == "cos":
            fraction = (1 - math.cos(math.pi * fraction)) / 2
        return low + (high - low) * fraction

    expected = [between(start, max_lr, step / 7) for step in range(8)] + [
        between(max_lr, end, step / 12) for step in range(1, 13)
    ]
    assert run_schedule(max_lr, 5, 4, config) == pytest.approx(expected, rel=1e-9)


def test_three_phase_returns_to_the_start_before_annealing():
    lrs = run_schedule(0.01, 10, 5, OneCycleConfig(max_at_epoch=3, three_phase=True))
    assert lrs[3 * 5 - 1] == pytest.approx(0.01)
    assert lrs[6 * 5 - 2] == pytest.approx(0.01 / 100)
    assert lrs[-1] == pytest.approx(0.01 / 100 / 100)
    assert min(lrs) > 0


@pytest.mark.parametrize(
    ("epochs", "three_phase", "later_peak"),
    [
        (3, False, "set train.onecycle.max_at_epoch to 2"),
        # raising the peak alone was refused in turn: it needs an epoch after it
        (2, False, "set train.onecycle.max_at_epoch to 2 and train.epochs to 3 or more"),
        (4, True, "set train.onecycle.max_at_epoch to 2 and train.epochs to 5 or more"),
    ],
)
def test_a_single_warm_up_step_is_refused_with_a_fix_that_works(epochs, three_phase, later_peak):
    optimizer = torch.optim.Adam(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(ConfigError) as refused:
        one_cycle(optimizer, 0.01, epochs, 1, OneCycleConfig(max_at_epoch=1, three_phase=three_phase))
    assert str(refused.value) == (
        "train.onecycle.max_at_epoch = 1 with 1 step per epoch leaves OneCycle no room to warm up; lower "
        f"train.batch_size to at most half the training images, or {later_peak}"
    )
    fixed = OneCycleConfig(max_at_epoch=2, three_phase=three_phase)
    one_cycle(optimizer, 0.01, max(epochs, 5 if three_phase else 3), 1, fixed)


def test_steps_past_the_end_leave_the_last_lr_in_place():
    """The reference run stepped once too often and logged a negative final LR (-5.9e-06)."""
    optimizer = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=0.01)
    scheduler = one_cycle(optimizer, 0.01, 3, 4, OneCycleConfig(max_at_epoch=1))
    for _ in range(3 * 4 + 5):
        optimizer.step()
        scheduler.step()
    assert scheduler.last_epoch == 3 * 4 - 1
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 / 100 / 100)


def test_within_the_schedule_a_step_to_a_given_step_number_goes_there_as_in_torch():
    """Until its end the schedule is torch's OneCycleLR, its deprecated step(epoch) included."""
    config = OneCycleConfig(max_at_epoch=1)
    optimizer = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=0.01)
    scheduler = one_cycle(optimizer, 0.01, 3, 4, config)
    optimizer.step()
    with pytest.warns(UserWarning, match="epoch parameter"):
        scheduler.step(6)
    assert scheduler.last_epoch == 6
    assert optimizer.param_groups[0]["lr"] == pytest.approx(run_schedule(0.01, 3, 4, config)[6], rel=1e-9)


def test_a_restored_schedule_goes_on_where_it_stopped():
    def schedule():
        optimizer = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=0.01)
        return optimizer, one_cycle(optimizer, 0.01, 3, 4, OneCycleConfig(max_at_epoch=1))

    optimizer, scheduler = schedule()
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    _, restored = schedule()
    restored.load_state_dict(scheduler.state_dict())
    for stepped in (scheduler, restored):
        for _ in range(10):
            stepped.step()
    assert restored.get_last_lr() == scheduler.get_last_lr() and restored.last_epoch == 3 * 4 - 1


@pytest.mark.parametrize("cycle_momentum", [True, False])
def test_momentum_is_cycled_only_where_asked(cycle_momentum):
    """OneCycle set SGD's momentum itself: train.momentum 0 and 0.5 trained alike to the last digit."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.5)
    schedule = one_cycle(optimizer, 0.1, 4, 5, OneCycleConfig(max_at_epoch=2, cycle_momentum=cycle_momentum))
    momentums = set()
    for _ in range(20):
        momentums.add(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        schedule.step()
    assert (momentums == {0.5}) is not cycle_momentum
    assert max(momentums) == (0.95 if cycle_momentum else 0.5)
