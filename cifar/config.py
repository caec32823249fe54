"""params.yaml as typed, validated objects: each field with its type, default and allowed range.

Every stage loads and validates the whole file before doing any work, so a typo in any
section stops the pipeline at its first stage with one line that names the key, the
value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
import operator
import types
import typing
from pathlib import Path
from typing import Annotated, Literal

import pydantic.dataclasses
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from cifar.errors import ConfigError, short_repr
from cifar.params_file import PARAMS_FILE, read_params_file

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
MAX_STEPS = 10_000_000  # train.epochs x the steps of an epoch
# A range test sweeps the LR once (torch-lr-finder's default is 100 steps, the recipes' 20 to
# 200): a thousand times that is a slip. Its curve is read whole, as Python numbers, by lr_find,
# train and figures: 10,000,000 steps took train 2.1 GB and figures 2.3 GB more.
MAX_RANGE_TEST_STEPS = 100_000
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


# Every value is a Strict type (no "3" for 3, no true for 1, ints welcome where floats go, and
# floats of whole numbers where counts go);
# the sections themselves are lax only so that params.yaml's mappings can fill them. A field's
# description says in words what passes its bounds: the one-line error quotes it.
section = pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))


def _whole_number_as_int(value: object) -> object:
    """4.0 as 4: DVC compares params by value, so `dvc exp run -S train.epochs=4.0` ran no
    stage and recorded an experiment whose params.yaml every stage then refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A count: an integer, or a float of a whole number; never "3" or true.
Count = Annotated[StrictInt, BeforeValidator(_whole_number_as_int)]


