import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from cifar.config import Params, load_params, parse_params
from cifar.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def default_raw() -> dict:
    """The code's defaults as params.yaml would hold them."""
    return dataclasses.asdict(Params())


def set_key(raw: dict, dotted_key: str, value) -> dict:
    *parents, leaf = dotted_key.split(".")
    section = raw
    for name in parents:
        section = section.setdefault(name, {})
    section[leaf] = value
    return raw


def with_change(dotted_key, value):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    *parents, leaf = dotted_key.split(".")
    section = raw
    for name in parents:
        section = section.setdefault(name, {})
    section[leaf] = value
    return raw


def test_repository_params_are_the_reference_recipe():
    params = load_params(REPO / "params.yaml")
    assert params == Params()
    assert (params.train.epochs, params.train.batch_size, params.train.weight_decay) == (24, 512, 1e-7)
    assert (params.augment.crop_padding, params.augment.flip, params.augment.cutout) == (4, True, 8)
    onecycle = params.train.onecycle
    assert (onecycle.max_at_epoch, onecycle.div_factor, onecycle.final_div_factor) == (5, 100, 100)
    assert (onecycle.three_phase, onecycle.anneal_strategy) == (False, "linear")
    assert (params.lr_find.end_lr, params.lr_find.num_iter, params.lr_find.step_mode) == (0.1, 100, "exp")
    assert (params.lr_find.pick, params.train.max_lr) == ("min_loss_div10", "find")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # unknown keys, at the top and nested
        ("sed", 1, "unknown key sed"),
        ("train.onecycle.peak", 3, "unknown key train.onecycle.peak"),
        # wrong types
        ("train.batch_size", "512", "train.batch_size = '512' is not allowed; expected an integer"),
        ("train.epochs", 2.5, "train.epochs = 2.5 is not allowed; expected an integer"),
        ("augment.flip", "yes", "augment.flip = 'yes' is not allowed; expected true or false"),
        ("train.weight_decay", True, "train.weight_decay = True is not allowed; expected a number"),
        ("train.max_lr", "auto", "train.max_lr = 'auto' is not allowed; expected a number or one of 'find'"),
        ("train", 3, "train = 3: expected a mapping"),
        # impossible values
        ("train.batch_size", 0, "train.batch_size = 0 is not allowed; expected an integer from 1 to 50000"),
        ("augment.cutout", 40, "augment.cutout = 40 is not allowed; expected an integer from 0 (off) to 32"),
        ("train.onecycle.max_at_epoch", 30, "train.onecycle.max_at_epoch = 30 is not allowed"),
        ("model.name", "resnet50", "model.name = 'resnet50' is not allowed; expected one of 'custom_resnet', 'resnet18'"),
        ("model.norm", "layer", "model.norm = 'layer' is not allowed; expected one of 'batch', 'group'"),
        ("data.train_limit", 0, "data.train_limit = 0 is not allowed"),
        ("lr_find.step_mode", "log", "lr_find.step_mode = 'log' is not allowed; expected one of 'exp', 'linear'"),
        ("lr_find.pick", "lowest", "lr_find.pick = 'lowest' is not allowed; expected one of 'min_loss', 'min_loss_div10', 'steepest', 'valley'"),
        ("train.device", "tpu", "train.device = 'tpu' is not allowed"),
        ("train.precision", "fp16", "train.precision = 'fp16' is not allowed"),
        ("lr_find.end_lr", 1e-8, "lr_find.end_lr = 1e-08 is not allowed; it must be larger than lr_find.start_lr"),
    ],
)
def test_each_bad_value_is_named_with_what_is_allowed(key, value, message):
    with pytest.raises(ConfigError) as caught:
        parse_params(with_change(key, value))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_peak_epoch_must_leave_room_to_anneal():
    raw = with_change("train.epochs", 5)
    with pytest.raises(ConfigError, match="peak must come at epoch 4 or earlier"):
        parse_params(raw)


def test_group_norm_only_for_resnet18():
    with pytest.raises(ConfigError, match="only resnet18 has a GroupNorm variant"):
        parse_params(with_change("model.norm", "group"))
    raw = with_change("model.norm", "group")
    raw["model"]["name"] = "resnet18"
    assert parse_params(raw).model.norm == "group"


