"""params.yaml's rules, with every file built from the code's defaults: a user's own
params.yaml (changed by `dvc exp run -S`, say) never enters a test. That the committed
params.yaml holds the defaults is checked by CI on a clean clone (.ci/params_are_defaults.py)."""

import dataclasses
import datetime
import re
import typing
from typing import Literal

import pytest
import yaml

from cifar.config import ModelConfig, Params, load_params, parse_model_config, parse_params
from cifar.errors import ConfigError
from cifar.params_file import read_params_file
from dvc_internals import apply_overrides, parse_yaml


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
    return set_key(default_raw(), dotted_key, value)


def defaults_file(tmp_path):
    """A params.yaml holding the code's defaults, as a fresh clone has it."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(default_raw(), sort_keys=False))
    return path


def test_the_defaults_are_the_reference_recipe():
    params = Params()
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
        ("train.onecycle", 5, "train.onecycle = 5: expected a mapping of keys"),
        ("train.onecycle.three_phase", 0, "train.onecycle.three_phase = 0 is not allowed; expected true or false"),
        # A Cyrillic a, which prints as Latin: "'adam' is not allowed; expected one of 'adam'".
        (
            "train.optimizer",
            "\u0430dam",
            "train.optimizer = '\\u0430dam' is not allowed; expected one of 'adam', 'sgd'",
        ),
        # impossible values
        ("train.batch_size", 0, "train.batch_size = 0 is not allowed; expected an integer from 1 to 50000"),
        ("augment.cutout", 40, "augment.cutout = 40 is not allowed; expected an integer from 0 (off) to 32"),
        ("train.onecycle.max_at_epoch", 30, "train.onecycle.max_at_epoch = 30 is not allowed"),
        # 0 in float32: nothing trained, and the advice was to lower max_lr.
        (
            "train.max_lr",
            1e-320,
            'train.max_lr = 1e-320 is not allowed; expected "find" or a number from 1e-30 to 1000',
        ),
        ("train.weight_decay", 1000, "train.weight_decay = 1000 is not allowed; expected a number from 0 to 1"),
        # Both at 1e300, the schedule's last learning rates were 0.0.
        (
            "train.onecycle.div_factor",
            1e300,
            "train.onecycle.div_factor = 1e+300 is not allowed; expected a number from 1 to 1,000,000",
        ),
        ("train.onecycle.final_div_factor", 2e6, "train.onecycle.final_div_factor = 2000000.0 is not allowed;"),
        (
            "model.name",
            "resnet50",
            "model.name = 'resnet50' is not allowed; expected one of 'custom_resnet', 'resnet18'",
        ),
        ("model.norm", "layer", "model.norm = 'layer' is not allowed; expected one of 'batch', 'group'"),
        ("data.train_limit", 0, "data.train_limit = 0 is not allowed"),
        ("lr_find.step_mode", "log", "lr_find.step_mode = 'log' is not allowed; expected one of 'exp', 'linear'"),
        (
            "lr_find.pick",
            "lowest",
            "lr_find.pick = 'lowest' is not allowed; expected one of 'min_loss', 'min_loss_div10', 'steepest', "
            "'valley'",
        ),
        ("train.device", "tpu", "train.device = 'tpu' is not allowed"),
        ("train.precision", "fp16", "train.precision = 'fp16' is not allowed"),
        ("lr_find.end_lr", 1e-8, "lr_find.end_lr = 1e-08 is not allowed; it must be larger than lr_find.start_lr"),
        ("lr_find.end_lr", 1e-7, "lr_find.end_lr = 1e-07 is not allowed; it must be larger than lr_find.start_lr"),
        # Accepted, and lr_find wrote a curve of repeated learning rates that figures then refused.
        (
            "lr_find.end_lr",
            1.000000000000001e-7,
            "lr_find.end_lr = 1.000000000000001e-07 is not allowed with lr_find.start_lr = 1e-07 and "
            "lr_find.num_iter = 100: the learning rate would rise by less than one part in 1,000,000,000 a step",
        ),
        # null, lists and strings where they do not belong
        ("augment.flip", None, "augment.flip = None is not allowed; expected true or false"),
        ("data.source", ["a.tar.xz"], "data.source = ['a.tar.xz'] is not allowed; expected a string"),
        ("explain.layers", "layer1", "explain.layers = 'layer1' is not allowed; expected a list of strings or null"),
        (
            "explain.layers",
            ["layer3", "layer3"],
            "explain.layers = ['layer3', 'layer3'] is not allowed; expected null (the model's defaults) or a list of "
            "1 to 8 different module names",
        ),
        ("explain.layers", ["layer3", 3], "explain.layers = ['layer3', 3] is not allowed; expected a list of strings"),
        (
            "data.source",
            "/data/\ud800",
            "data.source = '/data/\\ud800' is not allowed; expected text without an unpaired surrogate",
        ),
        # A folder named as YAML writes a date or a number: "expected a string", of a string written.
        (
            "data.source",
            datetime.date(2024, 1, 15),
            "expected a string (YAML reads this as a date; quote it for text: source: '...', or -S "
            "\"data.source='...'\")",
        ),
        ("data.source", 1e5, "data.source = 100000.0 is not allowed; expected a string (YAML reads this as a number;"),
        # 4,001 digits, printed whole (4,233 characters) by the check across keys
        (
            "train.onecycle.max_at_epoch",
            10**4000,
            "train.onecycle.max_at_epoch = 100000000000000000...0000000000000000000 is not allowed; expected an "
            "integer from 1 to 99999",
        ),
    ],
)
def test_each_bad_value_is_named_with_what_is_allowed(key, value, message):
    with pytest.raises(ConfigError) as caught:
        parse_params(with_change(key, value))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("epochs", "three_phase", "message"),
    [
        # README's first example once was `-S train.epochs=3`: the message names both keys and the fix.
        (
            3,
            False,
            "params.yaml: train.onecycle.max_at_epoch = 5 is not allowed with train.epochs = 3: the OneCycle "
            "peak must come at epoch 2 or earlier (two phases); set train.onecycle.max_at_epoch to 2 or less (-S "
            "train.onecycle.max_at_epoch=2), or set train.epochs to 6 or more (-S train.epochs=6)",
        ),
        (5, False, "the OneCycle peak must come at epoch 4 or earlier (two phases)"),
        (10, True, "the OneCycle peak must come at epoch 4 or earlier (three_phase = true)"),
        (
            1,
            False,
            "train.epochs = 1: OneCycle needs epochs after its peak to anneal in (two phases); set train.epochs to 6 "
            "or more (-S train.epochs=6), or set train.epochs to 2 and train.onecycle.max_at_epoch to 1 (-S "
            "train.epochs=2 -S train.onecycle.max_at_epoch=1)",
        ),
        (
            2,
            True,
            "train.epochs = 2: OneCycle needs epochs after its peak to anneal in (three_phase = true); set "
            "train.epochs to 11 or more (-S train.epochs=11), or set train.epochs to 3 and train.onecycle.max_at_epoch "
            "to 1",
        ),
    ],
)
def test_peak_epoch_must_leave_room_to_anneal(epochs, three_phase, message):
    raw = set_key(with_change("train.epochs", epochs), "train.onecycle.three_phase", three_phase)
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "fixes"),
    [
        ({"train.epochs": 1}, 2),
        ({"train.epochs": 1, "train.onecycle.three_phase": True}, 2),
        ({"train.epochs": 3}, 2),
        # more than the cap on epochs (100,000) was advised, and refused in turn
        ({"train.epochs": 1, "train.onecycle.max_at_epoch": 60_000, "train.onecycle.three_phase": True}, 1),
        # one step an epoch: a peak at epoch 1 has no room to warm up, and train refused it in turn
        ({"train.epochs": 2, "train.onecycle.max_at_epoch": 2, "data.train_limit": 1000, "train.batch_size": 1000}, 1),
        ({"train.epochs": 1, "data.train_limit": 1000, "train.batch_size": 1000}, 2),
        # the last partial batch is dropped: 600 of 1,000 images a batch is one step an epoch
        ({"train.epochs": 1, "train.onecycle.max_at_epoch": 1, "data.train_limit": 1000, "train.batch_size": 600}, 1),
    ],
    ids=[
        "epochs-1",
        "three-phase",
        "epochs-3",
        "a-peak-past-the-cap",
        "one-step-an-epoch",
        "one-step-from-1-epoch",
        "a-partial-batch-dropped",
    ],
)
def test_each_fix_for_a_peak_too_late_is_accepted_and_warms_up(changes, fixes):
    """ "set train.epochs to 2 or more" was refused again (the peak at epoch 5 needs 6), and so
    were 100,001 epochs, and a peak at epoch 1 with one step an epoch (no room to warm up)."""
    raw = with_change("train.epochs", 1)
    for key, value in changes.items():
        raw = set_key(raw, key, value)
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    advised = re.findall(r"\((-S [^)]*)\)", str(caught.value))
    assert len(advised) == fixes, str(caught.value)
    for fix in advised:
        followed = raw
        for key, value in re.findall(r"-S ([\w.]+)=(\d+)", fix):
            followed = set_key(followed, key, int(value))
        params = parse_params(followed)
        steps = (params.data.train_limit or 50_000) // params.train.batch_size  # as the loader drops a partial batch
        assert params.train.onecycle.max_at_epoch * steps >= 2, fix


def test_the_last_epoch_that_leaves_room_to_anneal_is_accepted():
    assert parse_params(with_change("train.epochs", 6)).train.epochs == 6
    assert parse_params(set_key(with_change("train.epochs", 11), "train.onecycle.three_phase", True)).train.epochs == 11


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


@pytest.mark.parametrize("key", ["train.epochs", "data.train_limit", "seed", "explain.images"])
def test_a_count_written_as_a_whole_float_is_that_integer(key):
    """DVC compares params by value: `dvc exp run -S train.epochs=4.0` with epochs 4 ran no
    stage and recorded an experiment whose params.yaml every stage then refused."""
    params = parse_params(with_change(key, 500.0))
    section, _, name = key.rpartition(".")
    value = getattr(getattr(params, section), name) if section else getattr(params, name)
    assert value == 500 and type(value) is int


def test_an_unknown_key_is_named_with_the_keys_allowed_there():
    with pytest.raises(ConfigError) as caught:
        parse_params(with_change("sed", 1))
    assert str(caught.value) == (
        "params.yaml: unknown key sed; allowed keys here: seed, model, data, augment, lr_find, train, evaluate, explain"
    )


def test_unknown_keys_that_are_not_strings_are_named_too():
    # YAML keys may be numbers or null: `1: x` or `~: x` in params.yaml.
    raw = default_raw() | {None: "x", 1: "y"}
    with pytest.raises(ConfigError, match=r"^params.yaml: unknown key 1; allowed keys here: seed,"):
        parse_params(raw)


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        (True, "true (YAML's boolean; quote it for text)"),
        (None, "null (YAML's null; quote it for text)"),
        ("epochs ", "'epochs '"),
    ],
    ids=["true", "null", "trailing-space"],
)
def test_an_unknown_key_yaml_reads_as_a_boolean_or_null_or_with_a_space_is_named_as_written(key, shown):
    """`true: 5` under `train:` was named `train.1`, which the file does not hold; `"epochs ": 5`
    was named `train.epochs `, as if `epochs`, which the line lists as allowed, were unknown."""
    raw = default_raw()
    raw["train"][key] = 5
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    assert str(caught.value).startswith(f"params.yaml: unknown key train.{shown}; allowed keys here: epochs,")


def test_an_unknown_key_is_named_whole_up_to_60_characters_and_cut_short_beyond():
    for key, shown in [("k" * 60, "k" * 60), ("k" * 61, f"'{'k' * 27}...{'k' * 28}'")]:
        with pytest.raises(ConfigError) as caught:
            parse_params(with_change(f"train.{key}", 1))
        assert str(caught.value).startswith(f"params.yaml: unknown key train.{shown}; allowed keys here: epochs,")


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("tr\u0430in", "'tr\\u0430in'"),
        ("train.epochs\u200b", "train.'epochs\\u200b'"),
        ("train.ep\tochs", "train.'ep\\tochs'"),
    ],
    ids=["cyrillic-a", "zero-width-space", "tab"],
)
def test_an_unknown_key_that_is_not_plain_printable_ascii_is_shown_escaped(key, shown):
    """Shown raw, each of these looked like an allowed key (`train`, `epochs`)."""
    with pytest.raises(ConfigError) as caught:
        parse_params(with_change(key, 2))
    assert str(caught.value).startswith(f"params.yaml: unknown key {shown}; allowed keys here: ")


def test_a_file_that_is_not_a_mapping_is_refused_at_its_top_level():
    with pytest.raises(ConfigError) as caught:
        parse_params([1, 2])
    assert str(caught.value) == "params.yaml: top level = [1, 2]: expected a mapping of keys"


@pytest.mark.parametrize(
    ("value", "shown"),
    [(float("inf"), "inf"), (float("nan"), "nan"), (10**400, "100000000000000000...0000000000000000000")],
    ids=["inf", "nan", "an-integer-beyond-floats-range"],
)
def test_a_number_that_is_not_finite_is_refused(value, shown):
    with pytest.raises(ConfigError) as caught:
        parse_params(with_change("train.weight_decay", value), source="p.yaml")
    assert (
        str(caught.value)
        == f"p.yaml: train.weight_decay = {shown} is not allowed; expected a finite number (not inf or nan)"
    )


def test_a_saved_models_section_is_checked_by_the_rules_of_params_yaml():
    assert parse_model_config({"name": "resnet18", "norm": "group"}, "model.pt") == ModelConfig("resnet18", "group")
    with pytest.raises(ConfigError) as caught:
        parse_model_config({"norm": "group"}, "model.pt")
    assert str(caught.value) == (
        "model.pt: model.norm = 'group' is not allowed with model.name = 'custom_resnet'; only resnet18 has a "
        "GroupNorm variant"
    )


def test_params_yaml_is_read_from_the_working_directory(tmp_path, monkeypatch):
    defaults_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert load_params() == Params()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"], ids=["empty", "comments-only", "empty-document"])
def test_a_params_file_without_parameters_is_refused_not_read_as_the_defaults(tmp_path, text):
    """Read as all defaults, it sent download to the network for the official archive."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert str(caught.value) == (
        f"{path}: holds no parameters (empty, or comments only); write them, or restore the committed ones with "
        f"`git checkout {path}`"
    )


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


