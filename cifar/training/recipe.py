"""The training recipe, in one place: the model, loss, optimizer, OneCycle schedule and
loaders that params.yaml describes, as lr_find probes them, train runs them, evaluate and
explain read them, and the notebook and the benchmark time them.

    recipe = Recipe.from_params(params)       # the device and precision train.* asks for
    model = recipe.fresh_model(num_classes)   # seeded: lr_find probes train's initial weights
    batches = recipe.train_loader(split)      # shuffled, augmented, full batches, on the device
    optimizer = recipe.optimizer(model, lr)   # Adam or SGD, fused on a GPU
    schedule = recipe.schedule(optimizer, max_lr, steps_per_epoch=len(batches))
    criterion = loss_function()               # cross-entropy
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cifar.config import Params
from cifar.dataset import Split
from cifar.models import build_model, on_device
from cifar.runtime import configure_runtime, seed_everything
from cifar.training.loader import EVAL_BATCH_SIZE, DeviceLoader
from cifar.training.schedule import FiniteOneCycleLR, one_cycle


def loss_function(reduction: str = "mean") -> nn.CrossEntropyLoss:
    """Cross-entropy: what training minimises, the range test records and evaluation reports."""
    return nn.CrossEntropyLoss(reduction=reduction)


@dataclass(frozen=True)
class Recipe:
    params: Params
    device: torch.device
    precision: str  # "bf16" or "fp32", resolved for the device

    @classmethod
    def from_params(cls, params: Params) -> Recipe:
        """The recipe on the device train.* asks for, with kernels as deterministic as it asks."""
        device, precision = configure_runtime(params.train)
        return cls(params, device, precision)

    def fresh_model(self, num_classes: int) -> nn.Module:
        """A model with the weights params.seed gives: the same for lr_find and train, so the
        range test probes the very network that training starts from."""
        seed_everything(self.params.seed)
        return on_device(build_model(self.params.model, num_classes), self.device)

    def train_loader(self, split: Split) -> DeviceLoader:
        """Shuffled, augmented full batches of train.batch_size, seeded by params.seed."""
        return DeviceLoader(
            split,
            self.params.train.batch_size,
            self.device,
            augmentation=self.params.augment,
            shuffle=True,
            seed=self.params.seed,
        )

    def test_loader(self, split: Split) -> DeviceLoader:
        return DeviceLoader(split, EVAL_BATCH_SIZE, self.device)

    def optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        """Adam or SGD (momentum, optionally Nesterov) with train.weight_decay. On a GPU the
        fused kernel updates every parameter in one launch, with no host work per tensor; on
        a CPU torch's default (foreach) implementation runs."""
        config = self.params.train
        fused = self.device.type == "cuda" or None
        if config.optimizer == "sgd":
            return torch.optim.SGD(
                model.parameters(),
                lr=lr,
                momentum=config.momentum,
                nesterov=config.nesterov,
                weight_decay=config.weight_decay,
                fused=fused,
            )
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=config.weight_decay, fused=fused)

    def schedule(self, optimizer: torch.optim.Optimizer, max_lr: float, steps_per_epoch: int) -> FiniteOneCycleLR:
        """OneCycle over train.epochs epochs of steps_per_epoch steps, peaking at max_lr."""
        return one_cycle(optimizer, max_lr, self.params.train.epochs, steps_per_epoch, self.params.train.onecycle)