def test_numbers_and_nulls_are_accepted_where_allowed():
    params = parse_params(with_change("train.max_lr", 1))
    assert params.train.max_lr == 1.0 and isinstance(params.train.max_lr, float)
    assert parse_params(with_change("data.train_limit", 5000)).data.train_limit == 5000


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\ntrain:\n  epochs: [3\n  batch_size: 4\n")
    with pytest.raises(ConfigError, match=r"params.yaml: not valid YAML at line \d+"):
        load_params(path)


def test_missing_file_says_where_to_run(tmp_path):
    with pytest.raises(ConfigError, match="run from the repository root"):
        load_params(tmp_path / "params.yaml")


def leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def as_override(value) -> str:
    """A value as one types it after `dvc exp run -S key=`."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(value) + "]"
    return str(value)


RAW_DEFAULTS = yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.mark.parametrize(("key", "value"), list(leaves(RAW_DEFAULTS)))
def test_every_key_round_trips_through_dvc_exp_run_set_param(tmp_path, key, value):
    """`-S` goes through DVC's own override writer, which writes YAML 1.2 (e.g. `1e-07`)."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    apply_overrides(path, [f"{key}={as_override(value)}"])
    assert load_params(path) == Params()


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("lr_find.start_lr=1e-6", "lr_find.start_lr", 1e-6),
        ("train.weight_decay=5e-4", "train.weight_decay", 5e-4),
        ("train.max_lr=0.01", "train.max_lr", 0.01),
        ("data.train_limit=5000", "data.train_limit", 5000),
        ("data.source=/data/cifar10-jpeg.tar.xz", "data.source", "/data/cifar10-jpeg.tar.xz"),
        ("explain.layers=[layer1,layer3]", "explain.layers", ["layer1", "layer3"]),
        ("augment.flip=false", "augment.flip", False),
    ],
)
def test_typical_overrides_take_effect(tmp_path, override, key, expected):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    apply_overrides(path, [override])
    section, _, leaf = key.rpartition(".")
    value = load_params(path)
    for name in section.split("."):
        value = getattr(value, name)
    assert getattr(value, leaf) == expected


def test_override_of_the_wrong_type_is_refused(tmp_path):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    apply_overrides(path, ["train.epochs=three"])
    with pytest.raises(ConfigError, match="train.epochs = 'three' is not allowed; expected an integer"):
        load_params(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train.optimizer": "adamw"}, "train.optimizer = 'adamw' is not allowed; expected one of 'adam', 'sgd'"),
        ({"train.momentum": 1.0}, "train.momentum = 1.0 is not allowed; expected a number from 0 to below 1"),
        ({"train.nesterov": True}, "train.nesterov = true needs train.optimizer = 'sgd' and train.momentum > 0"),
        ({"model.layer4_stride": 4}, "model.layer4_stride = 4 is not allowed; expected one of 1, 2"),
        ({"model.layer4_stride": 1}, "only resnet18 has a layer4"),
    ],
)
def test_optimizer_and_model_variant_are_validated(changes, message):
    raw = default_raw()
    for key, value in changes.items():
        raw = set_key(raw, key, value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_params(raw)


def test_the_reference_resnet18_settings_are_accepted():
    raw = default_raw()
    for key, value in {"model.name": "resnet18", "model.norm": "group", "model.layer4_stride": 1,
                       "train.optimizer": "sgd", "train.nesterov": True}.items():
        raw = set_key(raw, key, value)
    params = parse_params(raw)
    assert (params.model.layer4_stride, params.train.optimizer, params.train.momentum) == (1, "sgd", 0.9)


def ruled_fields(cls, prefix=""):
    """(dotted key, default, check, allowed) of every field that carries a range rule."""
    for spec in dataclasses.fields(cls):
        default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
        if dataclasses.is_dataclass(default):
            yield from ruled_fields(type(default), f"{prefix}{spec.name}.")
        elif "allowed" in spec.metadata:
            yield (prefix + spec.name, default, *spec.metadata["allowed"])


@pytest.mark.parametrize(("key", "default", "check", "allowed"), list(ruled_fields(Params)))
def test_each_range_rule_sits_on_its_field_and_admits_the_default(key, default, check, allowed):
    assert check(default), f"{key}'s default {default!r} is outside {allowed}"
    assert parse_params(set_key(default_raw(), key, default)) == Params()


def test_a_value_outside_a_fields_range_is_refused_with_its_description():
    with pytest.raises(ConfigError) as caught:
        parse_params(set_key(default_raw(), "lr_find.num_iter", 1), source="p.yaml")
    assert str(caught.value) == (
        "p.yaml: lr_find.num_iter = 1 is not allowed; expected an integer from 2 to 10000000, about a GPU-day of steps"
    )
