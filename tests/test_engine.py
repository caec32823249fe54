import numpy as np
import pytest
from torch import nn

from cifar.config import OneCycleConfig, TrainConfig
from cifar.engine import fit, predict
from cifar.errors import TrainingError
from cifar.loader import DeviceLoader
from generated import CPU, random_split

def tiny_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))


def config(epochs=3, max_at_epoch=1):
    return TrainConfig(epochs=epochs, batch_size=16, onecycle=OneCycleConfig(max_at_epoch=max_at_epoch))


def test_non_finite_loss_stops_with_epoch_step_and_lr():
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
        fit(Exploding(), loader, loader, max_lr=1e-3, config=config(), num_classes=10, device=CPU, precision="fp32")
    message = str(caught.value)
    # 4 training steps per epoch: the 7th is epoch 2, step 3.
    assert "loss became nan at epoch 2, step 3 (global step 7), learning rate" in message
    assert "lower train.max_lr" in message


def test_chance_level_after_the_peak_is_reported():
    # Random labels cannot be learnt: test accuracy stays near 10%.
    train, test = random_split(64, 1), random_split(200, 2)
    result = fit(
        tiny_model(), DeviceLoader(train, 16, CPU, shuffle=True), DeviceLoader(test, 100, CPU),
        max_lr=1e-4, config=config(), num_classes=10, device=CPU, precision="fp32",
    )
    assert result.chance_warning is not None
    assert "is at chance level" in result.chance_warning and "after the OneCycle peak at epoch 1" in result.chance_warning


def test_history_and_schedule_cover_every_epoch_and_step():
    train = random_split(40, 3)
    result = fit(
        tiny_model(), DeviceLoader(train, 16, CPU, shuffle=True), DeviceLoader(train, 100, CPU),
        max_lr=1e-3, config=config(epochs=3), num_classes=10, device=CPU, precision="fp32",
    )
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert len(result.step_lrs) == 3 * 3  # ceil(40 / 16) steps per epoch
    assert result.step_lrs[0] == pytest.approx(1e-3 / 100) and result.step_lrs[-1] == pytest.approx(1e-3 / 1e4)
    assert all(0 <= row["train_accuracy"] <= 1 and 0 <= row["test_accuracy"] <= 1 for row in result.history)


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
