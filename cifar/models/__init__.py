"""Models by name, as params.yaml's model section names them, and the saved-model format."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from cifar.atomic import atomic_path
from cifar.config import ModelConfig, parse_model_config
from cifar.dataset import CIFAR10_MEAN, CIFAR10_STD
from cifar.errors import ConfigError, DataError, is_out_of_memory, one_line, short_repr
from cifar.models.custom_resnet import CustomResNet
from cifar.models.resnet import ResNet18
from cifar.reading import torch_file_problem

# A saved model's pickled structure (names, config, classes) takes about 10 KB for ResNet18.
MAX_MODEL_STRUCTURE_BYTES = 1 << 20


def build_model(config: ModelConfig, num_classes: int = 10) -> nn.Module:
    if config.name == "custom_resnet":
        return CustomResNet(num_classes)
    if config.name == "resnet18":
        return ResNet18(num_classes, norm=config.norm, layer4_stride=config.layer4_stride)
    raise ValueError(f"unknown model {config.name!r}")


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to device; on CUDA also to channels_last, matching DeviceLoader's batches."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def input_normalization() -> dict[str, list[float]]:
    """The channel statistics every loader normalises images by, as the model file records them."""
    return {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}


def save_trained(
    path: str | Path,
    model: nn.Module,
    config: ModelConfig,
    classes: tuple[str, ...],
    history: Sequence[dict] = (),
    history_train_sha256: str | None = None,
    history_test_sha256: str | None = None,
    trained_with: dict | None = None,
) -> None:
    """Weights plus everything needed to rebuild the model and normalise its input, and the
    per-epoch history it was trained along (a few numbers an epoch) with the SHA-256 of the
    splits its training and test columns were measured on, and the params it was trained with
    (train's declared values), so that the curves drawn beside it can be checked to be its
    own, of the splits and of the params beside them."""
    weights = {name: tensor.cpu() for name, tensor in model.state_dict().items()}
    payload = {
        "model": asdict(config),
        "classes": list(classes),
        "normalization": input_normalization(),
        "state_dict": weights,
        # One string object per key: pickle writes an object it has seen as a reference, so rows
        # restored from a checkpoint (keys of their own) made a resumed run's file differ in bytes.
        "history": [{sys.intern(key): value for key, value in row.items()} for row in history],
        "history_train_sha256": history_train_sha256,
        "history_test_sha256": history_test_sha256,
        "trained_with": trained_with,
    }
    payload["sha256"] = contents_sha256(payload)
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def contents_sha256(payload: dict) -> str:
    """The SHA-256 of a saved model's entries but this digest: its records as JSON, then its
    weights' names, types, shapes and values, in order."""
    records = {key: value for key, value in payload.items() if key not in ("state_dict", "sha256")}
    digest = hashlib.sha256(json.dumps(records, default=repr).encode())
    for name, tensor in payload["state_dict"].items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainedModel:
    model: nn.Module  # in eval mode, on the requested device
    config: ModelConfig
    classes: tuple[str, ...]
    history: tuple[dict[str, float], ...] | None  # one row per epoch, as save_trained was given it
    history_train_sha256: str | None  # of the training split the history's train columns were measured on
    history_test_sha256: str | None  # of the test split the history's test columns were measured on
    trained_with: dict | None  # train's declared params, as params_file.declared_values read them


def load_trained(path: str | Path, device: torch.device) -> TrainedModel:
    """The model the train stage saved; anything else is a one-line DataError.

    So is a model trained on inputs normalised otherwise than the loaders now normalise
    them: it would run, but on inputs unlike those it learnt from.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found; train a model first with `dvc repro train`")
    if not path.is_file():
        raise DataError(
            f"{path}: a folder, named pipe or device, not a file; remove it and re-create it with `dvc repro train`"
        )
    problem = torch_file_problem(path, MAX_MODEL_STRUCTURE_BYTES)
    if problem:
        raise _not_a_model(path, problem)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Not torch's message: it advises weights_only=False, which would run whatever code the file holds.
        raise _not_a_model(
            path, "damaged, or holding Python objects, which are never loaded as they could run code"
        ) from None
    except (OSError, RuntimeError, EOFError, UnicodeDecodeError) as error:  # a pickled name that is not UTF-8
        if is_out_of_memory(error):
            raise  # the stage says so, where "re-create the model" could not help
        raise _not_a_model(path, f"unreadable or truncated: {one_line(error)}") from None
    try:
        # Weights edited by hand with every record kept (a layer negated) were evaluated,
        # drawn and explained beside the training curves of the weights train saved; so was a
        # config edited under them (ResNet18's layer4_stride).
        recorded = payload.get("sha256")  # None in a model saved before train recorded it
        for name, value in payload["state_dict"].items():
            # One number viewed 1.5e9 times (stride 0) is a byte in the file; its digest took 1.5 GB.
            if torch.is_tensor(value) and value.numel() * value.element_size() > value.untyped_storage().nbytes():
                raise _not_a_model(path, f"its weight {short_repr(name)} is larger than the data saved for it")
        if recorded is not None and recorded != contents_sha256(payload):
            raise DataError(
                f"{path}: changed since train saved it (the SHA-256 of its contents is not the one it recorded); "
                f"re-create it with `dvc repro train`"
            )
        config = parse_model_config(payload["model"], source="its model config")
        classes = payload["classes"]
        # The stages print the names and match them to the data's, so a file re-saved with
        # numbers for names ended in a TypeError in evaluate.
        if not (
            isinstance(classes, (list, tuple))
            and classes
            and all(isinstance(name, str) and name for name in classes)
            and len(set(classes)) == len(classes)
        ):
            raise _not_a_model(path, f"classes = {short_repr(classes)}, not a list of different, non-empty names")
        classes = tuple(classes)
        # Models saved before train recorded it load for evaluate and explain; figures refuses them.
        history = payload.get("history")
        if history is not None and not (isinstance(history, list) and all(_is_history_row(row) for row in history)):
            raise _not_a_model(path, f"history = {short_repr(history)}, not a list of rows of numbers")
        measured_on = {split: payload.get(f"history_{split}_sha256") for split in ("train", "test")}
        for split, digest in measured_on.items():
            if digest is not None and not (isinstance(digest, str) and re.fullmatch("[0-9a-f]{64}", digest)):
                raise _not_a_model(path, f"history_{split}_sha256 = {short_repr(digest)}, not a SHA-256 digest")
        trained_with = payload.get("trained_with")
        if trained_with is not None and not isinstance(trained_with, dict):
            raise _not_a_model(path, f"trained_with = {short_repr(trained_with)}, not the params it was trained with")
        model = build_model(config, len(classes))
        model.load_state_dict(payload["state_dict"])
        normalization = payload["normalization"]
    except (ConfigError, KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        if is_out_of_memory(error):
            raise
        raise _not_a_model(path, one_line(error)) from None
    if _as_lists(normalization) != input_normalization():
        raise DataError(
            f"{path}: trained on images normalised by {short_repr(normalization)}, not by the loaders' "
            f"{input_normalization()}; re-create it with `dvc repro train`"
        )
    broken = next((name for name, tensor in model.state_dict().items() if not torch.isfinite(tensor).all()), None)
    if broken:
        raise DataError(
            f"{path}: the weights hold NaN or infinity (first in {broken}); the run that saved them diverged: "
            f"re-create it with `dvc repro train`"
        )
    return TrainedModel(
        on_device(model, device).eval(),
        config,
        classes,
        None if history is None else tuple(history),
        measured_on["train"],
        measured_on["test"],
        trained_with,
    )


def _is_history_row(row: object) -> bool:
    return isinstance(row, dict) and all(
        isinstance(key, str) and isinstance(value, (int, float)) and not isinstance(value, bool)
        for key, value in row.items()
    )


def _as_lists(normalization: object) -> object:
    """The statistics with tuples as lists: a file re-saved with tuples holds the same values."""
    if not isinstance(normalization, dict):
        return normalization
    return {key: list(value) if isinstance(value, tuple) else value for key, value in normalization.items()}


def _not_a_model(path: Path, why: str) -> DataError:
    return DataError(f"{path}: not a model saved by the train stage ({why}); re-create it with `dvc repro train`")
