"""Where the stages read and write, relative to the repository root (as in dvc.yaml).

Each path is named here once; tests/test_dvc_yaml.py checks that dvc.yaml declares the same
outputs, README's pipeline table names them and no test spells one out.
"""

import posixpath

from cifar.config import DOWNLOAD_CACHE

PARAMS = "params.yaml"
DATA = "data/cifar10"

LR_FIND_METRICS = "metrics/lr_find.json"
LR_FIND_CURVE = "plots/lr_find.csv"
# lr_find's verdict and pick, the input train reads when train.max_lr is "find".
MAX_LR_PICK = "models/max_lr.json"

MODEL = "models/model.pt"
MODEL_SUMMARY = "models/summary.txt"
TRAIN_ENVIRONMENT = "models/environment.json"
TRAIN_METRICS = "metrics/train.json"
SPEED_METRICS = "metrics/speed.json"
HISTORY = "plots/history.csv"
LR_SCHEDULE = "plots/lr_schedule.csv"
# Resume state of an unfinished training run: git- and DVC-ignored scratch, never an output.
CHECKPOINT = ".checkpoints/train.pt"

EVALUATE_METRICS = "metrics/evaluate.json"
CONFUSION = "plots/confusion.csv"
PER_CLASS = "plots/per_class.csv"
PREDICTIONS = "data/predictions.csv"

LR_FINDER_IMAGE = "plots/images/lr_finder.png"
SAMPLES_IMAGE = "plots/images/samples.png"
LOSS_IMAGE = "plots/images/loss.png"
ACCURACY_IMAGE = "plots/images/accuracy.png"
LR_SCHEDULE_IMAGE = "plots/images/lr_schedule.png"
CONFUSION_IMAGE = "plots/images/confusion.png"
PER_CLASS_IMAGE = "plots/images/per_class.png"
MISCLASSIFIED_IMAGE = "plots/images/misclassified.png"

GRADCAM_IMAGES = "plots/images/gradcam"


def output_folders() -> list[str]:
    """The folders the stages write into, where an interrupted write leaves its scratch: the
    parents of every path here, and the download cache, where downloads and imports unpack."""
    written = [path for name, path in globals().items() if name.isupper() and name != "PARAMS"]
    return sorted({posixpath.dirname(path) for path in written} | {DOWNLOAD_CACHE})
