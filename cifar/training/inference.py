"""A model's predictions over a loader, and what they add up to: accuracy, loss, per class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from cifar.runtime import autocast
from cifar.training.loader import DeviceLoader
from cifar.training.recipe import loss_function


@dataclass(frozen=True)
class Predictions:
    labels: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray  # softmax probability of the predicted class
    loss: float  # mean of the recipe's loss
    flip_tta_predicted: np.ndarray | None  # predictions from the mean of image and mirror

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean())

    def metrics(self) -> dict:
        """Accuracy, loss and the misclassified count (and flip-TTA accuracy, when predicted)."""
        found = {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "misclassified": int((self.predicted != self.labels).sum()),
        }
        if self.flip_tta_predicted is not None:
            found["flip_tta_accuracy"] = float((self.flip_tta_predicted == self.labels).mean())
        return found

    def per_class(self, classes: tuple[str, ...]) -> pd.DataFrame:
        """One row per class: its images, how many were predicted right, and the accuracy."""
        correct = self.predicted == self.labels
        frame = pd.DataFrame(
            {
                "class": np.array(classes),
                "images": np.bincount(self.labels, minlength=len(classes)),
                "correct": np.bincount(self.labels[correct], minlength=len(classes)),
            }
        )
        frame["accuracy"] = frame["correct"] / frame["images"]
        return frame


@torch.no_grad()
def predict(
    model: nn.Module, loader: DeviceLoader, device: torch.device, precision: str, flip_tta: bool = False
) -> Predictions:
    """Every image's prediction; results stay on the device until the end (one sync)."""
    model.eval()
    summed_loss = loss_function(reduction="sum")
    total_loss = torch.zeros((), device=device)
    labels, probabilities, tta_probabilities = [], [], []
    for images, batch_labels in loader:
        with autocast(device, precision):
            logits = model(images).float()
            if flip_tta:
                mirrored = model(images.flip(3)).float()
        total_loss += summed_loss(logits, batch_labels)
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
