"""train: the chosen model under Adam + OneCycle; weights, metrics, history and pictures."""

import json
import logging
import platform
import signal
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchinfo

import paths
from cifar.atomic import save_figure, write_csv, write_json, write_text
from cifar.augment import denormalize
from cifar.cli import run_stage
from cifar.checkpoint import CheckpointFile
from cifar.config import Params, load_params
from cifar.data import Split, load_split, split_digest
from cifar.engine import at_chance, fit, stop_after_the_step_on
from cifar.errors import DataError, TrainingError
from cifar.loader import EVAL_BATCH_SIZE, DeviceLoader
from cifar.models import build_model, on_device, save_trained
from cifar.plots import epoch_curves_figure, image_grid, lr_schedule_figure
from cifar.runtime import device_name, resolve_device, resolve_precision, seed_everything

log = logging.getLogger("train")
SAMPLE_COUNT = 32


def main() -> None:
    params = load_params(paths.PARAMS)
    device = resolve_device(params.train.device)
    precision = resolve_precision(params.train.precision, device)
    max_lr = chosen_max_lr(params)
    seed_everything(params.seed)
    train, test = load_split(paths.DATA, "train"), load_split(paths.DATA, "test")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    model = on_device(build_model(params.model, len(train.classes)), device)
    write_text(paths.MODEL_SUMMARY, str(torchinfo.summary(
        model, input_size=(1, 3, 32, 32), device=device, verbose=0,
        col_names=("input_size", "output_size", "num_params", "mult_adds"),
    )) + "\n")
    save_figure(paths.SAMPLES_IMAGE, augmented_samples(train, params, device))

    train_loader = DeviceLoader(
        train, params.train.batch_size, device, augmentation=params.augment, shuffle=True, seed=params.seed
    )
    test_loader = DeviceLoader(test, EVAL_BATCH_SIZE, device)
    log.info(
        "training %s on %d images (%s, %s), max_lr %.3g, %d epochs of %d steps",
        params.model.name, len(train), device_name(device), precision, max_lr, params.train.epochs, len(train_loader),
    )
    trainable = torch.compile(model) if params.train.compile else model
    checkpoint = CheckpointFile(Path(paths.CHECKPOINT), {
        "params": {key: asdict(getattr(params, key)) for key in ("model", "augment", "train")} | {"seed": params.seed},
        "max_lr": max_lr,
        "data": split_digest(paths.DATA, "train"),
    })
    with stop_after_the_step_on(signal.SIGTERM, signal.SIGINT):
        result = fit(
            trainable, train_loader, test_loader, max_lr=max_lr, config=params.train,
            num_classes=len(train.classes), device=device, precision=precision, checkpoint=checkpoint,
        )

    save_trained(paths.MODEL, model, params.model, train.classes)
    history = pd.DataFrame(result.history)
    write_csv(paths.HISTORY, history)
    write_csv(paths.LR_SCHEDULE, pd.DataFrame({"step": range(1, len(result.step_lrs) + 1), "lr": result.step_lrs}))
    save_figure(paths.LOSS_IMAGE, epoch_curves_figure(history, "loss", "cross-entropy loss"))
    save_figure(paths.ACCURACY_IMAGE, epoch_curves_figure(history, "accuracy", "accuracy"))
    save_figure(paths.LR_SCHEDULE_IMAGE, lr_schedule_figure(result.step_lrs, len(train_loader)))
    write_json(paths.TRAIN_METRICS, train_metrics(history, result.chance_warning, max_lr, len(train), device, precision))
    final_accuracy = result.history[-1]["test_accuracy"]
    if at_chance(final_accuracy, len(train.classes)):
        raise TrainingError(
            f"training failed: the final test accuracy {final_accuracy:.3f} is at chance level; "
            f"outputs are written for inspection, but the stage is not recorded as done. {result.chance_warning}"
        )


def chosen_max_lr(params: Params) -> float:
    if params.train.max_lr != "find":
        return params.train.max_lr
    path = Path(paths.LR_FIND_METRICS)
    try:
        return float(json.loads(path.read_text())["max_lr"])
    except (OSError, ValueError, KeyError) as error:
        raise DataError(
            f"{path}: no max_lr to read ({error}); run the lr_find stage first (`dvc repro lr_find`) "
            f"or set train.max_lr to a number"
        ) from None


def augmented_samples(train: Split, params: Params, device: torch.device):
    """What the network sees: a seeded random draw of training images after augmentation,
    so the grid does not depend on the order in which the source listed its images."""
    chosen = np.random.default_rng(params.seed).choice(len(train), size=min(SAMPLE_COUNT, len(train)), replace=False)
    sample = Split(train.images[chosen], train.labels[chosen], train.classes)
    loader = DeviceLoader(sample, SAMPLE_COUNT, device, augmentation=params.augment, seed=params.seed)
    images, labels = next(iter(loader))
    return image_grid(
        denormalize(images).cpu().numpy(),
        [train.classes[label] for label in labels.tolist()],
        suptitle=f"augmented training images (crop pad {params.augment.crop_padding}, "
                 f"flip {params.augment.flip}, cutout {params.augment.cutout})",
    )


def train_metrics(history: pd.DataFrame, chance_warning, max_lr, num_images, device, precision) -> dict:
    last, best = history.iloc[-1], history.loc[history["test_accuracy"].idxmax()]
    # The first epoch carries one-off costs (cuDNN autotuning, torch.compile): report it apart.
    steady = history["seconds"].iloc[1:] if len(history) > 1 else history["seconds"]
    seconds_per_epoch = float(steady.mean())
    return {
        "test_accuracy": float(last["test_accuracy"]),
        "test_loss": float(last["test_loss"]),
        "train_accuracy": float(last["train_accuracy"]),
        "train_loss": float(last["train_loss"]),
        "best_test_accuracy": float(best["test_accuracy"]),
        "best_epoch": int(best["epoch"]),
        "epochs": len(history),
        "max_lr": max_lr,
        "seconds_per_epoch": seconds_per_epoch,
        "first_epoch_seconds": float(history["seconds"].iloc[0]),
        "images_per_second": num_images / seconds_per_epoch,
        "at_chance_level": chance_warning is not None,
        "warning": chance_warning,
        "device": device_name(device),
        "precision": precision,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }


if __name__ == "__main__":
    run_stage(main)
