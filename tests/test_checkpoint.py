import copy
import hashlib
import io
import logging
import os
import re
import signal
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import cifar.runtime
import stages.train
from cifar.atomic import STOP_SIGNALS, signal_name
from cifar.cli import kept_for_inspection, stop_signals
from cifar.config import DataConfig, OneCycleConfig, Params, TrainConfig
from cifar.dataset import load_split, save_dataset
from cifar.errors import OutputError, TrainingError
from cifar.ingest.sources import import_dataset
from cifar.training.checkpoint import (
    EPOCH_ROW_KEYS,
    FLOAT32_MAX,
    CheckpointFile,
    TrainingState,
    checkpoint_bound,
    loaded_source_digest,
    read_checkpoint,
    refuse_a_linked_checkpoint,
    structure_bound,
    write_checkpoint,
)
from cifar.training.engine import fit
from cifar.training.loader import DeviceLoader
from cifar.training.schedule import one_cycle
from cifar.training.stop import StopRequest
from generated import CPU, cpu_recipe, deflate_records, random_split
from stages import paths

CONFIG = TrainConfig(epochs=3, batch_size=16, onecycle=OneCycleConfig(max_at_epoch=1))


class SmallNet(nn.Module):
    """Conv + BatchNorm, so running statistics must be restored too."""

    def __init__(self, sigterm_at_step=None, sigterm_at_test_pass=None):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 10),
        )
        self.sigterm_at_step, self.steps = sigterm_at_step, 0
        self.sigterm_at_test_pass, self.test_passes = sigterm_at_test_pass, 0

    def forward(self, x):
        self.steps += self.training
        self.test_passes += not self.training  # one batch of the test split per epoch
        if self.training and self.steps == self.sigterm_at_step:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, arriving mid-step
        if not self.training and self.test_passes == self.sigterm_at_test_pass:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.body(x)


def train(model, checkpoint=None, stop=None):
    torch.manual_seed(0)
    loaders = (
        DeviceLoader(random_split(48, 0), 16, CPU, shuffle=True, seed=5),
        DeviceLoader(random_split(32, 1), 32, CPU),
    )
    return fit(
        cpu_recipe(train=CONFIG),
        model,
        *loaders,
        max_lr=1e-2,
        num_classes=10,
        checkpoint=checkpoint,
        stop=stop,
    )


def without_time(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def fresh_model():
    torch.manual_seed(0)
    return SmallNet()


@pytest.mark.parametrize(
    ("workspace", "hint"),
    [
        # after `dvc repro -f` a plain `dvc repro` found train up to date and left the checkpoint unused
        (
            ".",
            "the checkpoint holds every completed epoch: run `dvc repro` (or `dvc repro -f -s train` where `dvc ",
        ),
        # `dvc exp run --temp`, a queued experiment: DVC 3.67 runs them in a copy inside the
        # project, which it deletes, checkpoint and all
        (
            ".dvc/tmp/exps/standalone/tmp5y1ox2ab",
            "the checkpoint was in the copy of the workspace that DVC ran this experiment in, which DVC deletes: run "
            "the experiment again, which trains from epoch 1",
        ),
        # run by hand from another DVC project's stage, whose DVC_ROOT it inherits
        ("checkout", "the checkpoint holds every completed epoch: run `python -m stages.train`"),
        # `dvc exp run` in the workspace, which names the experiment in DVC_EXP_NAME
        (
            "exp-run",
            "the checkpoint holds every completed epoch: run `dvc exp run` (no -S: params.yaml holds what it set; or "
            "`dvc exp run -f -s train` where it finds nothing to run) to resume from epoch 1 and record the experiment",
        ),
    ],
    ids=["dvc-repro", "dvc-exp-run-temp", "inherited-dvc-root", "dvc-exp-run"],
)
def test_the_stop_line_says_how_to_go_on_where_dvc_ran_the_stage(tmp_path, monkeypatch, workspace, hint):
    """Under `dvc exp run --temp` the line said `dvc repro` resumes, but the checkpoint was in
    DVC's temporary copy, which DVC deleted: the next run trained from epoch 1. After `dvc exp
    run` in the workspace, `dvc repro` resumed it but recorded no experiment."""
    if workspace == "exp-run":
        monkeypatch.setenv("DVC_EXP_NAME", "bushy-tarn")
        workspace = "."
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    workspace = tmp_path / workspace
    workspace.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(workspace)
    model = fresh_model()
    model.sigterm_at_step = 2
    with StopRequest().on_signals(signal.SIGTERM) as stop, pytest.raises(TrainingError) as stopped:
        train(model, CheckpointFile(workspace / ".checkpoints" / "train.pt", {"run": 1}), stop)
    assert str(stopped.value).startswith(f"stopped by SIGTERM after step 2 of epoch 1; {hint}"), str(stopped.value)


@pytest.mark.parametrize(
    ("epoch", "goes_on"), [(3, "resume from epoch 3"), (4, "write the outputs from its 3 epochs")], ids=["last", "past"]
)
def test_a_run_stopped_in_or_after_its_last_epoch_is_told_what_is_left(tmp_path, monkeypatch, epoch, goes_on):
    """Stopped in its last epoch it resumes that epoch; stopped after it, only the outputs are left."""
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert CheckpointFile(tmp_path / "train.pt", {"run": 1}).resume_hint(epoch, 3).endswith(f") to {goes_on}")


@pytest.mark.parametrize(
    ("workspace", "said"),
    [
        (".", "(`dvc checkout --force` puts back the recorded ones)"),
        (".dvc/tmp/exps/standalone/tmp5y1ox2ab", "the workspace's own outputs are untouched"),
    ],
    ids=["dvc-repro", "dvc-exp-run-temp"],
)
def test_a_failed_run_says_where_its_outputs_went_where_dvc_ran_the_stage(tmp_path, monkeypatch, workspace, said):
    """Under `dvc exp run --temp` a failed train advised `dvc checkout --force` to put back the
    recorded outputs, of a workspace it never touched: its outputs were in DVC's copy, deleted."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    (tmp_path / workspace).mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp_path / workspace)
    assert said in kept_for_inspection()
    assert ("checkout" in kept_for_inspection()) == (workspace == ".")


def test_sigterm_in_the_last_epochs_test_pass_stops_with_the_checkpoint_kept(tmp_path, monkeypatch):
    """It came after the last step's check: train exited 0 and replaced its outputs, the signal unsaid.
    Then the line said to resume from the last epoch, which was done: the rerun only writes the outputs."""
    monkeypatch.delenv("DVC_ROOT", raising=False)
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    model = SmallNet(sigterm_at_test_pass=CONFIG.epochs)
    with StopRequest().on_signals(signal.SIGTERM) as stop, pytest.raises(TrainingError) as stopped:
        train(model, checkpoint, stop)
    assert str(stopped.value) == (
        f"stopped by SIGTERM after epoch {CONFIG.epochs}; the checkpoint holds every completed epoch: run `python -m "
        f"stages.train` (or `dvc repro -f -s train`) to write the outputs from its {CONFIG.epochs} epochs"
    )
    assert read_checkpoint(checkpoint.path)["state"]["epoch"] == CONFIG.epochs


def test_sigterm_stops_after_the_step_and_a_resumed_run_matches_an_uninterrupted_one(tmp_path, caplog, monkeypatch):
    """Run outside DVC, the line named `dvc repro`, which found train's outputs (unchanged by
    the stopped run) up to date and resumed nothing."""
    monkeypatch.delenv("DVC_ROOT", raising=False)
    uninterrupted_model = fresh_model()
    uninterrupted = train(uninterrupted_model)

    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    interrupted_model = fresh_model()
    interrupted_model.sigterm_at_step = 5  # epoch 2, step 2 (3 steps per epoch)
    with StopRequest().on_signals(signal.SIGTERM) as stop, pytest.raises(TrainingError) as stopped:
        train(interrupted_model, checkpoint, stop)
    assert "stopped by SIGTERM after step 2 of epoch 2" in str(stopped.value)
    assert "run `python -m stages.train` (or `dvc repro -f -s train`) to resume from epoch 2" in str(stopped.value)
    assert read_checkpoint(checkpoint.path)["state"]["epoch"] == 1

    caplog.set_level(logging.INFO)
    resumed_model = fresh_model()
    resumed = train(resumed_model, checkpoint)
    assert f"resuming from {checkpoint.path}: 1 of 3 epochs done" in caplog.messages
    assert without_time(resumed.history) == without_time(uninterrupted.history)
    assert resumed.step_lrs == uninterrupted.step_lrs
    for name, tensor in uninterrupted_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name


def test_a_checkpoint_of_different_params_is_not_resumed(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = tmp_path / "checkpoint.pt"
    train(fresh_model(), CheckpointFile(path, {"params": {"epochs": 3}, "data": "abc"}))
    assert CheckpointFile(path, {"params": {"epochs": 4}, "data": "abc"}).load(epochs=4) is None
    # A key that only one of the fingerprints has is a difference too.
    assert CheckpointFile(path, {"params": {"epochs": 3}, "data": "abc", "code": "def"}).load(epochs=4) is None
    assert caplog.messages[-2:] == [
        f"not resuming: {path} is from a run with different {keys}; training from scratch"
        for keys in ("params", "code")
    ]


def test_a_finished_checkpoint_finishes_the_run_and_a_damaged_one_starts_over(tmp_path, caplog):
    """The train stage removes a finished run's checkpoint once its outputs are written; one
    still there failed to write them (a full disk), and re-running writes them from it."""
    caplog.set_level(logging.INFO)
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    finished_model = fresh_model()
    finished = train(finished_model, checkpoint)
    caplog.clear()
    resumed_model = SmallNet()
    resumed = train(resumed_model, checkpoint)
    assert caplog.messages == [f"finishing from {checkpoint.path}: all 3 epochs were done; writing the outputs"]
    assert resumed.history == finished.history and resumed.step_lrs == finished.step_lrs
    for name, tensor in finished_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name
    checkpoint.path.write_bytes(checkpoint.path.read_bytes()[:500])
    assert checkpoint.load(epochs=3) is None
    assert caplog.messages[-1].startswith(
        f"not resuming: {checkpoint.path} is unreadable (not the zip archive torch.save writes: "
    )
    assert caplog.messages[-1].endswith("); training from scratch")


class RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (print, ("code run by loading a checkpoint",))


@pytest.mark.parametrize("inside", ["state", "fingerprint"])
def test_a_checkpoint_that_would_run_code_when_loaded_is_not_loaded(tmp_path, caplog, monkeypatch, capsys, inside):
    """Weights only, even where the environment tells torch to unpickle anything by default:
    the file around the state as much as the state."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    caplog.set_level(logging.INFO)
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    history = [{"epoch": 1, "note": RunsCodeWhenUnpickled()}] if inside == "state" else history_of(1)
    state = TrainingState(1, {}, {}, {}, torch.Generator().get_state(), history)
    fingerprint = RunsCodeWhenUnpickled() if inside == "fingerprint" else {"run": 1}
    write_checkpoint(checkpoint.path, {"fingerprint": fingerprint, "state": state.__dict__})
    assert checkpoint.load(epochs=3) is None
    assert "code run by loading" not in capsys.readouterr().out
    assert caplog.messages[-1].startswith(f"not resuming: {checkpoint.path} is unreadable (Weights only load failed")


