"""params.yaml as typed, validated objects: each field with its type, default and allowed range.

Every stage loads and validates the whole file before doing any work, so a typo in any
section stops the pipeline at its first stage with one line that names the key, the
value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cifar.errors import ConfigError, short_repr
from cifar.params_file import read_params_file

IMAGE_SIZE = 32
# CIFAR-10's split sizes: the most any limit can ask for, and what the synthetic set mirrors.
SPLIT_SIZES = {"train": 50_000, "test": 10_000}

# Upper bounds of the count params. Training counts stop at about what the fastest GPU
# measured does in a day: an H200 runs the default recipe (ResNet-9, 97 steps of 512 images
# per epoch) at 0.53 s per epoch, 183 optimizer steps per second, so a day (86,400 s) is
# 163,000 epochs or 15.8 million steps. A larger value is a slip (a zero too many), refused
# before it holds a machine for days and fills memory with per-step records (lr_find keeps
# two numbers per step, train one: 32 bytes each).
MAX_EPOCHS = 100_000
MAX_STEPS = 10_000_000  # lr_find.num_iter, and train.epochs x the steps of an epoch
# Galleries are drawn on the CPU, five images to a 220-pixel row, at a cost that grows faster
# than their size: 500 images took 61 s of CPU and 415 MB, 1,000 took 244 s and 777 MB
# (2-core CPU, 2026-11-30); matplotlib refuses a figure over 65,536 pixels (1,485 images).
MAX_GALLERY_IMAGES = 500
# Grad-CAM draws two galleries per layer; four times the default two layers is plenty.
MAX_EXPLAIN_LAYERS = 8
# Linux's PATH_MAX; a NUL byte cannot be part of any path.
MAX_PATH_LENGTH = 4096


# Learning rates and weight decay reach torch's optimizers as float32 factors: from about
# 1e37 (3.4e38 over Adam's first bias correction) a step ended in a raw RuntimeError. A rate
# above a few diverges at its first step anyway, so 1,000 refuses nothing that trains. Below
# 1e-30 a step moves no float32 weight, and 1e-320 is 0 in float32: nothing trained, and the
# chance-level advice was to lower max_lr; a range test's start_lr that small overflowed
# end_lr / start_lr.
MAX_OPTIMIZER_FACTOR = 1000
MIN_LEARNING_RATE = 1e-30
LEARNING_RATE = f"a number from {MIN_LEARNING_RATE:g} to {MAX_OPTIMIZER_FACTOR}"
# Weight decay in use runs from 1e-7 (the reference recipe) to about 5e-4; at 1,000 Adam's
# weights collapsed and the run was called diverged.
MAX_WEIGHT_DECAY = 1


def limited(default, check: typing.Callable[[typing.Any], bool], allowed: str):
    """A field whose values, once of the right type, must pass `check`; `allowed` says in
    words what passes, for the error message."""
    return field(default=default, metadata={"allowed": (check, allowed)})


@dataclass(frozen=True)
class ModelConfig:
    name: Literal["custom_resnet", "resnet18"] = "custom_resnet"
    norm: Literal["batch", "group"] = "batch"
    # resnet18 only: 1 keeps layer4 at 8x8, as in the GroupNorm reference run; 2 gives 4x4.
    layer4_stride: Literal[1, 2] = 2


# Where data.source "official" is downloaded to, relative to the working directory: the
# download stage and a notebook started in the same folder share one copy.
DOWNLOAD_CACHE = "data/downloads"


@dataclass(frozen=True)
class DataConfig:
    # "official" (torchvision's md5-checked download), "synthetic", or a local path.
    source: str = limited(
        "official",
        lambda v: 0 < len(v) <= MAX_PATH_LENGTH and "\0" not in v,
        f'"official", "synthetic" or a path of 1 to {MAX_PATH_LENGTH} characters without NUL bytes',
    )
    train_limit: int | None = limited(
        None,
        lambda v: v is None or 10 <= v <= SPLIT_SIZES["train"],
        f"null (all) or an integer from 10 to {SPLIT_SIZES['train']}, the train split's size",
    )
    test_limit: int | None = limited(
        None,
        lambda v: v is None or 10 <= v <= SPLIT_SIZES["test"],
        f"null (all) or an integer from 10 to {SPLIT_SIZES['test']}, the test split's size",
    )


@dataclass(frozen=True)
class AugmentConfig:
    crop_padding: int = limited(4, lambda v: 0 <= v <= IMAGE_SIZE, f"an integer from 0 to {IMAGE_SIZE}")
    flip: bool = True
    cutout: int = limited(8, lambda v: 0 <= v <= IMAGE_SIZE, f"an integer from 0 (off) to {IMAGE_SIZE}, the image side")


@dataclass(frozen=True)
class LRFindConfig:
    start_lr: float = limited(1e-7, lambda v: MIN_LEARNING_RATE <= v <= MAX_OPTIMIZER_FACTOR, LEARNING_RATE)
    end_lr: float = limited(0.1, lambda v: MIN_LEARNING_RATE <= v <= MAX_OPTIMIZER_FACTOR, LEARNING_RATE)
    num_iter: int = limited(
        100, lambda v: 2 <= v <= MAX_STEPS, f"an integer from 2 to {MAX_STEPS}, about a GPU-day of steps"
    )
    step_mode: Literal["exp", "linear"] = "exp"
    # min_loss_div10 learns where min_loss, the reference runs' rule, sits at the edge of
    # divergence (docs/lr-finder.md, "The pick").
    pick: Literal["min_loss", "min_loss_div10", "steepest", "valley"] = "min_loss_div10"


# The reference runs divide max_lr by 25 to 10,000; both factors at 1e300 made the last
# steps' learning rate 0.0, a schedule that ends in no training at all.
MAX_DIV_FACTOR = 1_000_000


@dataclass(frozen=True)
class OneCycleConfig:
    max_at_epoch: int = limited(5, lambda v: v >= 1, "an integer >= 1")
    div_factor: float = limited(100.0, lambda v: 1 <= v <= MAX_DIV_FACTOR, f"a number from 1 to {MAX_DIV_FACTOR:,}")
    final_div_factor: float = limited(
        100.0, lambda v: 1 <= v <= MAX_DIV_FACTOR, f"a number from 1 to {MAX_DIV_FACTOR:,}"
    )
    three_phase: bool = False
    anneal_strategy: Literal["linear", "cos"] = "linear"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = limited(
        24, lambda v: 1 <= v <= MAX_EPOCHS, f"an integer from 1 to {MAX_EPOCHS}, about a GPU-day of epochs"
    )
    # A batch cannot hold more images than the largest split; larger values only waste memory.
    batch_size: int = limited(
        512,
        lambda v: 1 <= v <= SPLIT_SIZES["train"],
        f"an integer from 1 to {SPLIT_SIZES['train']}, the train split's size",
    )
    weight_decay: float = limited(1e-7, lambda v: 0 <= v <= MAX_WEIGHT_DECAY, f"a number from 0 to {MAX_WEIGHT_DECAY}")
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = limited(0.9, lambda v: 0 <= v < 1, "a number from 0 to below 1")  # sgd only
    nesterov: bool = False  # sgd only
    # "find" takes the LR the lr_find stage chose; a number overrides it.
    max_lr: float | Literal["find"] = limited(
        "find", lambda v: v == "find" or MIN_LEARNING_RATE <= v <= MAX_OPTIMIZER_FACTOR, f'"find" or {LEARNING_RATE}'
    )
    onecycle: OneCycleConfig = field(default_factory=OneCycleConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    # Bit-identical weights for the same params on the same GPU model, driver and torch.
    deterministic: bool = True


@dataclass(frozen=True)
class EvaluateConfig:
    # How many misclassified test images the gallery shows.
    misclassified: int = limited(
        20,
        lambda v: 0 <= v <= MAX_GALLERY_IMAGES,
        f"an integer from 0 to {MAX_GALLERY_IMAGES}, the most a gallery shows",
    )
    tta: bool = False  # also report accuracy with horizontal-flip test-time augmentation


@dataclass(frozen=True)
class ExplainConfig:
    # Module names to run Grad-CAM at; null = the model's defaults (cifar.reporting.explain.DEFAULT_LAYERS).
    layers: list[str] | None = limited(  # noqa: RUF009 (limited() returns a dataclasses.field)
        None,
        lambda v: v is None or (1 <= len(v) <= MAX_EXPLAIN_LAYERS and len(set(v)) == len(v)),
        f"null (the model's defaults) or a list of 1 to {MAX_EXPLAIN_LAYERS} different module names",
    )
    images: int = limited(
        10,
        lambda v: 1 <= v <= MAX_GALLERY_IMAGES,
        f"an integer from 1 to {MAX_GALLERY_IMAGES}, the most a gallery shows",
    )


@dataclass(frozen=True)
class Params:
    # NumPy's legacy seeding, which seed_everything uses, takes 32-bit seeds only.
    seed: int = limited(0, lambda v: 0 <= v <= 2**32 - 1, "an integer from 0 to 4294967295 (2**32 - 1)")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    lr_find: LRFindConfig = field(default_factory=LRFindConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    return parse_params(read_params_file(path), source=str(path))


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    params = _build(Params, raw, prefix="", source=source)
    _check_across_keys(params, source)
    return params


def parse_model_config(raw: object, source: str) -> ModelConfig:
    """A model section on its own, as a saved model records it, checked by the rules of
    params.yaml's: a value the train stage could not have saved is one line, not a traceback."""
    return parse_params({"model": raw}, source).model


