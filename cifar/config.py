"""Load params.yaml into typed, validated objects.

Every stage loads and validates the whole file before doing any work, so a typo in any
section stops the pipeline at its first stage with one line that names the key, the
value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from cifar.errors import ConfigError

IMAGE_SIZE = 32
# CIFAR-10's split sizes: the most any limit can ask for, and what the synthetic set mirrors.
SPLIT_SIZES = {"train": 50_000, "test": 10_000}
# params.yaml nests three levels; anything far deeper is a mistake, refused before it
# reaches Python's recursion limit.
MAX_YAML_NESTING = 20


@dataclass(frozen=True)
class ModelConfig:
    name: Literal["custom_resnet", "resnet18"] = "custom_resnet"
    norm: Literal["batch", "group"] = "batch"
    # resnet18 only: 1 keeps layer4 at 8x8, as in the GroupNorm reference run; 2 gives 4x4.
    layer4_stride: Literal[1, 2] = 2


@dataclass(frozen=True)
class DataConfig:
    # "official" (torchvision's md5-checked download), "synthetic", or a local path.
    source: str = "official"
    train_limit: int | None = None
    test_limit: int | None = None


@dataclass(frozen=True)
class AugmentConfig:
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 8


@dataclass(frozen=True)
class LRFindConfig:
    start_lr: float = 1e-7
    end_lr: float = 0.1
    num_iter: int = 100
    step_mode: Literal["exp", "linear"] = "exp"
    # min_loss_div10 learns where min_loss, the reference runs' rule, sits at the edge of
    # divergence (README, "The LR finder's pick").
    pick: Literal["min_loss", "min_loss_div10", "steepest", "valley"] = "min_loss_div10"


@dataclass(frozen=True)
class OneCycleConfig:
    max_at_epoch: int = 5
    div_factor: float = 100.0
    final_div_factor: float = 100.0
    three_phase: bool = False
    anneal_strategy: Literal["linear", "cos"] = "linear"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 24
    batch_size: int = 512
    weight_decay: float = 1e-7
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    # "find" takes the LR the lr_find stage chose; a number overrides it.
    max_lr: float | Literal["find"] = "find"
    onecycle: OneCycleConfig = field(default_factory=OneCycleConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    # Bit-identical weights for the same params on the same GPU model, driver and torch.
    deterministic: bool = True


@dataclass(frozen=True)
class EvaluateConfig:
    misclassified: int = 20  # how many misclassified test images the gallery shows
    tta: bool = False  # also report accuracy with horizontal-flip test-time augmentation


@dataclass(frozen=True)
class ExplainConfig:
    # Module names to run Grad-CAM at; null = the model's defaults (cifar.explain.DEFAULT_LAYERS).
    layers: list[str] | None = None
    images: int = 10


@dataclass(frozen=True)
class Params:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    lr_find: LRFindConfig = field(default_factory=LRFindConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)


# Range rules, checked after types: key -> (predicate, what is allowed).
_RULES: dict[str, tuple[typing.Callable[[object], bool], str]] = {
    # NumPy's legacy seeding, which seed_everything uses, takes 32-bit seeds only.
    "seed": (lambda v: 0 <= v <= 2**32 - 1, "an integer from 0 to 4294967295 (2**32 - 1)"),
    "data.train_limit": (
        lambda v: v is None or 10 <= v <= SPLIT_SIZES["train"],
        f"null (all) or an integer from 10 to {SPLIT_SIZES['train']}, the train split's size",
    ),
    "data.test_limit": (
        lambda v: v is None or 10 <= v <= SPLIT_SIZES["test"],
        f"null (all) or an integer from 10 to {SPLIT_SIZES['test']}, the test split's size",
    ),
    "augment.crop_padding": (lambda v: 0 <= v <= IMAGE_SIZE, f"an integer from 0 to {IMAGE_SIZE}"),
    "augment.cutout": (lambda v: 0 <= v <= IMAGE_SIZE, f"an integer from 0 (off) to {IMAGE_SIZE}, the image side"),
    "lr_find.start_lr": (lambda v: v > 0, "a number > 0"),
    "lr_find.end_lr": (lambda v: v > 0, "a number > 0"),
    "lr_find.num_iter": (lambda v: v >= 2, "an integer >= 2"),
    "train.epochs": (lambda v: v >= 1, "an integer >= 1"),
    # A batch cannot hold more images than the largest split; larger values only waste memory.
    "train.batch_size": (
        lambda v: 1 <= v <= SPLIT_SIZES["train"], f"an integer from 1 to {SPLIT_SIZES['train']}, the train split's size"
    ),
    "train.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "train.momentum": (lambda v: 0 <= v < 1, "a number from 0 to below 1"),
    "train.max_lr": (lambda v: v == "find" or v > 0, '"find" or a number > 0'),
    "train.onecycle.max_at_epoch": (lambda v: v >= 1, "an integer >= 1"),
    "train.onecycle.div_factor": (lambda v: v >= 1, "a number >= 1"),
    "train.onecycle.final_div_factor": (lambda v: v >= 1, "a number >= 1"),
    "evaluate.misclassified": (lambda v: v >= 0, "an integer >= 0"),
    "explain.layers": (lambda v: v is None or len(v) >= 1, "null (the model's defaults) or a non-empty list of module names"),
    "explain.images": (lambda v: v >= 1, "an integer >= 1"),
}


class _UnsupportedYaml(yaml.MarkedYAMLError):
    def __init__(self, problem: str, mark):
        super().__init__(problem=problem, problem_mark=mark)


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, made fit for a hand-edited params.yaml.

    PyYAML follows YAML 1.1, where `1e-07` (no dot) is a string; DVC writes `-S` values by
    YAML 1.2, where it is a float, so floats resolve by the YAML 1.2 rule. Anchors and
    aliases are refused: params.yaml never needs them, and an alias bomb (aliases of
    aliases) expands into a structure too big to print or check. Nesting is bounded.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self.nesting = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise _UnsupportedYaml("anchors and aliases (&name, *name) are not supported; write each value out", event.start_mark)
        if self.nesting >= MAX_YAML_NESTING:
            raise _UnsupportedYaml(f"nested more than {MAX_YAML_NESTING} levels deep; params.yaml's sections nest three", event.start_mark)
        self.nesting += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.nesting -= 1

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python refuses to convert integers of more than 4,300 digits
            raise _UnsupportedYaml(f"the integer {_show(node.value)} is too long", node.start_mark) from None


_ParamsLoader.add_constructor("tag:yaml.org,2002:int", _ParamsLoader.construct_yaml_int)
_ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)

# Messages show a bad value cut short, so a huge list or string still makes one short line.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 2, 60, 60


def _show(value: object) -> str:
    return _SHORT_REPR.repr(value)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; run from the repository root, where params.yaml lives")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at line {line}); save it as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_ParamsLoader) or {}
    except _UnsupportedYaml as error:
        raise ConfigError(f"{path}: line {error.problem_mark.line + 1}: {error.problem}") from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        raise ConfigError(f"{path}: not valid YAML at line {line}: unacceptable character #x{error.character:04x}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    return parse_params(raw, source=str(path))


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    params = _build(Params, raw, prefix="", source=source)
    _check_across_keys(params, source)
    return params


def _build(cls, raw: object, prefix: str, source: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} = {_show(raw)}: expected a mapping of keys")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields), key=str)  # YAML keys may be numbers or null too
    if unknown:
        name = unknown[0] if isinstance(unknown[0], str) and len(unknown[0]) <= 60 else _show(unknown[0])
        raise ConfigError(f"{source}: unknown key {prefix}{name}; allowed keys here: {', '.join(fields)}")
    values = {}
    for name, value in raw.items():
        key = prefix + name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, prefix=key + ".", source=source)
        else:
            values[name] = _coerce(key, value, hint, source)
            rule = _RULES.get(key)
            if rule and not rule[0](values[name]):
                raise ConfigError(f"{source}: {key} = {_show(value)} is not allowed; expected {rule[1]}")
    return cls(**values)


def _coerce(key: str, value: object, hint, source: str):
    """Return value if it fits the type hint (ints are accepted where floats are)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
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
    raise ConfigError(f"{source}: {key} = {_show(value)} is not allowed; expected {_describe(options)}")


def _finite(key: str, value: int | float, source: str) -> float:
    """value as a float; inf and nan (YAML .inf, .nan) would run on and poison every result."""
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float's range
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{source}: {key} = {_show(value)} is not allowed; expected a finite number (not inf or nan)")
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
        raise ConfigError(
            f"{source}: train.onecycle.max_at_epoch = {onecycle.max_at_epoch} is not allowed; with "
            f"train.epochs = {epochs} and three_phase = {str(onecycle.three_phase).lower()} "
            f"the peak must come at epoch {last_peak} or earlier"
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
        raise ConfigError(
            f"{source}: train.nesterov = true needs train.optimizer = 'sgd' and train.momentum > 0"
        )
