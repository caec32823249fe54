import logging
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import stages.train
from cifar.checkpoint import CheckpointFile, TrainingState
from cifar.config import DataConfig, OneCycleConfig, Params, TrainConfig
from cifar.dataset import save_dataset
from cifar.engine import fit
from cifar.errors import TrainingError
from cifar.loader import DeviceLoader
from cifar.sources import import_dataset
from cifar.stop import StopRequest
from generated import CPU, random_split
from stages import paths

CONFIG = TrainConfig(epochs=3, batch_size=16, onecycle=OneCycleConfig(max_at_epoch=1))


class SmallNet(nn.Module):
    """Conv + BatchNorm, so running statistics must be restored too."""

    def __init__(self, sigterm_at_step=None):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
        self.sigterm_at_step, self.steps = sigterm_at_step, 0

    def forward(self, x):
        self.steps += self.training
        if self.training and self.steps == self.sigterm_at_step:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, arriving mid-step
        return self.body(x)


def train(model, checkpoint=None, stop=None):
    torch.manual_seed(0)
    loaders = DeviceLoader(random_split(48, 0), 16, CPU, shuffle=True, seed=5), DeviceLoader(random_split(32, 1), 32, CPU)
    return fit(
        model, *loaders, max_lr=1e-2, config=CONFIG, num_classes=10, device=CPU, precision="fp32",
        checkpoint=checkpoint, stop=stop,
    )


def without_time(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def fresh_model():
    torch.manual_seed(0)
    return SmallNet()


def test_sigterm_stops_after_the_step_and_a_resumed_run_matches_an_uninterrupted_one(tmp_path, caplog):
    uninterrupted_model = fresh_model()
    uninterrupted = train(uninterrupted_model)

    checkpoint = CheckpointFile(tmp_path / "checkpoint.pt", {"run": 1})
    interrupted_model = fresh_model()
    interrupted_model.sigterm_at_step = 5  # epoch 2, step 2 (3 steps per epoch)
    with StopRequest().on_signals(signal.SIGTERM) as stop, pytest.raises(TrainingError) as stopped:
        train(interrupted_model, checkpoint, stop)
    assert "stopped by SIGTERM after step 2 of epoch 2" in str(stopped.value)
    assert "run `dvc repro` (or `python -m stages.train`) to resume from epoch 2" in str(stopped.value)
    assert torch.load(checkpoint.path, weights_only=True)["state"]["epoch"] == 1

    caplog.set_level(logging.INFO)
    resumed_model = fresh_model()
    resumed = train(resumed_model, checkpoint)
    assert "resuming from" in caplog.text and "1 of 3 epochs done" in caplog.text
    assert without_time(resumed.history) == without_time(uninterrupted.history)
    assert resumed.step_lrs == uninterrupted.step_lrs
    for name, tensor in uninterrupted_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name


def test_a_checkpoint_of_different_params_is_not_resumed(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    train(fresh_model(), CheckpointFile(tmp_path / "checkpoint.pt", {"params": {"epochs": 3}, "data": "abc"}))
    state = CheckpointFile(tmp_path / "checkpoint.pt", {"params": {"epochs": 4}, "data": "abc"}).load(epochs=4)
    assert state is None
    assert "not resuming: " in caplog.text and "is from a run with different params" in caplog.text


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
    assert checkpoint.load(epochs=3) is None and "is unreadable" in caplog.text


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
    state = TrainingState(2, model.state_dict(), {}, {}, torch.Generator().get_state(), [{"epoch": 1}], [0.1], None)
    checkpoint = CheckpointFile(tmp_path / "c.pt", {"run": 1})
    checkpoint.save(state)
    assert checkpoint.load(epochs=3).history == [{"epoch": 1}]


def interrupted_run(path) -> CheckpointFile:
    """A run stopped in epoch 2: its checkpoint holds epoch 1."""
    checkpoint = CheckpointFile(path, {"run": 1})
    model = fresh_model()
    model.sigterm_at_step = 5
    with StopRequest().on_signals(signal.SIGTERM) as stop, pytest.raises(TrainingError):
        train(model, checkpoint, stop)
    return checkpoint


def weight_of_another_shape(state):
    state["model"]["body.0.weight"] = torch.zeros(16, 3, 3, 3)


def missing_buffer(state):
    del state["model"]["body.1.running_mean"]


def adam_moment_of_another_shape(state):
    state["optimizer"]["state"][0]["exp_avg"] = torch.zeros(5)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (weight_of_another_shape, "size mismatch for body.0.weight"),
        (missing_buffer, 'Missing key(s) in state_dict: "body.1.running_mean"'),
        (adam_moment_of_another_shape, "optimizer state exp_avg is (5,) for a parameter of (8, 3, 3, 3)"),
    ],
)
def test_a_matching_checkpoint_that_does_not_load_trains_from_scratch(tmp_path, caplog, damage, reason):
    checkpoint = interrupted_run(tmp_path / "checkpoint.pt")
    stored = torch.load(checkpoint.path, weights_only=True)
    damage(stored["state"])
    torch.save(stored, checkpoint.path)

    caplog.set_level(logging.INFO)
    resumed = train(fresh_model(), checkpoint)
    warning, = (message for message in caplog.messages if message.startswith("not resuming"))
    assert warning.startswith(f"not resuming: {checkpoint.path} matches this run but does not load into it (")
    assert reason in warning and warning.endswith("); training from scratch")
    assert "resuming from" not in caplog.text
    # The partly loaded state is undone: the run is the one from scratch.
    assert without_time(resumed.history) == without_time(train(fresh_model()).history)