def history_of(epochs: int) -> list[dict]:
    """The rows of a history of `epochs` epochs done, as a checkpoint must hold them."""
    return [dict.fromkeys(EPOCH_ROW_KEYS, 0.5) | {"epoch": epoch} for epoch in range(1, epochs + 1)]


# The untrained network's loss at the first step and its standard error, which a checkpoint
# holds once an epoch is done.
START = {"start_loss": 2.4, "start_error": 0.05}


@pytest.mark.parametrize(("epoch", "resumed"), [(-1, False), (0, True), (3, True), (4, False)])
def test_a_checkpoint_claiming_epochs_the_run_does_not_have_is_not_resumed(tmp_path, caplog, epoch, resumed):
    """A damaged or hand-made file may claim any count; a run has 0 to train.epochs done."""
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    start = START if epoch > 0 else {}
    saved = TrainingState(epoch, {}, {}, {}, torch.Generator().get_state(), history_of(epoch), [], None, **start)
    checkpoint.save(saved)
    caplog.set_level(logging.INFO)
    state = checkpoint.load(epochs=3)
    if resumed:
        assert state.epoch == epoch and caplog.messages == []
    else:
        assert state is None
        assert caplog.messages == [
            f"not resuming: {checkpoint.path} claims {epoch} of 3 epochs done; training from scratch"
        ]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda stored: stored.pop("fingerprint"), "is unreadable ('fingerprint')"),
        (lambda stored: stored.update(fingerprint="run 1"), "is unreadable (its fingerprint is 'run 1', not what"),
        # compared with `!=`: a tensor's answer, a tensor, ended train in a RuntimeError at every run
        (
            lambda stored: stored.update(fingerprint={"run": torch.tensor([1, 1])}),
            "is unreadable (its fingerprint holds values that are not what train saves)",
        ),
        (lambda stored: stored["state"].update(epoch="1"), "is unreadable (its epoch is '1', not what train saves)"),
        (lambda stored: stored["state"].update(epoch=True), "is unreadable (its epoch is True, not what train saves)"),
        (lambda stored: stored["state"].update(history=7), "is unreadable (its history is 7, not what train saves)"),
        (lambda stored: stored["state"].update(history=[1]), "is unreadable (its history holds rows that are not"),
        (lambda stored: stored["state"].update(chance_warning=0), "is unreadable (its chance_warning is 0, not what"),
        (lambda stored: stored["state"].update(chance_warning=""), "is unreadable (its chance_warning is '', not what"),
        (lambda stored: stored["state"].update(model=[]), "is unreadable (its model is [], not what train saves)"),
        (
            lambda stored: stored["state"].update(optimizer=1),
            "is unreadable (its optimizer is 1, not what train saves)",
        ),
        (lambda stored: stored["state"].update(scheduler="s"), "is unreadable (its scheduler is 's', not what train"),
        (lambda stored: stored["state"].update(generator=[1]), "is unreadable (its generator is [1], not what train"),
        (
            lambda stored: stored["state"].update(step_lrs={}),
            "is unreadable (its step_lrs is {}, not what train saves)",
        ),
    ],
    ids=[
        "no-fingerprint",
        "text-fingerprint",
        "tensor-in-fingerprint",
        "text-epoch",
        "bool-epoch",
        "number-history",
        "bad-row",
        "warning",
        "empty-warning",
        "model",
        "optimizer",
        "scheduler",
        "generator",
        "step-lrs",
    ],
)
def test_a_checkpoint_not_laid_out_as_train_saves_it_is_not_resumed(tmp_path, caplog, damage, reason):
    """Each ended in a raw KeyError, AttributeError or TypeError in the train stage."""
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    checkpoint.save(TrainingState(1, {}, {}, {}, torch.Generator().get_state(), history_of(1), **START))
    stored = read_checkpoint(checkpoint.path)
    damage(stored)
    write_checkpoint(checkpoint.path, stored)
    caplog.set_level(logging.INFO)
    assert checkpoint.load(epochs=3) is None
    assert caplog.messages[-1].startswith(f"not resuming: {checkpoint.path} {reason}"), caplog.messages