# For every key: `-S` overrides, typed as a user types them, that give it a valid value other
# than its default (with what a cross-key rule needs first), and the value it must then load as.
OVERRIDES = {
    "seed": (["seed=7"], 7),
    "model.name": (["model.name=resnet18"], "resnet18"),
    "model.norm": (["model.name=resnet18", "model.norm=group"], "group"),
    "model.layer4_stride": (["model.name=resnet18", "model.layer4_stride=1"], 1),
    "data.source": (["data.source=/data/cifar10-jpeg.tar.xz"], "/data/cifar10-jpeg.tar.xz"),
    "data.train_limit": (["data.train_limit=5000"], 5000),
    "data.test_limit": (["data.test_limit=1000"], 1000),
    "augment.crop_padding": (["augment.crop_padding=2"], 2),
    "augment.flip": (["augment.flip=false"], False),
    "augment.cutout": (["augment.cutout=0"], 0),
    "lr_find.start_lr": (["lr_find.start_lr=1e-6"], 1e-6),
    "lr_find.end_lr": (["lr_find.end_lr=1"], 1.0),
    "lr_find.num_iter": (["lr_find.num_iter=30"], 30),
    "lr_find.step_mode": (["lr_find.step_mode=linear"], "linear"),
    "lr_find.pick": (["lr_find.pick=valley"], "valley"),
    "train.epochs": (["train.epochs=30"], 30),
    "train.batch_size": (["train.batch_size=256"], 256),
    "train.weight_decay": (["train.weight_decay=5e-4"], 5e-4),
    "train.optimizer": (["train.optimizer=sgd"], "sgd"),
    "train.momentum": (["train.optimizer=sgd", "train.momentum=0.5", "train.onecycle.cycle_momentum=false"], 0.5),
    "train.nesterov": (["train.optimizer=sgd", "train.nesterov=true"], True),
    "train.max_lr": (["train.max_lr=0.01"], 0.01),
    "train.onecycle.max_at_epoch": (["train.onecycle.max_at_epoch=3"], 3),
    "train.onecycle.div_factor": (["train.onecycle.div_factor=25"], 25.0),
    "train.onecycle.final_div_factor": (["train.onecycle.final_div_factor=1e4"], 1e4),
    "train.onecycle.three_phase": (["train.onecycle.three_phase=true"], True),
    "train.onecycle.anneal_strategy": (["train.onecycle.anneal_strategy=cos"], "cos"),
    "train.onecycle.cycle_momentum": (["train.onecycle.cycle_momentum=false"], False),
    "train.device": (["train.device=cpu"], "cpu"),
    "train.precision": (["train.precision=fp32"], "fp32"),
    "train.compile": (["train.compile=true"], True),
    "train.deterministic": (["train.deterministic=false"], False),
    "evaluate.misclassified": (["evaluate.misclassified=5"], 5),
    "evaluate.tta": (["evaluate.tta=true"], True),
    "explain.layers": (["explain.layers=[layer1,layer3]"], ["layer1", "layer3"]),
    "explain.images": (["explain.images=4"], 4),
}