def _build(cls, raw: object, prefix: str, source: str):
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: {prefix.rstrip('.') or 'top level'} = {short_repr(raw)}: expected a mapping of keys"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields), key=str)  # YAML keys may be numbers or null too
    if unknown:
        name = unknown[0]
        if not isinstance(name, str) or len(name) > 60:
            name = short_repr(name)
        elif not (name.isascii() and name.isprintable()):
            name = ascii(name)  # escaped: a look-alike letter or an invisible one shows as what it is
        raise ConfigError(f"{source}: unknown key {prefix}{name}; allowed keys here: {', '.join(fields)}")
    values = {}
    for name, value in raw.items():
        key = prefix + name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, prefix=key + ".", source=source)
        else:
            values[name] = _coerce(key, value, hint, source)
            check, allowed = fields[name].metadata.get("allowed", (None, None))
            if check and not check(values[name]):
                raise ConfigError(f"{source}: {key} = {short_repr(value)} is not allowed; expected {allowed}")
    return cls(**values)


def _coerce(key: str, value: object, hint, source: str):
    """Return value if it fits the type hint (ints are accepted where floats are)."""
    options = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    for option in options:
        if option is type(None) and value is None:
            return None
        if typing.get_origin(option) is Literal and value in typing.get_args(option):
            return value
        # bool is an int in Python; a YAML `true` must not pass as a number.
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(key, value, source)
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    raise ConfigError(f"{source}: {key} = {short_repr(value)} is not allowed; expected {_describe(options)}")