@pytest.mark.parametrize(
    ("history", "step_lrs", "reason"),
    [
        ([], [0.1, 0.1], "holds 0 epochs of history for 1 epochs done"),
        (history_of(2), [0.1, 0.1], "holds 2 epochs of history for 1 epochs done"),
        ([{}], [0.1, 0.1], "holds a history row 1 that train did not write ({})"),
        ([{"epoch": 1, "test_loss": "x"}], [0.1, 0.1], "holds a history row 1 that train did not write"),
        (history_of(1), ["x", "x"], "holds step learning rates that are not finite numbers above 0"),
        (history_of(1), [0.1], "holds 1 step learning rates for 2 steps done"),
        ([{"epoch": 1}], [0.1, 0.1], "holds a history row 1 that train did not write ({'epoch': 1})"),
        ([history_of(1)[0] | {"test_loss": float("nan")}], [0.1, 0.1], "holds a history row 1 that train did not"),
        (history_of(1), [float("nan"), 0.1], "holds step learning rates that are not finite numbers above 0"),
        (history_of(1), [-0.1, 0.1], "holds step learning rates that are not finite numbers above 0"),
    ],
    ids=[
        "no-history",
        "history-too-long",
        "empty-row",
        "text-in-a-row",
        "text-step-lrs",
        "steps-missing",
        "epoch-only-row",
        "nan-in-a-row",
        "nan-step-lr",
        "negative-step-lr",
    ],
)
def test_a_checkpoint_that_disagrees_with_itself_is_not_resumed(tmp_path, caplog, history, step_lrs, reason):
    """Resumed, an empty history trained epochs on top of the stored ones and reported them as
    the run's; a row of its own made NaN metrics; two rows for one epoch trained nothing."""
    model = nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = one_cycle(optimizer, 0.1, 3, 2, OneCycleConfig(max_at_epoch=1))
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    generator = torch.Generator()
    state = [model.state_dict(), optimizer.state_dict(), scheduler.state_dict(), generator.get_state()]
    checkpoint.save(TrainingState(1, *state, history, step_lrs, **START))
    caplog.set_level(logging.INFO)
    assert checkpoint.resume(3, model, optimizer, scheduler, generator) is None
    assert caplog.messages[-1].startswith(f"not resuming: {checkpoint.path} {reason}"), caplog.messages


@pytest.mark.parametrize(
    "edit",
    [{"betas": (0.1, 0.5)}, {"lr": 1000.0}, {"betas": (0.95, 0.999), "lr": 0.0}],
    ids=["adam-betas", "lr", "lr-zero"],
)
def test_a_checkpoints_step_settings_are_taken_from_the_schedule_and_the_run(tmp_path, edit):
    """Adam's betas (OneCycle cycles the first) and the group's LR were loaded from the file
    as they stood: an edited second beta trained on, unnoticed, for the rest of the run."""
    uninterrupted_model = fresh_model()
    uninterrupted = train(uninterrupted_model)
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    interrupted_model = fresh_model()
    interrupted_model.sigterm_at_step = 5
    with StopRequest().on_signals(signal.SIGTERM) as stop, pytest.raises(TrainingError):
        train(interrupted_model, checkpoint, stop)
    stored = read_checkpoint(checkpoint.path)
    stored["state"]["optimizer"]["param_groups"][0].update(edit)
    write_checkpoint(checkpoint.path, stored)

    resumed_model = fresh_model()
    resumed = train(resumed_model, checkpoint)
    assert resumed.step_lrs == uninterrupted.step_lrs
    for name, tensor in uninterrupted_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name


@pytest.mark.parametrize(("setting", "value"), [("weight_decay", 5.0), ("max_lr", 1.0)])
def test_a_checkpoint_whose_optimizer_settings_are_not_the_runs_is_not_resumed(tmp_path, caplog, setting, value):
    """Its optimizer state carried its own weight decay or OneCycle peak, which training took
    over from params.yaml's; the run failed at chance, or diverged, blaming train.max_lr."""

    def run_objects():
        model = nn.Linear(2, 2)
        optimizer = torch.optim.Adam(model.parameters(), weight_decay=1e-7)
        return model, optimizer, one_cycle(optimizer, 0.1, 3, 2, OneCycleConfig(max_at_epoch=1)), torch.Generator()

    model, optimizer, scheduler, generator = run_objects()
    optimizer.param_groups[0][setting] = value
    for _ in range(2):  # the first epoch's two steps, as its step LRs say
        optimizer.step()
        scheduler.step()
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    state = [model.state_dict(), optimizer.state_dict(), scheduler.state_dict(), generator.get_state()]
    checkpoint.save(TrainingState(1, *state, history_of(1), [0.1, 0.1], **START))
    model, optimizer, scheduler, generator = run_objects()
    caplog.set_level(logging.INFO)
    assert checkpoint.resume(3, model, optimizer, scheduler, generator) is None
    expected = {"weight_decay": "1e-07", "max_lr": "0.1"}[setting]
    assert caplog.messages[-1] == (
        f"not resuming: {checkpoint.path} matches this run but does not load into it (its optimizer's {setting} is "
        f"{value}, this run's {expected}); training from scratch"
    )
    assert optimizer.param_groups[0][setting] == float(expected)


def schedule_at(step):
    return lambda state: state.scheduler.update(last_epoch=step)


def adam_steps(count):
    return lambda state: state.optimizer["state"][0].update(step=torch.tensor(float(count)))


def negative_second_moment(state):
    state.optimizer["state"][0]["exp_avg_sq"].neg_().sub_(1)


