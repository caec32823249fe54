"""Where the stages read and write: the `paths` table at the top of dvc.yaml, the one place
each path is written. dvc.yaml's stage definitions interpolate it (`${paths.model}`) and the
stages read it here, so a stage run on its own writes exactly where DVC expects its outputs,
and a queued experiment's copy reads its own dvc.yaml."""

import posixpath
from pathlib import Path

import yaml

from cifar.config import DOWNLOAD_CACHE

PIPELINE = Path(__file__).resolve().parents[1] / "dvc.yaml"
# The file DVC reads params from by default; cifar.load_params takes it as its default too.
PARAMS = "params.yaml"


def _read_table() -> dict[str, str]:
    try:
        (variables,) = yaml.safe_load(PIPELINE.read_text(encoding="utf-8"))["vars"]
        table = variables["paths"]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise SystemExit(
            f"error: {PIPELINE.name} has no readable `vars: - paths:` table ({type(error).__name__}: {error}); "
            f"restore it with `git checkout {PIPELINE.name}`"
        ) from None
    return table


TABLE = _read_table()


def _path(name: str) -> str:
    if not isinstance(TABLE.get(name), str):
        raise SystemExit(
            f"error: {PIPELINE.name}'s paths table has no path `{name}`; restore it with `git checkout {PIPELINE.name}`"
        )
    return TABLE[name]


DATA = _path("data")
LR_FIND_METRICS = _path("lr_find_metrics")
LR_FIND_CURVE = _path("lr_find_curve")
MAX_LR_PICK = _path("max_lr_pick")
MODEL = _path("model")
MODEL_SUMMARY = _path("model_summary")
TRAIN_ENVIRONMENT = _path("train_environment")
TRAIN_METRICS = _path("train_metrics")
SPEED_METRICS = _path("speed_metrics")
HISTORY = _path("history")
LR_SCHEDULE = _path("lr_schedule")
CHECKPOINT = _path("checkpoint")
EVALUATE_METRICS = _path("evaluate_metrics")
CONFUSION = _path("confusion")
PER_CLASS = _path("per_class")
PREDICTIONS = _path("predictions")
LR_FINDER_IMAGE = _path("lr_finder_image")
SAMPLES_IMAGE = _path("samples_image")
LOSS_IMAGE = _path("loss_image")
ACCURACY_IMAGE = _path("accuracy_image")
LR_SCHEDULE_IMAGE = _path("lr_schedule_image")
CONFUSION_IMAGE = _path("confusion_image")
PER_CLASS_IMAGE = _path("per_class_image")
MISCLASSIFIED_IMAGE = _path("misclassified_image")
GRADCAM_IMAGES = _path("gradcam_images")


def output_folders() -> list[str]:
    """The folders the stages write into, where an interrupted write leaves its scratch: the
    parents of every path in the table, and the download cache, where downloads and imports
    unpack."""
    return sorted({posixpath.dirname(path) for path in TABLE.values()} | {DOWNLOAD_CACHE})