def value_at(params, dotted_key: str):
    for name in dotted_key.split("."):
        params = getattr(params, name)
    return params


def test_every_key_has_an_override_to_check():
    assert list(OVERRIDES) == [key for key, _ in leaves(default_raw())]


@pytest.mark.parametrize(("key", "overrides", "expected"), [(key, *case) for key, case in OVERRIDES.items()])
def test_every_key_takes_a_new_value_through_dvc_exp_run_set_param(tmp_path, key, overrides, expected):
    """`-S` goes through DVC's own override writer, which writes YAML 1.2 (e.g. `1e-06`). Each
    key gets a value other than its default, so an override that is ignored fails here."""
    path = defaults_file(tmp_path)
    apply_overrides(path, overrides)
    loaded = load_params(path)
    assert expected != value_at(Params(), key)
    assert value_at(loaded, key) == expected and type(value_at(loaded, key)) is type(expected)
    # The override changed its keys and nothing else.
    changed = default_raw()
    for override in overrides:
        name, _, _ = override.partition("=")
        changed = set_key(changed, name, value_at(loaded, name))
    assert loaded == parse_params(changed)


def test_override_of_the_wrong_type_is_refused(tmp_path):
    path = defaults_file(tmp_path)
    apply_overrides(path, ["train.epochs=three"])
    with pytest.raises(ConfigError, match=r"train.epochs = 'three' is not allowed; expected an integer"):
        load_params(path)