def maximizing(state):
    state.optimizer["param_groups"][0]["maximize"] = True


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (schedule_at(0), "holds a schedule at step 0 for 2 steps done"),
        (adam_steps(1e9), "holds optimizer moments of 1000000000.0 steps for 2 steps done"),
        (adam_steps(-1), "holds optimizer moments of -1.0 steps for 2 steps done"),
        (negative_second_moment, "holds a negative second moment (exp_avg_sq), which Adam never makes"),
        (maximizing, "matches this run but does not load into it (its optimizer's maximize is True, this run's False)"),
        (lambda state: state.step_lrs.__setitem__(0, 0.0), "holds step learning rates that are not finite numbers"),
        (lambda state: state.scheduler.pop("total_steps"), "holds a schedule at step 2 for 2 steps done"),
        (
            lambda state: state.scheduler.pop("total_steps") and state.scheduler.update(last_epoch=0),
            "holds a schedule at step 0 for 2 steps done",
        ),
        (lambda state: state.optimizer.pop("state"), "matches this run but does not load into it ('state')"),
        (
            lambda state: state.optimizer.pop("param_groups"),
            "matches this run but does not load into it ('param_groups')",
        ),
        (
            lambda state: state.optimizer["state"].update({0: [1.0]}),
            "matches this run but does not load into it",
        ),
    ],
    ids=[
        "schedule-restarted",
        "adam-steps-1e9",
        "adam-steps-minus-1",
        "negative-second-moment",
        "maximize",
        "zero-step-lr",
        "schedule-without-length",
        "schedule-without-length-at-0",
        "no-moments",
        "no-settings",
        "moments-not-a-mapping",
    ],
)
def test_a_checkpoint_whose_optimizer_or_schedule_state_is_not_its_runs_is_not_resumed(
    tmp_path, caplog, damage, reason
):
    """Resumed, each trained on without a word (a repeated warm-up, Adam's bias correction of
    another step, gradient ascent), or ended in a raw ZeroDivisionError inside torch's Adam."""

    def run_objects():
        torch.manual_seed(0)
        model = nn.Linear(2, 2)
        optimizer = torch.optim.Adam(model.parameters())
        return model, optimizer, one_cycle(optimizer, 0.1, 3, 2, OneCycleConfig(max_at_epoch=1)), torch.Generator()

    model, optimizer, scheduler, generator = run_objects()
    for _ in range(2):  # the first epoch's two steps
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        scheduler.step()
    state = TrainingState(
        1,
        model.state_dict(),
        optimizer.state_dict(),
        scheduler.state_dict(),
        generator.get_state(),
        history_of(1),
        **START,
    )
    state.step_lrs = [0.1, 0.1]
    damage(state)
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    checkpoint.save(state)
    caplog.set_level(logging.INFO)
    assert checkpoint.resume(3, *run_objects()) is None
    assert caplog.messages[-1].startswith(f"not resuming: {checkpoint.path} {reason}"), caplog.messages


def test_a_checkpoint_whose_adam_second_moment_has_zeros_is_resumed(tmp_path, caplog):
    """A parameter that got no gradient keeps a second moment of exactly 0: a run Adam made."""
    model = nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = one_cycle(optimizer, 0.1, 3, 2, OneCycleConfig(max_at_epoch=1))
    for _ in range(2):
        (model(torch.tensor([[1.0, 0.0]]))[:, 0]).sum().backward()  # row 1 of the weight gets no gradient
        optimizer.step()
        scheduler.step()
    assert (optimizer.state_dict()["state"][0]["exp_avg_sq"] == 0).any()
    generator = torch.Generator()
    state = [model.state_dict(), optimizer.state_dict(), scheduler.state_dict(), generator.get_state()]
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    checkpoint.save(TrainingState(1, *state, history_of(1), [0.1, 0.1], **START))
    caplog.set_level(logging.INFO)
    assert checkpoint.resume(3, model, optimizer, scheduler, generator) is not None, caplog.messages


def test_a_checkpoint_larger_than_its_model_can_take_is_not_read(tmp_path, caplog):
    """A 2 GiB file of zeros (sparse) in the checkpoint's place took train 3.5 GB more to find
    it damaged, on every run."""
    model = nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = one_cycle(optimizer, 0.1, 3, 2, OneCycleConfig(max_at_epoch=1))
    generator = torch.Generator()
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    state = [model.state_dict(), optimizer.state_dict(), scheduler.state_dict(), generator.get_state()]
    checkpoint.save(TrainingState(1, *state, history_of(1), [0.1, 0.1], **START))
    most = checkpoint_bound(model, 3, scheduler.total_steps)
    with checkpoint.path.open("r+b") as stored:
        stored.truncate(most + 1)  # a hole, no disk
    caplog.set_level(logging.INFO)
    assert checkpoint.resume(3, model, optimizer, scheduler, generator) is None
    assert caplog.messages == [
        f"not resuming: {checkpoint.path} takes {most + 1:,} bytes, more than the {most:,} a checkpoint of this "
        "model takes; training from scratch"
    ]


def nan_in(state: TrainingState, part: str) -> None:
    if part == "model":
        state.model["weight"].fill_(float("nan"))
    elif part == "optimizer":
        state.optimizer["state"][0]["exp_avg_sq"].fill_(float("inf"))
    else:
        state.scheduler["_last_lr"] = [float("nan")]


@pytest.mark.parametrize(
    ("part", "first"),
    [("model", "model.weight"), ("optimizer", "optimizer.state.0.exp_avg_sq"), ("scheduler", "scheduler._last_lr.0")],
)
def test_a_checkpoint_holding_nan_or_infinity_is_removed_not_resumed(tmp_path, caplog, part, first):
    """Resumed, such a checkpoint failed at its first step with "training diverged: lower
    train.max_lr", and stayed to fail every re-run the same way."""

    def run_objects():
        torch.manual_seed(0)
        model = nn.Linear(2, 2)
        optimizer = torch.optim.Adam(model.parameters())
        scheduler = one_cycle(optimizer, 0.1, 3, 2, OneCycleConfig(max_at_epoch=1))
        return model, optimizer, scheduler, torch.Generator()

    model, optimizer, scheduler, generator = run_objects()
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = TrainingState(
        1,
        model.state_dict(),
        optimizer.state_dict(),
        scheduler.state_dict(),
        generator.get_state(),
        history_of(1),
        **START,
    )
    nan_in(state, part)
    checkpoint = CheckpointFile(tmp_path / "train.pt", {"run": 1})
    checkpoint.save(state)

    model, optimizer, scheduler, generator = run_objects()
    fresh = copy.deepcopy((model.state_dict(), optimizer.state_dict(), scheduler.state_dict()))
    caplog.set_level(logging.INFO)
    assert checkpoint.resume(3, model, optimizer, scheduler, generator) is None
    assert caplog.messages == [
        f"not resuming: {checkpoint.path} holds NaN or infinity (first in {first}); removed it, training from scratch"
    ]
    assert not checkpoint.path.exists()
    assert repr((model.state_dict(), optimizer.state_dict(), scheduler.state_dict())) == repr(fresh)


def test_a_finished_run_removes_its_checkpoint_and_removing_none_is_fine(tmp_path):
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    checkpoint.save(TrainingState(1, {}, {}, {}, torch.Generator().get_state(), history_of(1), **START))
    checkpoint.remove()
    assert not checkpoint.path.exists()
    checkpoint.remove()


def test_the_signals_that_end_a_process_by_default_stop_a_stage_unless_ignored_as_under_nohup(monkeypatch):
    monkeypatch.setattr(signal, "getsignal", lambda sig: signal.SIG_DFL)
    assert stop_signals() == list(STOP_SIGNALS)
    # each signal whose default ends a process, but SIGINT (KeyboardInterrupt), SIGPIPE and
    # SIGXFSZ, which Python ignores, and the faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL)
    assert {signal_name(sig) for sig in STOP_SIGNALS} == {
        *[
            "SIGTERM",
            "SIGHUP",
            "SIGXCPU",
            "SIGQUIT",
            "SIGABRT",
            "SIGSYS",
            "SIGTRAP",
            "SIGUSR1",
            "SIGUSR2",
            "SIGALRM",
            "SIGVTALRM",
            "SIGPROF",
            "SIGIO",
            "SIGPWR",
            "SIGSTKFLT",
        ],
        "SIGRTMIN",
        *(f"SIGRTMIN+{offset}" for offset in range(1, signal.SIGRTMAX - signal.SIGRTMIN)),
        "SIGRTMAX",
    }
    monkeypatch.setattr(signal, "getsignal", lambda sig: signal.SIG_IGN if sig == signal.SIGHUP else signal.SIG_DFL)
    assert signal.SIGHUP not in stop_signals() and len(stop_signals()) == len(STOP_SIGNALS) - 1
    assert stop_signals(ctrl_c=True)[0] == signal.SIGINT


