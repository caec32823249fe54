"""Each stage's `params` in dvc.yaml are exactly the keys its code reads: a key it reads but
does not declare would let DVC skip a run that must happen, one it declares but never reads
re-runs it for nothing. Every stage runs here on a tiny synthetic set, in-process, with a
params object that records each field read; under two sets of params between them taking
every branch that reads a key (Adam and SGD with Nesterov, custom ResNet and ResNet18 with
GroupNorm, max_lr found and given, flip TTA off and on, Grad-CAM layers defaulted and named)."""

import dataclasses
import functools
import importlib

import pytest
import torch
import yaml

from cifar.config import Params, load_params
from cifar.errors import TrainingError
from dvc_internals import resolved_pipeline
from pipeline_repo import default_params, merge
from stages import paths

PIPELINE = resolved_pipeline()["stages"]
ORDER = ("download", "lr_find", "train", "evaluate", "figures", "explain")

# The smallest run whose range test shows a descent (lr_find stops without one).
TINY = merge(
    default_params(),
    {
        "data": {"source": "synthetic", "train_limit": 256, "test_limit": 40},
        "lr_find": {"num_iter": 12, "end_lr": 0.003, "pick": "min_loss"},
        "train": {"epochs": 2, "batch_size": 64, "onecycle": {"max_at_epoch": 1}},
        "evaluate": {"misclassified": 2},
        "explain": {"images": 2},
    },
)
BRANCHES = {
    "adam, custom ResNet, max_lr found": TINY,
    # Smaller still: a given max_lr needs no descent, and ResNet18 with layer4 at 8x8 is the
    # slowest model on a CPU (this set at TINY's size took most of the module's 7 minutes).
    "sgd, ResNet18 with GroupNorm, max_lr given, TTA, named layers": merge(
        TINY,
        {
            "model": {"name": "resnet18", "norm": "group", "layer4_stride": 1},
            "data": {"train_limit": 64, "test_limit": 16},
            "lr_find": {"pick": "valley", "num_iter": 4},
            "train": {
                "optimizer": "sgd",
                "nesterov": True,
                "max_lr": 0.01,
                "device": "cpu",
                "precision": "fp32",
                "batch_size": 16,
            },
            "evaluate": {"tta": True},
            "explain": {"layers": ["layer4"]},
        },
    ),
}


@functools.cache
def recording_class(cls):
    """A subclass of the params dataclass cls whose field reads go into the instance's `_reads`."""
    names = {spec.name for spec in dataclasses.fields(cls)}

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if name in names and not dataclasses.is_dataclass(value):
            object.__getattribute__(self, "_reads").add(object.__getattribute__(self, "_prefix") + name)
        return value

    return type(f"Recording{cls.__name__}", (cls,), {"__getattribute__": __getattribute__})


def recording(params, reads: set, prefix: str = ""):
    """params, its sections too, recording into `reads` the dotted key of every field read."""
    copy = object.__new__(recording_class(type(params)))
    for spec in dataclasses.fields(params):
        value = getattr(params, spec.name)
        if dataclasses.is_dataclass(value):
            value = recording(value, reads, f"{prefix}{spec.name}.")
        object.__setattr__(copy, spec.name, value)
    object.__setattr__(copy, "_reads", reads)
    object.__setattr__(copy, "_prefix", prefix)
    return copy


def leaves(tree: dict, prefix: str = "") -> set[str]:
    return {
        key
        for name, value in tree.items()
        for key in (leaves(value, f"{prefix}{name}.") if isinstance(value, dict) else {prefix + name})
    }


def declared_keys(stage: str) -> set[str]:
    """The stage's dvc.yaml params, a whole section standing for each key in it."""
    every = leaves(default_params())
    return {
        key
        for entry in PIPELINE[stage].get("params", [])
        for key in every
        if key == entry or key.startswith(entry + ".")
    }


@pytest.fixture(scope="module")
def keys_read(tmp_path_factory) -> dict[str, set[str]]:
    """Per stage, the keys it read under any of BRANCHES."""
    reads = {stage: set() for stage in ORDER}
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    with pytest.MonkeyPatch.context() as patch:
        for params in BRANCHES.values():
            root = tmp_path_factory.mktemp("stage-params")
            (root / paths.PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))
            patch.chdir(root)
            for stage in ORDER:
                module = importlib.import_module(f"stages.{stage}")
                patch.setattr(module, "load_params", lambda path, into=reads[stage]: recording(load_params(path), into))
                try:
                    module.main()
                except TrainingError:  # a tiny set ends at chance; train has written its outputs
                    assert stage == "train"
    # Stages set process-wide torch flags; later tests must not inherit them.
    torch.use_deterministic_algorithms(flags[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[1:]
    return reads


@pytest.mark.full  # runs every stage twice
@pytest.mark.parametrize("stage", ORDER)
def test_each_stage_declares_exactly_the_params_it_reads(keys_read, stage):
    declared = declared_keys(stage)
    assert keys_read[stage] == declared, (
        f"{stage} reads but does not declare {sorted(keys_read[stage] - declared)}; "
        f"declares but never reads {sorted(declared - keys_read[stage])}"
    )
    # what a stage refuses to run without, where a user's dvc.yaml leaves one out
    assert {leaf for key in paths._READS[stage] for leaf in paths._leaf_keys(key)} == keys_read[stage]


def test_the_dvc_yaml_stages_are_the_ones_run_here():
    assert tuple(PIPELINE) == ORDER


def test_the_recording_params_see_each_key_read_and_nothing_else():
    reads = set()
    params = recording(Params(), reads)
    assert reads == set()
    assert (params.train.onecycle.max_at_epoch, params.seed) == (5, 0)
    assert reads == {"train.onecycle.max_at_epoch", "seed"}
    dataclasses.asdict(params.model)  # as the train stage's checkpoint fingerprint does
    assert reads == {"train.onecycle.max_at_epoch", "seed", "model.name", "model.norm", "model.layer4_stride"}