# The scalars YAML 1.1 (PyYAML) and YAML 1.2 (DVC's ruamel.yaml) read differently, with the
# value each stage must see: DVC's. Base 60 made `epochs: 1:00` 60 epochs, while
# `dvc params diff` showed the string '1:00'.
YAML_1_1_READS_OTHERWISE = {
    "1:00": "1:00",
    "-1:30": "-1:30",
    "1:30.5": "1:30.5",
    "yes": "yes",
    "No": "No",
    "on": "on",
    "OFF": "OFF",
    "010": 10,
    "-017": -17,
    "08": 8,
    "0o17": 15,
    "1e3": 1000.0,
    "-.5": -0.5,
}
# The same in both, where a rule too strict or too loose would part from DVC.
YAML_1_1_READS_ALIKE = {
    "y": "y",
    "n": "n",
    "0b1010": 10,
    "1_000": 1000,
    "0x1F": 31,
    "1e-07": 1e-07,
    "1_0.5": 10.5,
    "True": True,
    "FALSE": False,
    "~": None,
    "2001-12-14": datetime.date(2001, 12, 14),
    "1:2:3:x": "1:2:3:x",
}


@pytest.mark.parametrize(("text", "expected"), [*YAML_1_1_READS_OTHERWISE.items(), *YAML_1_1_READS_ALIKE.items()])
def test_scalars_are_read_as_dvc_reads_them_by_yaml_1_2(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    path.write_text(f"value: {text}\n")
    stages_read = read_params_file(path)["value"]
    assert stages_read == expected and type(stages_read) is type(expected)
    dvc_read = parse_yaml(path.read_text(), str(path))["value"]
    assert dvc_read == expected and type(dvc_read) is type(expected)
    if text in YAML_1_1_READS_OTHERWISE:
        assert yaml.safe_load(path.read_text())["value"] != expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("train:\n  epochs: 1:00\n", "train.epochs = '1:00' is not allowed; expected an integer"),
        ("train:\n  max_lr: 1:30.5\n", "train.max_lr = '1:30.5' is not allowed; expected a number or one of 'find'"),
        ("train:\n  compile: yes\n", "train.compile = 'yes' is not allowed; expected true or false"),
        ("augment:\n  flip: off\n", "augment.flip = 'off' is not allowed; expected true or false"),
    ],
)
def test_a_scalar_dvc_reads_as_a_string_is_refused_as_one(tmp_path, line, message):
    path = tmp_path / "params.yaml"
    path.write_text(line)
    with pytest.raises(ConfigError) as refused:
        load_params(path)
    assert str(refused.value) == f"{path}: {message}"