def test_ctrl_c_ignored_from_the_start_stays_ignored_by_train(monkeypatch):
    """A stage a script starts in the background (`python -m stages.train &`) has SIGINT
    ignored, as Python leaves it; train's stop request took it over, and a Ctrl-C meant for
    the script stopped it."""
    monkeypatch.setattr(signal, "getsignal", lambda sig: signal.SIG_IGN if sig == signal.SIGINT else signal.SIG_DFL)
    assert stop_signals(ctrl_c=True) == list(STOP_SIGNALS)


def test_the_signal_handler_is_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest().on_signals(signal.SIGTERM) as stop:
        assert signal.getsignal(signal.SIGTERM) is stop
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_stops_only_the_run_given_its_request():
    """No module-level flag: a request made for one run leaves another run alone."""
    stopped = StopRequest()
    with stopped.on_signals(signal.SIGTERM):
        os.kill(os.getpid(), signal.SIGTERM)
    assert stopped.signal_name == "SIGTERM"
    assert len(train(fresh_model()).history) == CONFIG.epochs
    with pytest.raises(TrainingError, match="stopped by SIGTERM after step 1 of epoch 1"):
        train(fresh_model(), stop=stopped)


def test_training_state_round_trips(tmp_path):
    model = SmallNet()
    state = TrainingState(
        1, model.state_dict(), {}, {}, torch.Generator().get_state(), history_of(1), [0.1], None, **START
    )
    checkpoint = CheckpointFile(tmp_path / "c.pt", {"run": 1})
    checkpoint.save(state)
    assert checkpoint.load(epochs=3).history == history_of(1)


def test_a_resumed_run_reads_its_losses_against_the_untrained_start_it_began_from(tmp_path):
    """The start is the loss of the run's first step: a resumed run keeps the one its checkpoint
    holds, and does not take its own first step's (an epoch into training) for it."""
    uninterrupted = train(fresh_model())
    checkpoint = interrupted_run(tmp_path / "checkpoint.pt")
    stored = read_checkpoint(checkpoint.path)["state"]
    assert (stored["start_loss"], stored["start_error"]) == (uninterrupted.start.loss, uninterrupted.start.error)
    resumed = train(fresh_model(), checkpoint)
    assert resumed.start == uninterrupted.start
    assert without_time(resumed.history) == without_time(uninterrupted.history)

    checkpoint = interrupted_run(tmp_path / "edited.pt")
    stored = read_checkpoint(checkpoint.path)
    stored["state"]["start_loss"] = 7.5
    write_checkpoint(checkpoint.path, stored)
    assert train(fresh_model(), checkpoint).start.loss == 7.5


@pytest.mark.parametrize(
    ("epoch", "damage", "reason"),
    [
        (1, lambda state: state.pop("start_loss"), "holds a start loss (the untrained network's) of None for 1 epochs"),
        (1, lambda state: state.update(start_loss=float("nan")), "holds a start loss (the untrained network's) of nan"),
        (1, lambda state: state.update(start_loss=float("inf")), "holds a start loss (the untrained network's) of inf"),
        (1, lambda state: state.update(start_loss=0.0), "holds a start loss (the untrained network's) of 0.0 for 1"),
        (1, lambda state: state.update(start_loss=-2.4), "holds a start loss (the untrained network's) of -2.4 for"),
        (1, lambda state: state.update(start_loss="2.4"), "is unreadable (its start_loss is '2.4', not what train"),
        (1, lambda state: state.update(start_loss=True), "is unreadable (its start_loss is True, not what train"),
        (0, lambda state: state.update(start_loss=2.4), "holds a start loss of 2.4 for 0 epochs done, before any"),
        (1, lambda state: state.update(start_loss=2.4), "holds a start loss's standard error of None for 1 epochs"),
        (1, lambda state: state.update(START, start_error=-0.1), "holds a start loss's standard error of -0.1 for"),
        (1, lambda state: state.update(START, start_error=float("nan")), "holds a start loss's standard error of nan"),
        (1, lambda state: state.update(START, start_loss=1e300), "holds a start loss (the untrained network's) of 1e"),
        (1, lambda state: state.update(START, start_error=3.0), "holds a start loss's standard error of 3.0 for 1"),
        (1, lambda state: state.update(START, start_error="0.05"), "is unreadable (its start_error is '0.05', not"),
    ],
    ids=[
        "none",
        "nan",
        "infinity",
        "zero",
        "negative",
        "text",
        "bool",
        "before-any-step",
        "no-error",
        "negative-error",
        "nan-error",
        "past-float32",
        "error-above-the-loss",
        "error-as-text",
    ],
)
def test_a_checkpoint_without_a_finite_positive_start_loss_is_not_resumed(tmp_path, caplog, epoch, damage, reason):
    """Resumed without it, a run would read its losses against a guess at where they began, and
    could advise the other way from the run it continues."""
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    checkpoint.save(TrainingState(epoch, {}, {}, {}, torch.Generator().get_state(), history_of(epoch)))
    stored = read_checkpoint(checkpoint.path)
    damage(stored["state"])
    write_checkpoint(checkpoint.path, stored)
    caplog.set_level(logging.INFO)
    assert checkpoint.load(epochs=3) is None
    assert caplog.messages[-1].startswith(f"not resuming: {checkpoint.path} {reason}"), caplog.messages


@pytest.mark.parametrize(
    ("start_loss", "start_error"),
    [(0.5, 0.01), (2.4, 0.0), (2.4, 2.4), (FLOAT32_MAX, 1.0)],
    ids=["below-one", "no-spread", "one-image-its-own-error", "float32-max"],
)
def test_a_checkpoint_with_any_start_train_can_record_is_resumed(tmp_path, start_loss, start_error):
    """A first batch of one image takes its loss as its own standard error, and one of images with
    equal losses has none: either is a start train records, and resumes from."""
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    checkpoint.save(TrainingState(1, {}, {}, {}, torch.Generator().get_state(), history_of(1)))
    stored = read_checkpoint(checkpoint.path)
    stored["state"].update(start_loss=start_loss, start_error=start_error)
    write_checkpoint(checkpoint.path, stored)
    assert (checkpoint.load(epochs=3).start_loss, checkpoint.load(epochs=3).start_error) == (start_loss, start_error)


def interrupted_run(path, fingerprint=None) -> CheckpointFile:
    """A run stopped in epoch 2: its checkpoint holds epoch 1."""
    checkpoint = CheckpointFile(path, fingerprint or {"run": 1})
    model = fresh_model()
    model.sigterm_at_step = 5
    with StopRequest().on_signals(signal.SIGTERM) as stop, pytest.raises(TrainingError):
        train(model, checkpoint, stop)
    return checkpoint


