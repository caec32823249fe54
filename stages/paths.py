"""Where the stages read and write, relative to the repository root (as in dvc.yaml)."""

PARAMS = "params.yaml"
DATA = "data/cifar10"
DOWNLOAD_CACHE = "data/downloads"

LR_FIND_METRICS = "metrics/lr_find.json"
LR_FIND_CURVE = "plots/lr_find.csv"
LR_FINDER_IMAGE = "plots/images/lr_finder.png"

MODEL = "models/model.pt"
CHECKPOINT = "models/checkpoint.pt"
MODEL_SUMMARY = "models/summary.txt"
TRAIN_METRICS = "metrics/train.json"
HISTORY = "plots/history.csv"
LR_SCHEDULE = "plots/lr_schedule.csv"
SAMPLES_IMAGE = "plots/images/samples.png"

EVALUATE_METRICS = "metrics/evaluate.json"
CONFUSION = "plots/confusion.csv"
PER_CLASS = "plots/per_class.csv"
PREDICTIONS = "data/predictions.csv"
MISCLASSIFIED_IMAGE = "plots/images/misclassified.png"

GRADCAM_IMAGES = "plots/images/gradcam"