def test_a_base_60_float_forced_by_its_tag_is_refused(tmp_path):
    """`!!float 1:40` was 100.0 to the stages, and DVC could not read the file at all."""
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  onecycle:\n    div_factor: !!float 1:40\n")
    with pytest.raises(ConfigError) as refused:
        load_params(path)
    assert "'1:40' is a base-60 number to YAML 1.1 and no number to DVC's reader; write it in base 10" in str(
        refused.value
    )
    with pytest.raises(Exception, match="could not convert string to float"):
        parse_yaml(path.read_text(), str(path))


def test_an_ordered_mapping_is_a_mapping_as_in_dvc(tmp_path):
    """PyYAML builds `!!omap` as a list of pairs: the stages refused a section DVC reads as a mapping."""
    path = tmp_path / "params.yaml"
    path.write_text("augment: !!omap\n  - crop_padding: 2\n  - flip: false\n")
    expected = {"crop_padding": 2, "flip": False}
    assert read_params_file(path)["augment"] == dict(parse_yaml(path.read_text(), str(path))["augment"]) == expected
    assert (load_params(path).augment.crop_padding, load_params(path).augment.flip) == (2, False)


def test_a_leading_zero_is_decimal_as_in_dvc(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 010\n")
    assert load_params(path).train.epochs == 10


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train.optimizer": "adamw"}, "train.optimizer = 'adamw' is not allowed; expected one of 'adam', 'sgd'"),
        ({"train.momentum": 1.0}, "train.momentum = 1.0 is not allowed; expected a number from 0 to below 1"),
        ({"train.nesterov": True}, "train.nesterov = true needs train.optimizer = 'sgd' and train.momentum > 0"),
        ({"model.layer4_stride": 4}, "model.layer4_stride = 4 is not allowed; expected one of 1, 2"),
        ({"model.layer4_stride": 1}, "only resnet18 has a layer4"),
        (
            {
                "train.optimizer": "sgd",
                "train.nesterov": True,
                "train.momentum": 0,
                "train.onecycle.cycle_momentum": False,
            },
            "train.nesterov = true needs train.optimizer = 'sgd' and train.momentum > 0",
        ),
        (  # two lr_find curves alike to the last digit
            {"train.optimizer": "adam", "train.momentum": 0.5},
            "train.momentum = 0.5 is not used by train.optimizer = 'adam', whose first beta OneCycle cycles (or "
            "Adam's default 0.9 holds); leave it at 0.9, or set train.optimizer to 'sgd' and "
            "train.onecycle.cycle_momentum to false",
        ),
        (  # told first to stop OneCycle cycling a momentum of 0, then refused for it
            {"train.optimizer": "sgd", "train.momentum": 0.0, "train.nesterov": True},
            "train.nesterov = true needs train.optimizer = 'sgd' and train.momentum > 0",
        ),
        (  # two momentums trained alike to the last digit
            {"train.optimizer": "sgd", "train.momentum": 0.5},
            "train.momentum = 0.5 is not used while train.onecycle.cycle_momentum is true: OneCycle sets SGD's "
            "momentum itself, from 0.95 down to 0.85 and back; set train.onecycle.cycle_momentum to false to train at "
            "train.momentum",
        ),
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
    for key, value in {
        "model.name": "resnet18",
        "model.norm": "group",
        "model.layer4_stride": 1,
        "train.optimizer": "sgd",
        "train.nesterov": True,
    }.items():
        raw = set_key(raw, key, value)
    params = parse_params(raw)
    assert (params.model.layer4_stride, params.train.optimizer, params.train.momentum) == (1, "sgd", 0.9)


def params_fields(section=Params, prefix=""):
    """(dotted key, pydantic's FieldInfo) of every value of params.yaml."""
    for name, spec in section.__pydantic_fields__.items():
        if dataclasses.is_dataclass(spec.annotation):
            yield from params_fields(spec.annotation, f"{prefix}{name}.")
        else:
            yield prefix + name, spec


FIELDS = dict(params_fields())


@pytest.mark.parametrize("key", [key for key, spec in FIELDS.items() if spec.description])
def test_each_bounded_field_admits_its_default(key):
    """pydantic never checks a default against the field's own bounds; parsing it does."""
    default = FIELDS[key].get_default(call_default_factory=True)
    assert parse_params(set_key(default_raw(), key, default)) == Params()


def test_every_field_but_a_choice_or_a_switch_says_in_words_what_it_takes():
    """Its words are the out-of-bounds message; a number without them would say `expected None`."""
    unworded = [
        key
        for key, spec in FIELDS.items()
        if not spec.description and spec.annotation is not bool and typing.get_origin(spec.annotation) is not Literal
    ]
    assert unworded == []


def test_a_value_outside_a_fields_range_is_refused_with_its_description():
    with pytest.raises(ConfigError) as caught:
        parse_params(set_key(default_raw(), "lr_find.num_iter", 1), source="p.yaml")
    assert str(caught.value) == (
        "p.yaml: lr_find.num_iter = 1 is not allowed; expected an integer from 2 to 100000, a thousand times the "
        "default"
    )