def edited_contents(change):
    """The checkpoint file's contents, decoded, changed and encoded again; its digest kept."""

    def edit(payload: bytes) -> bytes:
        contents = torch.load(io.BytesIO(payload), weights_only=True)
        change(contents)
        serialized = io.BytesIO()
        torch.save(contents, serialized)
        return serialized.getvalue()

    return edit


def swap_batchnorm_moments(contents: dict) -> None:
    """The Adam moments of BatchNorm's weight and bias, both of 8 values, swapped: a file
    every check of its values and shapes passes."""
    moments = contents["state"]["optimizer"]["state"]
    moments[2], moments[3] = moments[3], moments[2]


def fingerprint_of_another_run(contents: dict) -> None:
    """A checkpoint of a run with another cutout given the fingerprint of this one."""
    contents["fingerprint"] = {"run": 1}


def flip_a_bit(payload: bytes) -> bytes:
    middle = len(payload) // 2
    return payload[:middle] + bytes([payload[middle] ^ 1]) + payload[middle + 1 :]


@pytest.mark.parametrize(
    "edit",
    [edited_contents(swap_batchnorm_moments), edited_contents(fingerprint_of_another_run), flip_a_bit],
    ids=["swapped-moments", "fingerprint", "flipped-bit"],
)
def test_a_checkpoint_changed_after_train_saved_it_is_not_resumed(tmp_path, caplog, edit):
    """Hand edits (moments swapped between parameters of one shape, a step of two elements,
    complex moments, a group LR x50, a negative BatchNorm variance, another run's state under
    this run's fingerprint) trained on silently or ended in a traceback; the digest of the
    whole contents catches any of them."""
    checkpoint = interrupted_run(tmp_path / "checkpoint.pt", fingerprint={"run": 2})
    stored = torch.load(checkpoint.path, weights_only=True)
    stored["contents"] = as_tensor(edit(stored["contents"].numpy().tobytes()))
    torch.save(stored, checkpoint.path)

    caplog.set_level(logging.INFO)
    resumed = train(fresh_model(), CheckpointFile(checkpoint.path, {"run": 1}))
    assert (
        f"not resuming: {checkpoint.path} is unreadable (its contents do not match the digest saved with them: "
        f"edited or damaged); training from scratch"
    ) in caplog.messages
    assert without_time(resumed.history) == without_time(train(fresh_model()).history)


def compress_records(path: Path) -> None:
    deflate_records(path, path.with_suffix(".deflated"))
    path.with_suffix(".deflated").replace(path)


def as_tensor(payload: bytes) -> torch.Tensor:
    """Bytes as write_checkpoint stores the contents."""
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8)


def compress_the_contents(path: Path) -> None:
    """The contents' own records compressed, under a digest of the compressed bytes."""
    stored = torch.load(path, weights_only=True)
    contents = path.with_name("contents.pt")
    contents.write_bytes(stored["contents"].numpy().tobytes())
    compress_records(contents)
    payload = contents.read_bytes()
    torch.save({"sha256": hashlib.sha256(payload).hexdigest(), "contents": as_tensor(payload)}, path)


@pytest.mark.parametrize(
    ("compress", "reason"),
    [
        (compress_records, "its record 'checkpoint/data.pkl' is compressed"),
        (compress_the_contents, "its saved contents: its record 'archive/data.pkl' is compressed"),
    ],
    ids=["file", "contents"],
)
def test_a_checkpoint_of_compressed_records_is_not_inflated_nor_resumed(tmp_path, caplog, compress, reason):
    """torch.load inflates a compressed record whole: a 1.5 MB checkpoint holding 1.5 GB of
    deflated zeros took train to 5 GB before it started from scratch. torch.save never
    compresses, so such a file is refused unread."""
    checkpoint = interrupted_run(tmp_path / "checkpoint.pt")
    compress(checkpoint.path)
    caplog.set_level(logging.INFO)
    resumed = train(fresh_model(), checkpoint)
    assert (
        f"not resuming: {checkpoint.path} is unreadable ({reason}, which torch.save never does); training from scratch"
    ) in caplog.messages
    assert without_time(resumed.history) == without_time(train(fresh_model()).history)


@pytest.mark.parametrize("viewed", [(1, (3000, 1000)), (4, (2, 4))], ids=["one-number-3e6-times", "four-twice"])
def test_a_checkpoint_holding_a_tensor_larger_than_its_data_is_not_resumed(tmp_path, caplog, viewed):
    """One number viewed 3e9 times (stride 0) is 4 bytes saved; checking its values for NaN
    took train to 19 GB and the kernel's OOM killer. Four numbers viewed twice are too."""
    checkpoint = interrupted_run(tmp_path / "checkpoint.pt")
    stored = read_checkpoint(checkpoint.path)
    numbers, shape = viewed
    stored["state"]["model"]["extra"] = torch.zeros(numbers).expand(*shape)
    write_checkpoint(checkpoint.path, stored)
    caplog.set_level(logging.INFO)
    assert checkpoint.load(epochs=3) is None
    assert caplog.messages[-1] == (
        f"not resuming: {checkpoint.path} is unreadable (its tensor state.model.extra is larger than the data saved "
        f"for it, which train never saves); training from scratch"
    )