def download(test_limit: int) -> None:
    """What the download stage writes for data.test_limit = test_limit."""
    splits = import_dataset(DataConfig("synthetic", train_limit=20, test_limit=test_limit), seed=0, download_dir=Path("unused"))
    save_dataset(splits, paths.DATA)


def edit_the_model_code(tmp_path, monkeypatch):
    """MaxPool -> AvgPool in custom_resnet.py, as a run started after the edit loads it."""
    module = sys.modules["cifar.models.custom_resnet"]
    code = Path(module.__file__).read_text()
    edited = tmp_path / "custom_resnet.py"
    edited.write_text(code.replace("nn.MaxPool2d", "nn.AvgPool2d"))
    assert edited.read_text() != code
    monkeypatch.setattr(module, "__file__", str(edited))


def change_data_test_limit(tmp_path, monkeypatch):
    download(test_limit=30)


@pytest.mark.parametrize(("change", "key"), [(edit_the_model_code, "code"), (change_data_test_limit, "test data")])
def test_the_checkpoint_of_a_killed_run_is_not_resumed_once_its_code_or_data_changed(tmp_path, monkeypatch, caplog, change, key):
    monkeypatch.chdir(tmp_path)
    download(test_limit=20)

    def checkpoint():
        return CheckpointFile(Path(paths.CHECKPOINT), stages.train.run_fingerprint(Params(), CPU, "fp32", 0.01))

    checkpoint().save(TrainingState(1, {}, {}, {}, torch.Generator().get_state()))
    assert checkpoint().load(epochs=3) is not None, "unchanged, the run would resume"
    change(tmp_path, monkeypatch)
    caplog.set_level(logging.INFO)
    assert checkpoint().load(epochs=3) is None
    assert caplog.messages == [f"not resuming: {paths.CHECKPOINT} is from a run with different {key}; training from scratch"]


def test_a_checkpoint_of_a_gpu_run_is_not_resumed_on_a_cpu_and_training_starts_clean(tmp_path, caplog, monkeypatch):
    """The fingerprint holds the resolved device and precision, not `auto`: a bf16 CUDA run's
    checkpoint (whose generator state a CPU generator cannot take) means a fresh start."""
    from cifar.config import Params
    from stages import train as train_stage

    monkeypatch.setattr(train_stage, "split_digest", lambda folder, name: f"{name} digest")
    on_gpu = train_stage.run_fingerprint(Params(), torch.device("cuda"), "bf16", 1e-2)
    on_cpu = train_stage.run_fingerprint(Params(), CPU, "fp32", 1e-2)
    assert (on_gpu["device"], on_gpu["precision"]) == ("cuda", "bf16")
    path = tmp_path / "train.pt"
    CheckpointFile(path, on_gpu).save(TrainingState(1, {}, {}, {}, torch.zeros(16, dtype=torch.uint8), [{"epoch": 1}], [0.1]))
    caplog.set_level(logging.INFO)
    result = train(fresh_model(), CheckpointFile(path, on_cpu))
    assert "is from a run with different device, precision; training from scratch" in caplog.text
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
