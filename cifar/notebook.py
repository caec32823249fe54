"""The pipeline in five calls, for a notebook: the functions the stages call, composed as
the stages compose them, with no files between the steps.

    import cifar
    params = cifar.load_params("params.yaml")                        # or cifar.Params()
    data = cifar.load_data(params)
    result = cifar.train(params, data)
    report = cifar.evaluate(result.model, data)
    maps = cifar.grad_cam(result.model, data.test, layer="layer3")

The official archive is downloaded once into data/downloads under the working folder, the
pipeline's own download cache when that is the checkout's root.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from cifar.config import DOWNLOAD_CACHE, Params, load_params
from cifar.dataset import Split
from cifar.ingest.sources import import_dataset
from cifar.reporting import explain
from cifar.runtime import resolve_precision
from cifar.training.engine import fit
from cifar.training.inference import Predictions, predict
from cifar.training.loader import EVAL_BATCH_SIZE, DeviceLoader
from cifar.training.lr_find import range_test
from cifar.training.recipe import Recipe

log = logging.getLogger(__name__)

# The five calls and the two ways to get params, as `cifar.NAME`.
__all__ = ["Params", "load_params", "load_data", "train", "evaluate", "grad_cam"]  # noqa: RUF022 (in the order of use)


@dataclass(frozen=True)
class Data:
    train: Split
    test: Split


def load_data(params: Params) -> Data:
    """Both splits from params.data's source (official, a local path or synthetic), limited
    as it says; the official archive is downloaded once, into the pipeline's cache."""
    splits = import_dataset(params.data, params.seed, Path(DOWNLOAD_CACHE))
    return Data(splits["train"], splits["test"])


@dataclass(frozen=True)
class Trained:
    model: nn.Module
    max_lr: float  # params.train.max_lr, or the range test's pick when it is "find"
    history: pd.DataFrame  # one row per epoch, as plots/history.csv
    step_lrs: list[float]  # the LR each optimizer step ran at
    chance_warning: str | None  # set when the model stayed at chance level after the OneCycle peak


def train(params: Params, data: Data) -> Trained:
    """The lr_find stage's range test (when train.max_lr is "find"), then the train stage's
    run, each on a freshly seeded model as the stages build it. A range test whose loss
    never fell beyond its noise stops here with a TrainingError, as the lr_find stage does."""
    recipe = Recipe.from_params(params)
    num_classes = len(data.train.classes)
    max_lr = params.train.max_lr
    if max_lr == "find":
        test = range_test(recipe, recipe.fresh_model(num_classes), recipe.train_loader(data.train))
        test.require_descent()
        for warning in test.warnings:
            log.warning("lr_find: %s", warning)
        max_lr = test.max_lr
    model = recipe.fresh_model(num_classes)
    result = fit(
        recipe,
        model,
        recipe.train_loader(data.train),
        recipe.test_loader(data.test),
        max_lr=max_lr,
        num_classes=num_classes,
    )
    return Trained(model, max_lr, pd.DataFrame(result.history), result.step_lrs, result.chance_warning)


def evaluate(model: nn.Module, data: Data, precision: str = "auto") -> Predictions:
    """The evaluate stage's predictions on data.test: `.accuracy`, `.metrics()` (as
    metrics/evaluate.json), `.per_class(data.test.classes)`, and per image `.predicted` and
    `.confidence`."""
    device = next(model.parameters()).device
    return predict(
        model, DeviceLoader(data.test, EVAL_BATCH_SIZE, device), device, resolve_precision(precision, device)
    )


def grad_cam(model: nn.Module, split: Split, layer: str, images: int = 10) -> np.ndarray:
    """images x 32 x 32 maps in [0, 1] of where the named layer sees each of the split's first
    `images` images' own class; `cifar.reporting.explain.overlay(split.images[:images], maps)` blends
    them over the pictures."""
    ((_, module),) = explain.resolve_layers(model, type(model).__name__, [layer])
    (maps,) = explain.grad_cam(model, module, split.images[:images], [split.labels[:images]])
    return maps