class MakesAFolder:
    """Unpickled by a loader that runs any callable, it makes a folder: what a checkpoint planted
    by someone else could do with any command."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __reduce__(self):
        return os.mkdir, (str(self.folder),)


def test_a_checkpoint_is_read_without_running_what_it_names(tmp_path, caplog):
    """torch.load runs the callables a pickle names unless it loads weights only, the file's
    wrapper as much as the contents within it."""
    path = tmp_path / "checkpoint.pt"
    torch.save({"sha256": "0" * 64, "contents": MakesAFolder(tmp_path / "ran")}, path)
    caplog.set_level(logging.INFO)
    assert CheckpointFile(path, {"run": 1}).load(epochs=3) is None
    assert not (tmp_path / "ran").exists()
    assert caplog.messages[-1].startswith(f"not resuming: {path} is unreadable (")


@pytest.mark.parametrize(("epochs", "steps"), [(2_000, 200_000), (2_000, 2_000)], ids=["many-steps", "many-epochs"])
def test_the_checkpoint_of_a_long_run_is_read(tmp_path, epochs, steps):
    """Its history and per-step learning rates grow with the epochs and steps, and so does the
    bound its structure is read within: 2,000 epochs of 100 steps each, or of one."""
    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    state = TrainingState(epochs, {}, {}, {}, torch.Generator().get_state(), history_of(epochs), [0.1] * steps)
    checkpoint.save(TrainingState(**vars(state) | START))
    assert checkpoint.load(epochs, steps).epoch == epochs


def test_a_checkpoint_whose_contents_are_not_one_row_of_bytes_is_not_loaded(tmp_path, caplog):
    """The saved bytes as a table (their digest the same) are not what train saves."""
    checkpoint = interrupted_run(tmp_path / "checkpoint.pt")
    stored = torch.load(checkpoint.path, weights_only=True)
    stored["contents"] = stored["contents"].reshape(1, -1)
    torch.save(stored, checkpoint.path)
    caplog.set_level(logging.INFO)
    assert checkpoint.load(epochs=3) is None
    assert caplog.messages[-1] == (
        f"not resuming: {checkpoint.path} is unreadable (its contents are not the bytes train saves); training from "
        "scratch"
    )


def test_a_checkpoint_whose_contents_are_one_byte_viewed_many_times_is_not_loaded(tmp_path, caplog):
    """Copied out as bytes, one byte viewed 2e9 times (a stride of 0) took train to 2.7 GB."""
    path = tmp_path / "checkpoint.pt"
    torch.save({"sha256": "0" * 64, "contents": torch.zeros(1, dtype=torch.uint8).expand(1000)}, path)
    caplog.set_level(logging.INFO)
    assert CheckpointFile(path, {"run": 1}).load(epochs=3) is None
    assert caplog.messages[-1] == (
        f"not resuming: {path} is unreadable (its contents are not the bytes train saves); training from scratch"
    )


def test_a_checkpoint_whose_structure_outgrows_its_run_is_not_loaded(tmp_path, caplog):
    """Each byte of pickle can make an object of 64 bytes or more: 25 MB of empty dicts took
    train to 2.7 GB. A run of 3 epochs needs at most 64 KiB and 512 bytes an epoch."""
    checkpoint = interrupted_run(tmp_path / "checkpoint.pt")
    stored = read_checkpoint(checkpoint.path)
    stored["state"]["scheduler"]["notes"] = [{} for _ in range(100_000)]
    write_checkpoint(checkpoint.path, stored)
    caplog.set_level(logging.INFO)
    assert checkpoint.load(epochs=3) is None
    assert caplog.messages[-1].startswith(
        f"not resuming: {checkpoint.path} is unreadable (its saved contents: its pickled structure takes "
    )
    assert caplog.messages[-1].endswith(
        f"bytes, more than the {structure_bound(3, 0):,} it needs); training from scratch"
    )


def test_a_checkpoint_holding_one_list_many_times_over_is_checked_in_time_linear_in_its_size(tmp_path, caplog):
    """A list holding another twice, 40 deep, is 600 bytes of pickle and 2**40 paths: the NaN
    check walked each path, and train never started."""
    checkpoint = interrupted_run(tmp_path / "checkpoint.pt")
    stored = read_checkpoint(checkpoint.path)
    nested: list = [0.5]
    for _ in range(40):
        nested = [nested, nested]
    stored["state"]["scheduler"]["notes"] = nested
    write_checkpoint(checkpoint.path, stored)
    caplog.set_level(logging.INFO)
    assert checkpoint.load(epochs=3).epoch == 1
    assert caplog.messages == []


def weight_of_another_shape(state):
    state["model"]["body.0.weight"] = torch.zeros(16, 3, 3, 3)


def missing_buffer(state):
    del state["model"]["body.1.running_mean"]


def adam_moment_of_another_shape(state):
    state["optimizer"]["state"][0]["exp_avg"] = torch.zeros(5)


def adam_moment_of_no_dimension(state):
    """It failed at the first step; kept, the checkpoint failed every re-run the same way."""
    state["optimizer"]["state"][0]["exp_avg"] = torch.tensor(0.0)


def adam_moment_of_booleans(state):
    """torch cast it to the parameter's dtype, and training went on with moments of 0s and 1s."""
    state["optimizer"]["state"][0]["exp_avg"] = state["optimizer"]["state"][0]["exp_avg"] > 0


def adam_moment_as_a_number(state):
    state["optimizer"]["state"][0]["exp_avg"] = 0.5


def optimizer_state_as_a_list(state):
    state["optimizer"]["state"] = [state["optimizer"]["state"][0]]


DOES_NOT_LOAD = "matches this run but does not load into it"


@pytest.mark.parametrize(
    ("damage", "failure", "reason"),
    [
        (weight_of_another_shape, DOES_NOT_LOAD, "size mismatch for body.0.weight"),
        (missing_buffer, DOES_NOT_LOAD, 'Missing key(s) in state_dict: "body.1.running_mean"'),
        (adam_moment_of_another_shape, DOES_NOT_LOAD, "optimizer state exp_avg is (5,) for a parameter of (8, 3, 3,"),
        (adam_moment_of_no_dimension, DOES_NOT_LOAD, "optimizer state exp_avg is () for a parameter of (8, 3, 3, 3)"),
        (adam_moment_of_booleans, DOES_NOT_LOAD, "optimizer state exp_avg is of torch.bool, which train never saves"),
        (adam_moment_as_a_number, DOES_NOT_LOAD, "(optimizer state exp_avg is 0.5 for a parameter of (8, 3, 3, 3))"),
        # A traceback as the step counts were read.
        (
            optimizer_state_as_a_list,
            "holds optimizer or schedule values train never saves",
            "'list' object has no attribute 'values'",
        ),
    ],
)
def test_a_matching_checkpoint_that_does_not_load_trains_from_scratch(tmp_path, caplog, damage, failure, reason):
    checkpoint = interrupted_run(tmp_path / "checkpoint.pt")
    stored = read_checkpoint(checkpoint.path)
    damage(stored["state"])
    write_checkpoint(checkpoint.path, stored)

    caplog.set_level(logging.INFO)
    resumed = train(fresh_model(), checkpoint)
    (warning,) = (message for message in caplog.messages if message.startswith("not resuming"))
    assert warning.startswith(f"not resuming: {checkpoint.path} {failure} (")
    assert reason in warning and warning.endswith("); training from scratch")
    assert "resuming from" not in caplog.text
    # The partly loaded state is undone: the run is the one from scratch.
    assert without_time(resumed.history) == without_time(train(fresh_model()).history)


def download(train_limit=20, test_limit=20) -> None:
    """What the download stage writes for these data.train_limit and data.test_limit."""
    config = DataConfig("synthetic", train_limit=train_limit, test_limit=test_limit)
    save_dataset(import_dataset(config, seed=0, download_dir=Path("unused")), paths.DATA)


def edit_module(name, old, new, tmp_path, monkeypatch):
    """`old` -> `new` in a module's source, as a run started after the edit loads it."""
    module = sys.modules[name]
    code = Path(module.__file__).read_text()
    edited = tmp_path / Path(module.__file__).name
    edited.write_text(code.replace(old, new))
    assert edited.read_text() != code
    monkeypatch.setattr(module, "__file__", str(edited))


def edit_the_model_code(run, tmp_path, monkeypatch):
    edit_module("cifar.models.custom_resnet", "nn.MaxPool2d", "nn.AvgPool2d", tmp_path, monkeypatch)


def edit_the_train_stage(run, tmp_path, monkeypatch):
    edit_module("stages.train", "checkpoint.remove()", "pass", tmp_path, monkeypatch)


def change_data_train_limit(run, tmp_path, monkeypatch):
    download(train_limit=30)


def change_data_test_limit(run, tmp_path, monkeypatch):
    download(test_limit=30)


def change_train_epochs(run, tmp_path, monkeypatch):
    run["params"] = replace(run["params"], train=replace(run["params"].train, epochs=30))


def change_augment_cutout(run, tmp_path, monkeypatch):
    run["params"] = replace(run["params"], augment=replace(run["params"].augment, cutout=0))


def change_seed(run, tmp_path, monkeypatch):
    run["params"] = replace(run["params"], seed=1)


def change_max_lr(run, tmp_path, monkeypatch):
    run["max_lr"] = 0.02


