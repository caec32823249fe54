"""Training speed, side by side in one process on one machine and one dataset.

    python -m bench.benchmark [--data data/cifar10] [--train-limit N] [--test-limit N] [--epochs E]

Rows, for each model (custom ResNet, ResNet18):
  ours       the train stage's code path: data resident on the device as uint8, batched
             augmentation there, channels_last + bf16 autocast on CUDA, OneCycle, Adam
  reference  the approach of the reference runs: the same model, optimizer and schedule fed
             by a torchvision DataLoader with per-image PIL transforms (pad + RandomCrop,
             flip, Cutout), fp32, NCHW, 2 workers
and the peer, airbench94 (PyPI airbench 0.1.8, CUDA only), on the same images.

Each of our and the reference rows trains `--epochs` epochs (default 5) after one warm-up
epoch, timed with the device synchronised, and reports the median epoch. airbench94's row
is its own training time as it measures it (CUDA events around the training steps and its
whitening set-up, not building the net or loading data), per epoch and to its final TTA
accuracy. TFLOP/s counts a training step's FLOPs once, with torch's FLOP counter. Each row
is printed as soon as it is measured, so a failing row (airbench missing, say) loses no
other. On a CPU, pass --train-limit to keep it short; rows say which device ran.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from cifar.cli import run_stage
from cifar.config import AugmentConfig, ModelConfig, OneCycleConfig, Params, TrainConfig
from cifar.dataset import CIFAR10_MEAN, CIFAR10_STD, Split, class_balanced_subset, load_split
from cifar.models import build_model
from cifar.runtime import device_name, resolve_device, resolve_precision, seed_everything, synchronize
from cifar.training.engine import TrainingRun, train_epoch
from cifar.training.inference import predict
from cifar.training.loader import EVAL_BATCH_SIZE
from cifar.training.recipe import Recipe, loss_function
from cifar.training.schedule import one_cycle

MODELS = (ModelConfig("custom_resnet"), ModelConfig("resnet18"))
RECIPE = TrainConfig()  # the reference recipe: batch 512, Adam, wd 1e-7, OneCycle
AUGMENT = AugmentConfig()
MAX_LR = 0.01  # a fixed, sane LR: speed does not depend on it, and no LR search is timed
REFERENCE_WORKERS = 2


@dataclass
class Row:
    approach: str
    model: str
    seconds_per_epoch: float | None = None
    peak_memory_gib: float | None = None
    test_accuracy: float | None = None
    note: str = ""
    train_flops_per_image: float | None = None  # forward + backward
    seconds_to_accuracy: float | None = None  # the whole training run, where the row measures it
    images_per_epoch: int | None = None


def training_flops_per_image(config: ModelConfig) -> float:
    """FLOPs of one image's forward and backward pass, counted once on the CPU."""
    model = build_model(config)
    images = torch.zeros(2, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        loss_function()(model(images), torch.zeros(2, dtype=torch.long)).backward()
    return counter.get_total_flops() / len(images)


def fp32_note(device: torch.device) -> str:
    """fp32 matmuls and convolutions on Ampere and later run in TF32 when torch allows it."""
    if device.type != "cuda":
        return "fp32"
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
    return f"fp32 (TF32 {'on' if tf32 else 'off'})"


class Timer:
    """Per-epoch wall time with the device synchronised at both ends."""

    def __init__(self, device: torch.device):
        self.device = device
        self.epochs: list[float] = []

    @contextmanager
    def epoch(self):
        synchronize(self.device)
        started = time.perf_counter()
        yield
        synchronize(self.device)
        self.epochs.append(time.perf_counter() - started)

    def steady(self) -> float:
        """Median over the epochs after the warm-up one: robust to a stray slow epoch."""
        return float(np.median(self.epochs[1:]))


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# --------------------------------------------------------------------------- ours


def run_ours(config: ModelConfig, train: Split, test: Split, epochs: int, batch_size: int, device: torch.device) -> Row:
    total_epochs = epochs + 1
    recipe = Recipe(
        Params(
            model=config,
            train=replace(RECIPE, batch_size=batch_size, epochs=total_epochs, onecycle=_onecycle(total_epochs)),
        ),
        device,
        resolve_precision("auto", device),
    )
    precision = recipe.precision
    reset_peak_memory(device)
    model = recipe.fresh_model(len(train.classes))
    loader = recipe.train_loader(train)
    optimizer = recipe.optimizer(model, MAX_LR)
    run = TrainingRun(
        model, optimizer, recipe.schedule(optimizer, MAX_LR, len(loader)), loader, device, precision, total_epochs
    )
    timer = Timer(device)
    for epoch in range(1, total_epochs + 1):
        with timer.epoch():
            train_epoch(run, epoch)
    accuracy = predict(model, recipe.test_loader(test), device, precision).accuracy
    note = fp32_note(device) if precision == "fp32" else precision
    return Row(
        "ours",
        config.name,
        timer.steady(),
        peak_memory_gib(device),
        accuracy,
        note,
        training_flops_per_image(config),
        images_per_epoch=loader.images_per_epoch,
    )


def _onecycle(epochs: int) -> OneCycleConfig:
    """The reference peak (epoch 5), moved earlier when the run is shorter than that."""
    return OneCycleConfig(max_at_epoch=max(1, min(RECIPE.onecycle.max_at_epoch, epochs - 1)))


# --------------------------------------------------------------------------- reference


class Cutout:
    """Per-image Cutout on a normalised tensor, as the reference notebooks applied it."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        _, height, width = image.shape
        top = np.random.randint(0, height - self.size + 1)
        left = np.random.randint(0, width - self.size + 1)
        image = image.clone()
        image[:, top : top + self.size, left : left + self.size] = 0
        return image


class PilDataset(Dataset):
    def __init__(self, split: Split, transform):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.split.images[index])), int(self.split.labels[index])


def reference_loader(split: Split, batch_size: int, train: bool) -> DataLoader:
    steps = [transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    if train:
        steps = [
            transforms.RandomCrop(32, padding=AUGMENT.crop_padding),
            transforms.RandomHorizontalFlip(),
            *steps,
            Cutout(AUGMENT.cutout),
        ]
    return DataLoader(
        PilDataset(split, transforms.Compose(steps)),
        batch_size=batch_size if train else EVAL_BATCH_SIZE,
        shuffle=train,
        num_workers=REFERENCE_WORKERS,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=True,
    )


def run_reference(
    config: ModelConfig, train: Split, test: Split, epochs: int, batch_size: int, device: torch.device
) -> Row:
    seed_everything(0)
    reset_peak_memory(device)
    model = build_model(config).to(device)
    loader = reference_loader(train, batch_size, train=True)
    # The reference notebooks' own loop, loss and optimizer, written as they wrote them.
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=MAX_LR, weight_decay=RECIPE.weight_decay)
    total_epochs = epochs + 1
    scheduler = one_cycle(optimizer, MAX_LR, total_epochs, len(loader), _onecycle(total_epochs))
    timer = Timer(device)
    for _ in range(total_epochs):
        model.train()
        with timer.epoch():
            for images, labels in loader:
                images, labels = images.to(device), labels.to(device)
                loss = criterion(model(images), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss.item()  # the per-step read-back the reference loop did for its progress bar
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in reference_loader(test, batch_size, train=False):
            correct += (model(images.to(device)).argmax(1).cpu() == labels).sum().item()
    return Row(
        "reference",
        config.name,
        timer.steady(),
        peak_memory_gib(device),
        correct / len(test),
        f"{fp32_note(device)}, NCHW",
        training_flops_per_image(config),
        images_per_epoch=len(train),
    )


# --------------------------------------------------------------------------- airbench


def run_airbench(train: Split, test: Split, device: torch.device) -> Row:
    if device.type != "cuda":
        return Row("airbench94", "airbench94", note="needs CUDA: airbench puts its net on the GPU in fp16")
    import airbench

    with tempfile.TemporaryDirectory() as folder, _working_directory(folder):
        # airbench reads cifar10/{train,test}.pt (uint8 NHWC images, int64 labels) from the cwd.
        os.mkdir("cifar10")
        for name, split in (("train", train), ("test", test)):
            torch.save(
                {
                    "images": torch.from_numpy(split.images),
                    "labels": torch.from_numpy(split.labels),
                    "classes": list(split.classes),
                },
                f"cifar10/{name}.pt",
            )
        loader = airbench.CifarLoader(
            "cifar10", train=True, batch_size=1024, aug={"flip": True, "translate": 2}, altflip=True
        )
        airbench.warmup94(train_loader=loader, verbose=False)
        reset_peak_memory(device)
        # Its own log holds its own timing: CUDA events around training only, cumulative per epoch.
        log = io.StringIO()
        with redirect_stdout(log):
            airbench.train94(train_loader=loader, verbose=True)
    cumulative, tta_accuracy = airbench_log(log.getvalue())
    per_epoch = np.diff([0.0, *cumulative])
    return Row(
        "airbench94",
        "airbench94",
        float(np.median(per_epoch)),
        peak_memory_gib(device),
        tta_accuracy,
        f"{len(cumulative)} epochs, fp16, TTA",
        seconds_to_accuracy=cumulative[-1],
        images_per_epoch=len(train),
    )


def airbench_log(text: str) -> tuple[list[float], float]:
    """(cumulative training seconds after each epoch, final TTA accuracy) from airbench's table:
    rows `|  run  |  epoch  |  train_loss  |  train_acc  |  val_acc  |  tta_val_acc  |  total_time_seconds  |`."""
    cumulative, tta_accuracy = [], None
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 7 or cells[1] == "epoch":
            continue
        if cells[1].isdigit():
            cumulative.append(float(cells[6]))
        elif cells[1] == "eval":
            tta_accuracy = float(cells[5])
    if not cumulative or tta_accuracy is None:
        raise RuntimeError(f"airbench printed no epoch or TTA row:\n{text[-500:]}")
    return cumulative, tta_accuracy


@contextmanager
def _working_directory(path: str):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


# --------------------------------------------------------------------------- table


# Column: width. Fixed, so that each row prints as soon as it is measured.
COLUMNS = {
    "approach": 10,
    "model": 13,
    "device": 22,
    "s/epoch": 8,
    "images/s": 8,
    "TFLOP/s": 7,
    "s to acc": 8,
    "peak GPU GiB": 12,
    "test acc": 8,
    "ours/reference": 14,
    "ours/airbench": 13,
    "note": 52,
}


def render(cells: list[str]) -> str:
    return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, COLUMNS.values())) + " |"


def header() -> str:
    return render(list(COLUMNS)) + "\n|" + "|".join("-" * (width + 2) for width in COLUMNS.values()) + "|"


def table_row(row: Row, earlier: list[Row], device: torch.device) -> str:
    """One row; ours is compared with the reference and airbench rows measured before it."""
    per_epoch = row.seconds_per_epoch
    throughput = per_epoch and row.images_per_epoch / per_epoch
    # Compared by images/s: our epochs skip the last partial batch, the others' do not.
    others = {
        (other.approach, other.model): other.images_per_epoch / other.seconds_per_epoch
        for other in earlier
        if other.seconds_per_epoch
    }
    faster_than_reference = faster_than_airbench = ""
    if row.approach == "ours" and throughput:
        reference = others.get(("reference", row.model))
        airbench_speed = others.get(("airbench94", "airbench94"))
        faster_than_reference = f"{throughput / reference:.2f}x" if reference else ""
        faster_than_airbench = f"{throughput / airbench_speed:.2f}x" if airbench_speed else "n/a"
    return render(
        [
            row.approach,
            row.model,
            device_name(device) if per_epoch else "-",
            _number(per_epoch, "{:.3f}"),
            _number(throughput, "{:.0f}"),
            _number(
                row.train_flops_per_image and throughput and row.train_flops_per_image * throughput / 1e12, "{:.3g}"
            ),
            _number(row.seconds_to_accuracy, "{:.2f}"),
            _number(row.peak_memory_gib, "{:.2f}"),
            _number(row.test_accuracy, "{:.4f}"),
            faster_than_reference,
            faster_than_airbench,
            row.note,
        ]
    )


def _number(value, form: str) -> str:
    return form.format(value) if value is not None else "n/a"


def measured(run, approach: str, model: str) -> Row:
    """The row run() measures, or one that says why it could not (airbench not installed...)."""
    try:
        return run()
    except Exception as error:  # a failed row must not lose the others
        return Row(approach, model, note=f"failed: {type(error).__name__}: {' '.join(str(error).split())[:80]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/cifar10", help="the download stage's output folder")
    parser.add_argument("--train-limit", type=int, default=None, help="class-balanced training images (default: all)")
    parser.add_argument("--test-limit", type=int, default=None, help="class-balanced test images (default: all)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=5,
        help="timed epochs per row, after one warm-up epoch; the row reports their median",
    )
    parser.add_argument("--batch-size", type=int, default=RECIPE.batch_size, help="default: the recipe's 512")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=("ours", "reference", "airbench", "resnet18"), help="leave rows out"
    )
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train = class_balanced_subset(load_split(args.data, "train"), args.train_limit, "--train-limit")
    test = class_balanced_subset(load_split(args.data, "test"), args.test_limit, "--test-limit")
    models = [m for m in MODELS if not (m.name == "resnet18" and "resnet18" in args.skip)]
    steps = len(train) // args.batch_size
    print(
        f"{len(train)} training images ({steps} full batches of {args.batch_size}), {len(test)} test images, "
        f"median of {args.epochs} timed epochs after 1 warm-up; torch {torch.__version__}; {device_name(device)}"
    )
    print(header(), flush=True)
    # airbench and the reference first, so that each of our rows prints with both ratios.
    plan = [] if "airbench" in args.skip else [("airbench94", "airbench94", lambda: run_airbench(train, test, device))]
    for config in models:
        if "reference" not in args.skip:
            plan.append(
                (
                    "reference",
                    config.name,
                    partial(run_reference, config, train, test, args.epochs, args.batch_size, device),
                )
            )
        if "ours" not in args.skip:
            plan.append(
                ("ours", config.name, partial(run_ours, config, train, test, args.epochs, args.batch_size, device))
            )
    rows = []
    for approach, model, run in plan:
        row = measured(run, approach, model)
        print(table_row(row, rows, device), flush=True)
        rows.append(row)


if __name__ == "__main__":
    run_stage(main, output_folders=())  # it writes no outputs to sweep