def _distinct(names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        raise ValueError  # no words: the field's description is the message
    return names


@section
class ModelConfig:
    name: Literal["custom_resnet", "resnet18"] = "custom_resnet"
    norm: Literal["batch", "group"] = "batch"
    # resnet18 only: 1 keeps layer4 at 8x8, as in the GroupNorm reference run; 2 gives 4x4.
    layer4_stride: Count = Field(2, ge=1, le=2, description="one of 1, 2")


# Where data.source "official" is downloaded to, relative to the working directory: the
# download stage and a notebook started in the same folder share one copy.
DOWNLOAD_CACHE = "data/downloads"


@section
class DataConfig:
    # "official" (torchvision's md5-checked download), "synthetic", or a local path.
    source: StrictStr = Field(
        "official",
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        pattern="^[^\0]*$",
        description=f'"official", "synthetic" or a path of 1 to {MAX_PATH_LENGTH} characters without NUL bytes',
    )
    train_limit: Count | None = Field(
        None,
        ge=10,
        le=SPLIT_SIZES["train"],
        description=f"null (all) or an integer from 10 to {SPLIT_SIZES['train']}, the train split's size",
    )
    test_limit: Count | None = Field(
        None,
        ge=10,
        le=SPLIT_SIZES["test"],
        description=f"null (all) or an integer from 10 to {SPLIT_SIZES['test']}, the test split's size",
    )


@section
class AugmentConfig:
    crop_padding: Count = Field(4, ge=0, le=IMAGE_SIZE, description=f"an integer from 0 to {IMAGE_SIZE}")
    flip: StrictBool = True
    cutout: Count = Field(
        8, ge=0, le=IMAGE_SIZE, description=f"an integer from 0 (off) to {IMAGE_SIZE}, the image side"
    )


# The least relative rise from one range-test step to the next: far above a float's 2.2e-16,
# so that rounding never makes two steps' learning rates equal.
MIN_LR_FIND_RISE = 1e-9


@section
class LRFindConfig:
    start_lr: StrictFloat = Field(1e-7, ge=MIN_LEARNING_RATE, le=MAX_OPTIMIZER_FACTOR, description=LEARNING_RATE)
    end_lr: StrictFloat = Field(0.1, ge=MIN_LEARNING_RATE, le=MAX_OPTIMIZER_FACTOR, description=LEARNING_RATE)
    num_iter: Count = Field(
        100,
        ge=2,
        le=MAX_RANGE_TEST_STEPS,
        description=f"an integer from 2 to {MAX_RANGE_TEST_STEPS}, a thousand times the default",
    )
    step_mode: Literal["exp", "linear"] = "exp"
    # min_loss_div10 learns where min_loss, the reference runs' rule, sits at the edge of
    # divergence (docs/lr-finder.md, "The pick").
    pick: Literal["min_loss", "min_loss_div10", "steepest", "valley"] = "min_loss_div10"


# The reference runs divide max_lr by 25 to 10,000; both factors at 1e300 made the last
# steps' learning rate 0.0, a schedule that ends in no training at all.
MAX_DIV_FACTOR = 1_000_000
DIV_FACTOR = f"a number from 1 to {MAX_DIV_FACTOR:,}"


@section
class OneCycleConfig:
    max_at_epoch: Count = Field(
        5, ge=1, le=MAX_EPOCHS - 1, description=f"an integer from 1 to {MAX_EPOCHS - 1}, before the last epoch"
    )
    div_factor: StrictFloat = Field(100.0, ge=1, le=MAX_DIV_FACTOR, description=DIV_FACTOR)
    final_div_factor: StrictFloat = Field(100.0, ge=1, le=MAX_DIV_FACTOR, description=DIV_FACTOR)
    three_phase: StrictBool = False
    anneal_strategy: Literal["linear", "cos"] = "linear"
    # torch's OneCycleLR default: SGD's momentum (Adam's first beta) cycles from 0.95 down to
    # 0.85 at the peak and back, whatever train.momentum says; false keeps the optimizer's own.
    cycle_momentum: StrictBool = True


@section
class TrainConfig:
    epochs: Count = Field(
        24, ge=1, le=MAX_EPOCHS, description=f"an integer from 1 to {MAX_EPOCHS}, about a GPU-day of epochs"
    )
    # A batch cannot hold more images than the largest split; larger values only waste memory.
    batch_size: Count = Field(
        512,
        ge=1,
        le=SPLIT_SIZES["train"],
        description=f"an integer from 1 to {SPLIT_SIZES['train']}, the train split's size",
    )
    weight_decay: StrictFloat = Field(
        1e-7, ge=0, le=MAX_WEIGHT_DECAY, description=f"a number from 0 to {MAX_WEIGHT_DECAY}"
    )
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: StrictFloat = Field(0.9, ge=0, lt=1, description="a number from 0 to below 1")  # sgd only
    nesterov: StrictBool = False  # sgd only
    # "find" takes the LR the lr_find stage chose; a number overrides it.
    max_lr: Annotated[StrictFloat, Field(ge=MIN_LEARNING_RATE, le=MAX_OPTIMIZER_FACTOR)] | Literal["find"] = Field(
        "find", description=f'"find" or {LEARNING_RATE}'
    )
    onecycle: OneCycleConfig = Field(default_factory=OneCycleConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: StrictBool = False
    # Bit-identical weights for the same params on the same GPU model, driver and torch.
    deterministic: StrictBool = True


@section
class EvaluateConfig:
    # How many misclassified test images the gallery shows.
    misclassified: Count = Field(
        20,
        ge=0,
        le=MAX_GALLERY_IMAGES,
        description=f"an integer from 0 to {MAX_GALLERY_IMAGES}, the most a gallery shows",
    )
    tta: StrictBool = False  # also report accuracy with horizontal-flip test-time augmentation


@section
class ExplainConfig:
    # Module names to run Grad-CAM at; null = the model's defaults (cifar.reporting.explain.DEFAULT_LAYERS).
    layers: (
        Annotated[list[StrictStr], Field(min_length=1, max_length=MAX_EXPLAIN_LAYERS), AfterValidator(_distinct)] | None
    ) = Field(
        None, description=f"null (the model's defaults) or a list of 1 to {MAX_EXPLAIN_LAYERS} different module names"
    )
    images: Count = Field(
        10,
        ge=1,
        le=MAX_GALLERY_IMAGES,
        description=f"an integer from 1 to {MAX_GALLERY_IMAGES}, the most a gallery shows",
    )


@section
class Params:
    # NumPy's legacy seeding, which seed_everything uses, takes 32-bit seeds only.
    seed: Count = Field(0, ge=0, le=2**32 - 1, description="an integer from 0 to 4294967295 (2**32 - 1)")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    lr_find: LRFindConfig = Field(default_factory=LRFindConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    return parse_params(read_params_file(path), source=str(path))


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    try:
        params = _PARAMS.validate_python(raw)
    except ValidationError as invalid:
        raise ConfigError(f"{source}: {_one_line(invalid.errors(), raw)}") from None
    _check_across_keys(params, source)
    return params


def parse_model_config(raw: object, source: str) -> ModelConfig:
    """A model section on its own, as a saved model records it, checked by the rules of
    params.yaml's: a value the train stage could not have saved is one line, not a traceback."""
    return parse_params({"model": raw}, source).model


_PARAMS = TypeAdapter(Params)
_UNKNOWN_KEY = {"unexpected_keyword_argument", "invalid_key"}
# pydantic's error types for a value of the right type outside its field's bounds.
_OUT_OF_BOUNDS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "too_short",
    "too_long",
    "string_too_short",
    "string_too_long",
    "string_pattern_mismatch",
    "value_error",
}


def _one_line(errors: list[dict], raw: dict) -> str:
    """pydantic's first complaint as one line that names the key, the value and what the
    key takes. A field that takes several types (max_lr: a number or "find") gets one error
    per type; the first says whether the value was of a right type."""
    # An unknown key first (a misspelt key's value is no clue), the shallowest, by name.
    unknown = sorted((e for e in errors if e["type"] in _UNKNOWN_KEY), key=lambda e: (len(e["loc"]), str(e["loc"][-1])))
    error = (unknown or errors)[0]
    section, key, field = Params, [], None
    for part in error["loc"]:
        fields = section.__pydantic_fields__
        if part not in fields:  # pydantic's location leads on only through the section's keys
            unknown_key = ".".join([*key, _shown_key(_as_written(part, functools.reduce(operator.getitem, key, raw)))])
            return f"unknown key {unknown_key}; allowed keys here: {', '.join(fields)}"
        key.append(part)
        field = fields[part]
        if not dataclasses.is_dataclass(field.annotation):
            break
        section = field.annotation
    else:
        return f"{'.'.join(key) or 'top level'} = {short_repr(error['input'])}: expected a mapping of keys"
    value = functools.reduce(operator.getitem, key, raw)  # a whole list, where pydantic names an entry
    if error["type"] == "finite_number" or (error["type"] == "float_type" and _is_integer(value)):
        expected = "a finite number (not inf or nan)"  # inf and nan would run on and poison every result
    elif error["type"] == "string_unicode":  # a YAML escape such as "\ud800" makes one
        expected = "text without an unpaired surrogate, which no path or name holds"
    elif error["type"] in _OUT_OF_BOUNDS:
        expected = field.description
    else:
        expected = _describe(typing.get_type_hints(section)[key[-1]])
    if (
        error["type"] == "string_type"
        and isinstance(value, datetime.date | int | float)
        and not isinstance(value, bool)
    ):
        # `source: 2024-01-15` or `-S data.source=1e5`: the user wrote text, YAML read a date or a number
        read_as = "a date" if isinstance(value, datetime.date) else "a number"
        expected += (
            f" (YAML reads this as {read_as}; quote it for text: {key[-1]}: '...', or -S \"{'.'.join(key)}='...'\")"
        )
    # Escaped outside ASCII: 'adam' with a Cyrillic first letter read "'adam' is not allowed; expected one of 'adam'".
    shown = short_repr(value).encode("ascii", "backslashreplace").decode()
    return f"{'.'.join(key)} = {shown} is not allowed; expected {expected}"


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_written(name: object, section: dict) -> object:
    """The key of section that pydantic's location names: it gives `true` as 1, null as 'None'."""
    for matches in (
        lambda key: key == name and type(key) is type(name),
        lambda key: key == name,
        lambda key: str(key) == str(name),
    ):
        found = [key for key in section if matches(key)]
        if found:
            return found[0]
    return name


def _shown_key(name: object) -> str:
    """A YAML key may be a number or null, long, or hold a look-alike or invisible letter."""
    if name is None:
        return "null (YAML's null; quote it for text)"
    if isinstance(name, bool):
        return f"{str(name).lower()} (YAML's boolean; quote it for text)"
    if not isinstance(name, str) or len(name) > 60:
        return short_repr(name)
    # quoted, too, where a space leads or ends it: `epochs ` read as if `epochs` were unknown
    if not (name.isascii() and name.isprintable()) or name != name.strip():
        return ascii(name)
    return name


def _describe(hint) -> str:
    """The types a field takes, in words: "a number or one of 'find'"."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
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


def _epochs_for_peak(peak: int, three_phase: bool) -> int:
    return 2 * peak + 1 if three_phase else peak + 1


def _peak_fixes(params: Params, last_peak: int) -> str:
    """Why a OneCycle peak at train.onecycle.max_at_epoch is too late for train.epochs, and the
    fixes that each run: an earlier peak, epochs enough for this one (none past the cap on
    epochs: 100,001 were advised), or the shortest run with the earliest peak that warms up.
    OneCycle warms up over two steps at least (cifar.training.schedule): a peak at epoch 1 of
    one step an epoch (batches the size of data.train_limit), advised, was refused in turn."""
    onecycle, limit = params.train.onecycle, params.data.train_limit
    # an epoch's steps as the loader counts them, its last partial batch dropped (rounded up, a
    # peak at epoch 1 was advised with 600 of 1,000 images a batch, and train refused it)
    earliest = math.ceil(2 / max(limit // params.train.batch_size, 1)) if limit else 1
    needed = _epochs_for_peak(onecycle.max_at_epoch, onecycle.three_phase)
    shortest = _epochs_for_peak(earliest, onecycle.three_phase)
    fixes = []
    if last_peak >= earliest:
        fixes.append(
            f"set train.onecycle.max_at_epoch to {last_peak} or less (-S train.onecycle.max_at_epoch={last_peak})"
        )
    if needed <= MAX_EPOCHS and onecycle.max_at_epoch >= earliest:  # this peak warms up, given the epochs
        fixes.append(f"set train.epochs to {needed} or more (-S train.epochs={needed})")
    if not fixes or (last_peak < earliest and needed > shortest):
        fixes.append(
            f"set train.epochs to {shortest} and train.onecycle.max_at_epoch to {earliest} (-S train.epochs={shortest} "
            f"-S train.onecycle.max_at_epoch={earliest})"
        )
    phases = "three_phase = true" if onecycle.three_phase else "two phases"
    late = (
        f"the OneCycle peak must come at epoch {last_peak} or earlier"
        if last_peak
        else "OneCycle needs epochs after its peak to anneal in"
    )
    return f"{late} ({phases}); {', or '.join(fixes)}"


def _check_across_keys(params: Params, source: str) -> None:
    onecycle, epochs = params.train.onecycle, params.train.epochs
    # OneCycle needs steps after the peak to anneal; three_phase also climbs back down
    # over as many epochs as it took to rise, before the final anneal.
    last_peak = (epochs - 1) // 2 if onecycle.three_phase else epochs - 1
    if onecycle.max_at_epoch > last_peak:
        raise ConfigError(
            f"{source}: train.onecycle.max_at_epoch = {onecycle.max_at_epoch} is not allowed with "
            f"train.epochs = {epochs}: {_peak_fixes(params, last_peak)}"
        )
    if params.lr_find.end_lr <= params.lr_find.start_lr:
        raise ConfigError(
            f"{source}: lr_find.end_lr = {params.lr_find.end_lr} is not allowed; "
            f"it must be larger than lr_find.start_lr = {params.lr_find.start_lr}"
        )
    finder = params.lr_find
    smallest_rise = (
        math.log(finder.end_lr / finder.start_lr) if finder.step_mode == "exp" else 1 - finder.start_lr / finder.end_lr
    ) / (finder.num_iter - 1)
    if smallest_rise < MIN_LR_FIND_RISE:  # the steps' learning rates rounded to equal floats
        raise ConfigError(
            f"{source}: lr_find.end_lr = {finder.end_lr} is not allowed with lr_find.start_lr = {finder.start_lr} "
            f"and lr_find.num_iter = {finder.num_iter}: the learning rate would rise by less than one part in "
            f"{1 / MIN_LR_FIND_RISE:,.0f} a step, and repeat; widen the range or lower lr_find.num_iter"
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
    # Nesterov's first: told to stop OneCycle cycling a momentum of 0, a Nesterov run was then refused for it.
    if params.train.nesterov and (params.train.optimizer != "sgd" or params.train.momentum == 0):
        raise ConfigError(f"{source}: train.nesterov = true needs train.optimizer = 'sgd' and train.momentum > 0")
    unused_momentum = params.train.momentum != TrainConfig().momentum
    if params.train.optimizer != "sgd" and unused_momentum:
        # Two lr_find curves, momentum 0.5 and 0.9, alike to the last digit: Adam's first beta is its own.
        also = " and train.onecycle.cycle_momentum to false" if params.train.onecycle.cycle_momentum else ""
        raise ConfigError(
            f"{source}: train.momentum = {params.train.momentum} is not used by train.optimizer = "
            f"{params.train.optimizer!r}, whose first beta OneCycle cycles (or Adam's default 0.9 holds); leave it "
            f"at {TrainConfig().momentum}, or set train.optimizer to 'sgd'{also}"
        )
    if params.train.optimizer == "sgd" and params.train.onecycle.cycle_momentum and unused_momentum:
        # Two momentums trained alike to the last digit: OneCycle had set its own.
        raise ConfigError(
            f"{source}: train.momentum = {params.train.momentum} is not used while train.onecycle.cycle_momentum is "
            f"true: OneCycle sets SGD's momentum itself, from 0.95 down to 0.85 and back; set "
            f"train.onecycle.cycle_momentum to false to train at train.momentum"
        )