def _finite(key: str, value: int | float, source: str) -> float:
    """value as a float; inf and nan (YAML .inf, .nan) would run on and poison every result."""
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float's range
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(
            f"{source}: {key} = {short_repr(value)} is not allowed; expected a finite number (not inf or nan)"
        )
    return number


def _describe(options) -> str:
    words = []
    for option in options:
        if typing.get_origin(option) is Literal:
            words.append("one of " + ", ".join(repr(v) for v in typing.get_args(option)))
        elif option is type(None):
            words.append("null")
        elif typing.get_origin(option) is list:
            words.append("a list of strings")
        else:
            words.append({bool: "true or false", int: "an integer", float: "a number", str: "a string"}[option])
    return " or ".join(words)


def _check_across_keys(params: Params, source: str) -> None:
    onecycle, epochs = params.train.onecycle, params.train.epochs
    # OneCycle needs steps after the peak to anneal; three_phase also climbs back down
    # over as many epochs as it took to rise, before the final anneal.
    last_peak = (epochs - 1) // 2 if onecycle.three_phase else epochs - 1
    if onecycle.max_at_epoch > last_peak:
        phases = "three_phase = true" if onecycle.three_phase else "two phases"
        if last_peak < 1:
            problem = (
                f"OneCycle needs epochs after its peak to anneal in ({phases}); "
                f"set train.epochs to {3 if onecycle.three_phase else 2} or more"
            )
        else:
            problem = (
                f"the OneCycle peak must come at epoch {last_peak} or earlier ({phases}); also set "
                f"train.onecycle.max_at_epoch to {last_peak} or less (-S train.onecycle.max_at_epoch={last_peak})"
            )
        raise ConfigError(
            f"{source}: train.onecycle.max_at_epoch = {onecycle.max_at_epoch} is not allowed with "
            f"train.epochs = {epochs}: {problem}"
        )
    if params.lr_find.end_lr <= params.lr_find.start_lr:
        raise ConfigError(
            f"{source}: lr_find.end_lr = {params.lr_find.end_lr} is not allowed; "
            f"it must be larger than lr_find.start_lr = {params.lr_find.start_lr}"
        )
    if params.model.name != "resnet18" and params.model.norm != "batch":
        raise ConfigError(
            f"{source}: model.norm = {params.model.norm!r} is not allowed with model.name = "
            f"{params.model.name!r}; only resnet18 has a GroupNorm variant"
        )
    if params.model.name != "resnet18" and params.model.layer4_stride != 2:
        raise ConfigError(
            f"{source}: model.layer4_stride = {params.model.layer4_stride} is not allowed with model.name = "
            f"{params.model.name!r}; only resnet18 has a layer4 (leave it at 2)"
        )
    if params.train.nesterov and (params.train.optimizer != "sgd" or params.train.momentum == 0):
        raise ConfigError(f"{source}: train.nesterov = true needs train.optimizer = 'sgd' and train.momentum > 0")