def change_cpu_threads(run, tmp_path, monkeypatch):
    """A CPU run's numbers depend on its thread count: a run resumed with OMP_NUM_THREADS=1
    after two epochs on two threads matched neither run."""
    threads = torch.get_num_threads() + 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)


def change_cpu_kernels(run, tmp_path, monkeypatch):
    """Kernels of another instruction set sum in another order: a run resumed with AVX-512 after
    an epoch under ATEN_CPU_CAPABILITY=default matched neither run."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "a CPU of other kernels")


def change_onednn_kernels(run, tmp_path, monkeypatch):
    """oneDNN picks its convolution kernels apart from ATen: a checkpoint written under
    ONEDNN_MAX_CPU_ISA=AVX2 was resumed without it, and the model matched neither run."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")


def change_processor(run, tmp_path, monkeypatch):
    monkeypatch.setattr(cifar.runtime, "processor_model", lambda: "another processor")


def change_torch(run, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "an upgraded torch")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (edit_the_model_code, "code"),
        (edit_the_train_stage, "code"),
        (change_data_train_limit, "train data"),
        (change_data_test_limit, "test data"),
        (change_train_epochs, "params"),
        (change_augment_cutout, "params"),
        (change_seed, "params"),
        (change_max_lr, "max_lr"),
        (change_cpu_threads, "cpu threads"),
        (change_cpu_kernels, "cpu kernels"),
        (change_onednn_kernels, "cpu kernels"),
        (change_processor, "cpu kernels"),
        (change_torch, "torch"),
    ],
)
def test_the_checkpoint_of_a_killed_run_is_not_resumed_once_what_shaped_it_changed(
    tmp_path, monkeypatch, caplog, change, key
):
    monkeypatch.chdir(tmp_path)
    download()
    run = {"params": Params(), "max_lr": 0.01}

    def checkpoint():
        return CheckpointFile(
            Path(paths.CHECKPOINT),
            stages.train.run_fingerprint(
                run["params"], CPU, "fp32", run["max_lr"], *(load_split(paths.DATA, name) for name in ("train", "test"))
            ),
        )

    checkpoint().save(TrainingState(1, {}, {}, {}, torch.Generator().get_state(), history_of(1), **START))
    assert checkpoint().load(epochs=3) is not None, "unchanged, the run would resume"
    change(run, tmp_path, monkeypatch)
    caplog.set_level(logging.INFO)
    assert checkpoint().load(epochs=3) is None
    assert caplog.messages == [
        f"not resuming: {paths.CHECKPOINT} is from a run with different {key}; training from scratch"
    ]


def test_modules_without_a_source_file_leave_the_code_digest_alone(monkeypatch):
    """A module built at run time (no __file__) has no source to hash; the digest skips it."""
    before = loaded_source_digest(("cifar",))
    monkeypatch.setitem(sys.modules, "cifar.built_at_run_time", types.ModuleType("cifar.built_at_run_time"))
    assert loaded_source_digest(("cifar",)) == before


def fingerprint_on_a_gpu(monkeypatch, model: str, data: list) -> dict:
    from cifar.config import Params
    from stages import train as train_stage

    with monkeypatch.context() as on_a_gpu:
        on_a_gpu.setattr(torch.cuda, "get_device_name", lambda device: model)
        on_a_gpu.setattr(torch.backends.cudnn, "version", lambda: 91002)
        return train_stage.run_fingerprint(Params(), torch.device("cuda"), "bf16", 1e-2, *data)


def test_a_checkpoint_of_a_gpu_run_is_not_resumed_on_another_gpu_model(monkeypatch):
    """An H100 picks other kernels than an A100 (cuDNN's choice by the GPU model): a run resumed
    on one after epochs on the other matched neither run."""
    data = [replace(random_split(4, seed=0), sha256=f"{name} digest") for name in ("train", "test")]
    on_a100, on_h100 = (fingerprint_on_a_gpu(monkeypatch, model, data) for model in ("NVIDIA A100", "NVIDIA H100"))
    assert [key for key in on_a100 if on_a100[key] != on_h100[key]] == ["gpu kernels"]


def test_a_checkpoint_of_a_gpu_run_is_not_resumed_on_a_cpu_and_training_starts_clean(tmp_path, caplog, monkeypatch):
    """The fingerprint holds the resolved device and precision, not `auto`: a bf16 CUDA run's
    checkpoint (its tensors on the GPU, a generator state a CPU generator cannot take) is
    readable without a GPU, and means a fresh start."""
    from cifar.config import Params
    from stages import train as train_stage

    data = [replace(random_split(4, seed=0), sha256=f"{name} digest") for name in ("train", "test")]
    on_gpu = fingerprint_on_a_gpu(monkeypatch, "NVIDIA H200", data)
    on_cpu = train_stage.run_fingerprint(Params(), CPU, "fp32", 1e-2, *data)
    assert (on_gpu["device"], on_gpu["precision"]) == ("cuda", "bf16")
    path = tmp_path / "train.pt"
    with monkeypatch.context() as saving_on_a_gpu:
        saving_on_a_gpu.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        CheckpointFile(path, on_gpu).save(
            TrainingState(1, {}, {}, {}, torch.zeros(16, dtype=torch.uint8), history_of(1), [0.1], **START)
        )
    caplog.set_level(logging.INFO)
    result = train(fresh_model(), CheckpointFile(path, on_cpu))
    assert (
        f"not resuming: {path} is from a run with different cpu kernels, cpu threads, device, gpu kernels, precision; "
        f"training from scratch" in caplog.messages
    )
    assert [row["epoch"] for row in result.history] == [1, 2, 3]


@pytest.mark.parametrize("link", ["../kept/train.pt", "absolute"], ids=["relative", "absolute"])
def test_a_checkpoint_linked_from_elsewhere_is_refused_before_training_with_a_fix_that_keeps_it(
    tmp_path, monkeypatch, link
):
    """Moved to another disk and linked back: train resumed from it, trained an epoch, and was
    refused as it replaced it, advised to remove the link, and with it the epochs it held."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "train.pt").write_bytes(b"epochs")
    checkpoint = Path(paths.CHECKPOINT)
    checkpoint.parent.mkdir()
    checkpoint.symlink_to(tmp_path / "kept" / "train.pt" if link == "absolute" else link)
    with pytest.raises(OutputError) as refused:
        refuse_a_linked_checkpoint(checkpoint)
    advised = re.search(r"\(`(mv [^`]*)`\)", str(refused.value))[1]
    subprocess.run(advised, shell=True, check=True)
    refuse_a_linked_checkpoint(checkpoint)
    assert checkpoint.read_bytes() == b"epochs" and not checkpoint.is_symlink()


def test_a_checkpoint_linked_to_nothing_is_refused_with_the_link_to_remove(tmp_path, monkeypatch):
    """Its target moved on: the advised `mv` back failed, "cannot stat"."""
    monkeypatch.chdir(tmp_path)
    checkpoint = Path(paths.CHECKPOINT)
    checkpoint.parent.mkdir()
    checkpoint.symlink_to(tmp_path / "gone" / "train.pt")
    with pytest.raises(OutputError) as refused:
        refuse_a_linked_checkpoint(checkpoint)
    subprocess.run(re.search(r"\(`(rm [^`]*)`\)", str(refused.value))[1], shell=True, check=True)
    refuse_a_linked_checkpoint(checkpoint)
    assert not checkpoint.is_symlink()
