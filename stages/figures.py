"""figures: the PNGs under plots/images/, drawn from the CSVs and metrics the stages wrote.

A stage of its own so that figure styling is a cheap dependency: editing cifar/reporting/plots.py
re-runs this stage (and explain's Grad-CAM grids), never lr_find, train or evaluate.
"""

if not __package__:  # `python stages/figures.py` leaves the repository root, and cifar/, off sys.path
    raise SystemExit("error: run it from the repository root as `python -m stages.figures` (or `dvc repro figures`)")

import contextlib
import io
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cifar.atomic import replaced_together, save_figure
from cifar.cli import run_stage
from cifar.config import MAX_OPTIMIZER_FACTOR, LRFindConfig, Params, load_params
from cifar.dataset import Split, check_same_classes, load_split, recorded_split_problem
from cifar.errors import DataError, TrainingError, one_line, short_repr
from cifar.models import TrainedModel, load_trained
from cifar.params_file import ran_with_other_params
from cifar.reading import MAX_METRICS_BYTES, read_artifact, read_json_artifact
from cifar.reporting.plots import (
    confusion_figure,
    epoch_curves_figure,
    image_grid,
    lr_finder_figure,
    lr_schedule_figure,
    misclassified_figure,
    per_class_figure,
)
from cifar.reporting.predictions import (
    TIE_TOLERANCE,
    check_the_models_predictions,
    first_misclassified,
    load_predictions,
)
from cifar.runtime import resolve_device
from cifar.training.augment import denormalize
from cifar.training.chance import at_chance_after_the_peak, guessing_accuracy
from cifar.training.loader import DeviceLoader
from cifar.training.lr_find import check_handed_curve, read_curve
from cifar.training.schedule import planned_lrs
from stages import paths

log = logging.getLogger("figures")
SAMPLE_COUNT = 32


def main() -> None:
    params = load_params(paths.PARAMS)
    # The splits first: the tables' sizes are bounded by them (and by params) before a byte is parsed.
    train, test = load_split(paths.DATA, "train"), load_split(paths.DATA, "test")
    # Every table is read and checked before a figure is drawn: a refusal leaves every picture as it was.
    curve, chosen = read_range_test(params, train)
    trained = load_trained(paths.MODEL, resolve_device(params.train.device))
    check_same_classes(
        trained.classes, paths.MODEL, test, f"{paths.DATA}/test.npz", "re-run the pipeline with `dvc repro`"
    )
    check_the_models_history_is_of(train, test, trained)
    # weight_decay changed and lr_find run again alone: another run's curves were drawn as this one's.
    stale = ran_with_other_params(trained.trained_with, "train", paths.declared_params("train"))
    if stale:
        raise DataError(f"{paths.MODEL}: {stale}; re-create it with `dvc repro train`")
    history, step_lrs = read_training(params, len(train), test, chosen.get("max_lr"))
    check_history_against_the_model(history, trained)
    predictions, per_class, confusion = read_evaluation(test, params.evaluate.tta, trained)
    gallery = first_misclassified(predictions, params.evaluate.misclassified)
    check_gallery_against_the_model(trained, gallery, predictions, test)

    with replaced_together():
        save_figure(
            paths.LR_FINDER_IMAGE,
            lr_finder_figure(
                curve["lr"],
                curve["loss"],
                chosen.get("max_lr"),
                params.lr_find.pick,
                chosen.get("steepest_lr"),
                params.train.optimizer,
                trained_at=None if params.train.max_lr == "find" else params.train.max_lr,
            ),
        )
        save_figure(paths.LOSS_IMAGE, epoch_curves_figure(history, "loss", "cross-entropy loss"))
        save_figure(paths.ACCURACY_IMAGE, epoch_curves_figure(history, "accuracy", "accuracy"))
        save_figure(paths.LR_SCHEDULE_IMAGE, lr_schedule_figure(step_lrs, len(step_lrs) // len(history)))
        save_figure(paths.SAMPLES_IMAGE, augmented_samples(train, params))
        save_figure(paths.PER_CLASS_IMAGE, per_class_figure(per_class))
        label_of = {name: label for label, name in enumerate(test.classes)}
        save_figure(
            paths.CONFUSION_IMAGE,
            confusion_figure(
                confusion["actual"].map(label_of).to_numpy(),
                confusion["predicted"].map(label_of).to_numpy(),
                test.classes,
            ),
        )
        save_figure(
            paths.MISCLASSIFIED_IMAGE,
            misclassified_figure(
                test.images[gallery["index"].to_numpy()],
                gallery["label"].to_numpy(),
                gallery["predicted"].to_numpy(),
                gallery["confidence"].to_numpy(),
                test.classes,
                int((predictions["label"] != predictions["predicted"]).sum()),
            ),
        )
    if len(gallery) < params.evaluate.misclassified:
        log.info(
            "only %d misclassified test images, fewer than evaluate.misclassified = %d",
            len(gallery),
            params.evaluate.misclassified,
        )


def read_range_test(params: Params, train: Split) -> tuple[pd.DataFrame, dict]:
    """lr_find's curve, its learning rates rising row by row, and its picks within them."""
    curve = read_table(
        paths.LR_FIND_CURVE,
        {"lr": LEARNING_RATE, "loss": LOSS},
        "lr_find",
        most_rows=params.lr_find.num_iter,
        least_rows=2,
    )
    rises = np.diff(curve["lr"].to_numpy()) > 0
    if not rises.all():
        row = int(np.flatnonzero(~rises)[0]) + 1
        raise DataError(
            f"{paths.LR_FIND_CURVE}: column lr holds {shown(curve['lr'].iloc[row])} in row {row}, not above the row "
            f"before: the range test steps its learning rate up; re-create it with `dvc repro lr_find`"
        )
    chosen = read_lr_find_metrics(curve["lr"].min(), curve["lr"].max())
    handed = check_curve_record(train)
    check_range_test_metrics(curve, chosen, params.lr_find)
    # The pick train read: one edited by hand was trained at, and the schedule then blamed,
    # with `dvc repro train` as the fix, which trained at it again.
    if handed.get("max_lr") != chosen.get("max_lr"):
        raise DataError(
            f"{paths.MAX_LR_PICK}: max_lr = {short_repr(handed.get('max_lr'))}, but lr_find picked "
            f"{short_repr(chosen.get('max_lr'))} off {paths.LR_FIND_CURVE}; re-create it with `dvc repro lr_find`"
        )
    return curve, chosen


def check_range_test_metrics(curve: pd.DataFrame, chosen: dict, config: LRFindConfig) -> None:
    """Every number metrics/lr_find.json reports is the one lr_find reads off the curve beside
    it: an edited steepest_lr was marked on the figure where the curve is not steepest."""
    fix = "re-create it with `dvc repro lr_find`"
    try:
        expected = read_curve(curve["lr"].tolist(), curve["loss"].tolist(), config).metrics()
    except TrainingError as error:  # a curve lr_find could not have read, and so not written
        raise DataError(f"{paths.LR_FIND_CURVE}: not a curve lr_find reads ({one_line(error)}); {fix}") from None
    unknown = sorted(chosen.keys() - expected.keys())
    if unknown:
        raise DataError(f"{paths.LR_FIND_METRICS}: {short_repr(unknown[0])} is not a value lr_find reports; {fix}")
    for key, value in sorted(expected.items()):
        if key not in chosen:
            raise DataError(
                f"{paths.LR_FIND_METRICS}: has no {key}, which lr_find reads as {shown(value)} off "
                f"{paths.LR_FIND_CURVE}; {fix}"
            )
        said = chosen[key]
        if not reports(said, value):
            raise DataError(
                f"{paths.LR_FIND_METRICS}: {key} = {short_repr(said)}, but lr_find reads {shown(value)} off "
                f"{paths.LR_FIND_CURVE}; {fix}"
            )


def check_curve_record(train: Split) -> dict:
    """lr_find.csv is the curve whose digest lr_find handed on beside its pick (a loss edited in
    mid-curve kept its minimum and the picks that lr_find.json reports, and was drawn), of a
    range test with today's params (the figure names the optimizer and the range). Returns
    what the file hands on."""
    fix = "re-create it with `dvc repro lr_find`"
    try:
        with missing_as_data_error(paths.MAX_LR_PICK, fix):
            handed = read_json_artifact(paths.MAX_LR_PICK, MAX_METRICS_BYTES, fix)
    except ValueError as error:
        raise DataError(f"{paths.MAX_LR_PICK}: unreadable ({one_line(error)}); {fix}") from None
    if not isinstance(handed, dict):
        raise DataError(f"{paths.MAX_LR_PICK}: a JSON {type(handed).__name__}, not the object lr_find writes; {fix}")
    curve = Path(paths.LR_FIND_CURVE).read_bytes()  # read_range_test has read it whole, within its bounds
    check_handed_curve(paths.LR_FIND_CURVE, curve, paths.MAX_LR_PICK, handed.get("curve_sha256"), fix)
    stale = ran_with_other_params(handed.get("params"), "lr_find", paths.declared_params("lr_find"))
    if stale:
        raise DataError(f"{paths.MAX_LR_PICK}: {stale}; {fix}")
    other_split = recorded_split_problem(handed.get("train_sha256"), train, paths.DATA, "train")
    if other_split:
        raise DataError(f"{paths.MAX_LR_PICK}: {other_split}; {fix}")
    return handed


def read_training(
    params: Params, train_images: int, test: Split, picked: float | None
) -> tuple[pd.DataFrame, np.ndarray]:
    """train's history and LR schedule, written once, whole: every epoch and every step, in
    order; with train.max_lr "find", the schedule peaks at lr_find's pick."""
    epochs = params.train.epochs
    epoch = Numbers(1, epochs, True, f"an epoch from 1 to train.epochs = {epochs}")
    history = read_table(
        paths.HISTORY, {"epoch": epoch} | HISTORY_COLUMNS, "train", most_rows=epochs, least_rows=epochs, once="epoch"
    )
    check_counts(history, "epoch", paths.HISTORY, "train")
    check_reported_names(paths.TRAIN_METRICS, "train", TRAIN_REPORTS)
    check_history_against_metrics(history, params.train.onecycle.max_at_epoch, test)
    steps = epochs * (train_images // params.train.batch_size)  # as many as Recipe.train_loader's batches
    step = Numbers(1, steps, True, f"a step from 1 to {steps}")
    schedule = read_table(
        paths.LR_SCHEDULE, {"lr": LEARNING_RATE, "step": step}, "train", most_rows=steps, least_rows=steps
    )
    check_counts(schedule, "step", paths.LR_SCHEDULE, "train")
    step_lrs = schedule["lr"].to_numpy()
    trained_at = picked if params.train.max_lr == "find" else params.train.max_lr
    if trained_at is None:  # train refuses to run then: these outputs are of another range test's pick
        raise DataError(
            f'{paths.LR_FIND_METRICS}: lr_find found no descent, so train.max_lr "find" has no pick to train at, '
            f"and {paths.HISTORY} and {paths.LR_SCHEDULE} are of another run; widen the range test as lr_find "
            f"said, or set train.max_lr to a number, then `dvc repro`"
        )
    check_schedule(step_lrs, params, trained_at, steps // epochs)
    # `dvc metrics show` showed an edited max_lr beside a schedule that peaked elsewhere.
    check_against_metrics(paths.LR_SCHEDULE, {"max_lr": trained_at}, paths.TRAIN_METRICS, "train")
    return history, step_lrs


def check_schedule(step_lrs: np.ndarray, params: Params, max_lr: float, steps_per_epoch: int) -> None:
    """Each step's LR is the one train.onecycle gives at max_lr: an LR halved in mid-schedule
    kept the table's peak, length and order, and was drawn as a schedule train never ran."""
    planned = planned_lrs(max_lr, params.train.epochs, steps_per_epoch, params.train.onecycle)
    differs = ~np.isclose(step_lrs, planned, rtol=1e-9, atol=0)
    if differs.any():
        step = int(np.flatnonzero(differs)[0])
        raise DataError(
            f"{paths.LR_SCHEDULE}: step {step + 1} ran at lr {step_lrs[step]:.6g}, but train.onecycle at max_lr "
            f"{max_lr:.6g} gives {planned[step]:.6g} there; re-create it with `dvc repro train`"
        )


def check_the_models_history_is_of(train: Split, test: Split, trained: TrainedModel) -> None:
    """The model records the history it was trained along, its columns measured on the splits
    drawn beside them: after data.test_limit changed and download ran, train's curves of the
    previous test split were drawn beside the confusion matrix of the new one (and after
    data.train_limit changed, beside the new training split's range test)."""
    fix = "re-create it with `dvc repro train`"
    if not trained.history:
        raise DataError(f"{paths.MODEL}: records no training history to check {paths.HISTORY} against; {fix}")
    for name, file, split, measured_on in (
        ("training", "train.npz", train, trained.history_train_sha256),
        ("test", "test.npz", test, trained.history_test_sha256),
    ):
        if measured_on != split.sha256:
            raise DataError(
                f"{paths.HISTORY}: its {name} loss and accuracy were measured on another {name} split than "
                f"{paths.DATA}/{file} holds now (or one {paths.MODEL} does not record); {fix}"
            )


def check_history_against_the_model(history: pd.DataFrame, trained: TrainedModel) -> None:
    """Each epoch's row of history.csv is the one the model was trained along: an earlier epoch's
    loss halved kept the last row and the best that train.json reports, and was drawn without a word."""
    fix = "re-create it with `dvc repro train`"
    if len(trained.history) != len(history):
        raise DataError(
            f"{paths.HISTORY}: {len(history)} epochs, but {paths.MODEL} was trained for {len(trained.history)}; {fix}"
        )
    for drawn, recorded in zip(history.to_dict("records"), trained.history):
        for column in ("epoch", *HISTORY_COLUMNS):  # what the curves draw; not each epoch's seconds
            value = drawn[column]
            if not reports(recorded.get(column), value):
                raise DataError(
                    f"{paths.HISTORY}: epoch {drawn['epoch']:g} has {column} {shown(value)}, but {paths.MODEL} was "
                    f"trained to {short_repr(recorded.get(column))} there; {fix}"
                )


def check_history_against_metrics(history: pd.DataFrame, peak_epoch: int, test: Split) -> None:
    """history.csv's last epoch, best test accuracy and whether the test accuracy was at chance
    after the OneCycle peak (as train's warning reads it) are those metrics/train.json reports:
    train writes both from one run, and another run's history of as many epochs was drawn without a word."""
    last, best = history.iloc[-1], history.loc[history["test_accuracy"].idxmax()]
    rows = history.to_dict("records")
    expected = {column: last[column] for column in HISTORY_COLUMNS} | {
        "best_test_accuracy": best["test_accuracy"],
        "best_epoch": best["epoch"],
        "at_chance_level": at_chance_after_the_peak(
            rows, peak_epoch, guessing_accuracy(test.labels, len(test.classes)), len(test)
        ),
    }
    check_against_metrics(paths.HISTORY, expected, paths.TRAIN_METRICS, "train")


def check_against_metrics(path: str, expected: dict, metrics_path: str, stage: str) -> None:
    """Each of `expected`'s values, read from the table at `path`, is the one the metrics file
    that `stage` wrote beside it reports (to float precision)."""
    fix = f"re-create it with `dvc repro {stage}`"
    reported = read_metrics(metrics_path, fix)
    for key, value in expected.items():
        said = reported.get(key) if isinstance(reported, dict) else None
        if not reports(said, value):
            raise DataError(f"{path}: {key} {shown(value)}, but {metrics_path} reports {short_repr(said)}; {fix}")


def check_reported_names(metrics_path: str, stage: str, names: set[str], condition: str = "") -> dict:
    """The metrics file holds the values its stage writes, no more and no fewer: a flip-TTA
    accuracy written into train.json was listed by `dvc metrics show` beside the checked values."""
    fix = f"re-create it with `dvc repro {stage}`"
    reported = read_metrics(metrics_path, fix)
    if not isinstance(reported, dict):
        raise DataError(f"{metrics_path}: not a JSON object of named values, as {stage} writes; {fix}")
    unknown = sorted(reported.keys() - names)
    if unknown:
        raise DataError(f"{metrics_path}: {short_repr(unknown[0])} is not a value {stage} reports{condition}; {fix}")
    missing = sorted(names - reported.keys())
    if missing:
        raise DataError(f"{metrics_path}: has no {missing[0]}, which {stage} reports{condition}; {fix}")
    return reported


def read_metrics(metrics_path: str, fix: str):
    try:
        with missing_as_data_error(metrics_path, fix):
            return read_json_artifact(metrics_path, MAX_METRICS_BYTES, fix)
    except ValueError as error:
        raise DataError(f"{metrics_path}: unreadable ({one_line(error)}); {fix}") from None


def read_evaluation(test: Split, tta: bool, trained: TrainedModel) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """evaluate's predictions, per-class table and confusion table, each saying the same, and
    of the trained model."""
    predictions = load_predictions(paths.PREDICTIONS, paths.PREDICTIONS_DIGEST, test, paths.DATA)
    count = Numbers(0, len(test), True, f"a count of test images from 0 to {len(test)}")
    per_class = read_table(
        paths.PER_CLASS,
        {"class": test.classes, "images": count, "correct": count, "accuracy": ACCURACY},
        "evaluate",
        most_rows=len(test.classes),
        least_rows=len(test.classes),
        once="class",
    )
    check_per_class(per_class, predictions, test.classes)
    # One row per test image, as in predictions.csv: fewer would draw a confusion matrix of part of the test split.
    confusion = read_table(
        paths.CONFUSION,
        {"actual": test.classes, "predicted": test.classes},
        "evaluate",
        most_rows=len(test),
        least_rows=len(test),
    )
    check_confusion(confusion, predictions, test.classes)
    check_predictions_against_metrics(predictions)
    reported = check_unchecked_evaluate_metrics(tta)
    check_evaluation_against_the_model(predictions, reported["loss"], trained)
    return predictions, per_class, confusion


# How far evaluate's accuracy and loss may lie from what train measured on the same test split
# at its last epoch: the same model and data, but maybe another device or precision (bfloat16
# on a GPU, float32 on a CPU) or a compiled model, which flip a few near-tied predictions.
MOST_ACCURACY_APART = 0.02
MOST_LOSS_APART = 0.05


def check_evaluation_against_the_model(predictions: pd.DataFrame, loss: float, trained: TrainedModel) -> None:
    """evaluate's accuracy and loss are those the model measured on the test split at its last
    epoch, within what another device or precision changes: tables and metrics of another
    model, consistent among themselves and agreeing with it on the images checked through it,
    were drawn beside its curves."""
    last = trained.history[-1]
    measured_accuracy, measured_loss = last.get("test_accuracy", math.nan), last.get("test_loss", math.nan)
    accuracy = float((predictions["label"] == predictions["predicted"]).mean())
    images_apart = round(abs(accuracy - measured_accuracy) * len(predictions), 6)  # 2 of 200 read as 2.0000000000000018
    alike = (
        images_apart <= max(3, MOST_ACCURACY_APART * len(predictions))
        and abs(loss - measured_loss) <= MOST_LOSS_APART * measured_loss + 0.001
    )
    if not alike:
        raise DataError(
            f"{paths.EVALUATE_METRICS}: accuracy {accuracy:.4f} and loss {loss:.4g}, but {paths.MODEL} measured "
            f"{short_repr(measured_accuracy)} and {short_repr(measured_loss)} on the same test split "
            f"at its last epoch: evaluate's results are another model's; re-create them with `dvc repro evaluate`"
        )


def check_unchecked_evaluate_metrics(tta: bool) -> dict:
    """metrics/evaluate.json's values that no table beside it repeats (the loss, the flip-TTA
    accuracy) are at least of their kind, and the flip-TTA accuracy is there exactly with evaluate.tta."""
    names = {"accuracy", "loss", "misclassified"} | ({"flip_tta_accuracy"} if tta else set())
    condition = f" with evaluate.tta {str(tta).lower()}"
    reported = check_reported_names(paths.EVALUATE_METRICS, "evaluate", names, condition)
    for name, numbers in (("loss", LOSS), ("flip_tta_accuracy", ACCURACY)):
        value = reported.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or numbers.bad(np.array([float(value)]))[0]:
            raise DataError(
                f"{paths.EVALUATE_METRICS}: {name} = {short_repr(value)} is not {numbers.words}; "
                f"re-create it with `dvc repro evaluate`"
            )
    return reported


def reports(said: object, value: float | bool) -> bool:
    """Whether a metrics file's value `said` is `value`: the same bool, or the number (to float
    precision), not a missing key, text or true (a bool is an int to Python)."""
    if isinstance(value, (bool, np.bool_)):
        return said is bool(value)
    return not isinstance(said, bool) and isinstance(said, (int, float)) and math.isclose(said, value, rel_tol=1e-9)


def check_predictions_against_metrics(predictions: pd.DataFrame) -> None:
    """predictions.csv's count of misclassified images and its accuracy are those
    metrics/evaluate.json reports: evaluate writes both at once, and predictions, confusion and
    per-class tables edited together were drawn beside metrics that said otherwise."""
    wrong = predictions["label"].to_numpy() != predictions["predicted"].to_numpy()
    expected = {"misclassified": int(wrong.sum()), "accuracy": float(1 - wrong.mean())}
    check_against_metrics(paths.PREDICTIONS, expected, paths.EVALUATE_METRICS, "evaluate")


def check_gallery_against_the_model(
    trained: TrainedModel, gallery: pd.DataFrame, predictions: pd.DataFrame, test: Split
) -> None:
    """The misclassified gallery shows predictions the trained model makes: after `dvc repro -s
    train` figures drew the previous model's mistakes beside the new model's curves. Its rows
    and the first SAMPLE_COUNT go through the model once."""
    # and the first test images, whatever the gallery's size: per-class and confusion tables are drawn from them all
    chosen = pd.concat([gallery, predictions.head(SAMPLE_COUNT)]).drop_duplicates("index")
    probabilities = check_the_models_predictions(trained.model, chosen, test, paths.PREDICTIONS, paths.MODEL)
    # The gallery's titles show each image's confidence: ones raised to 0.999 were drawn as the model's.
    stated = probabilities[np.arange(len(chosen)), chosen["predicted"].to_numpy()]
    off = np.flatnonzero(np.abs(stated - chosen["confidence"].to_numpy()) > TIE_TOLERANCE)
    if len(off):
        row = int(off[0])
        raise DataError(
            f"{paths.PREDICTIONS}: test image {chosen['index'].iloc[row]} has confidence "
            f"{chosen['confidence'].iloc[row]:.3f}, but {paths.MODEL} gives its predicted class {stated[row]:.3f}; "
            f"re-create it with `dvc repro evaluate`"
        )


@dataclass(frozen=True)
class Numbers:
    """A column of finite numbers from `least` (or just above it, if not `least_allowed`) to
    `most`: the values its writer can produce, in the words a message uses."""

    least: float
    most: float
    least_allowed: bool
    words: str

    def bad(self, values: np.ndarray) -> np.ndarray:
        below = values <= self.least if not self.least_allowed else values < self.least
        return below | (values > self.most)


ACCURACY = Numbers(0, 1, True, "an accuracy from 0 to 1")
# The stages compute losses in float32 (under bf16 autocast too): a larger one is not theirs,
# and at about 1e308 matplotlib's tick placement fails with a raw ValueError.
FLOAT32_MAX = float(np.finfo(np.float32).max)
LOSS = Numbers(0, FLOAT32_MAX, True, f"a cross-entropy loss from 0 to {FLOAT32_MAX:.4g} (float32's largest)")
LEARNING_RATE = Numbers(0, MAX_OPTIMIZER_FACTOR, False, f"a learning rate above 0 and at most {MAX_OPTIMIZER_FACTOR}")
HISTORY_COLUMNS = {
    "train_loss": LOSS,
    "train_accuracy": ACCURACY,
    "test_loss": LOSS,
    "test_accuracy": ACCURACY,
}
TRAIN_REPORTS = {*HISTORY_COLUMNS, "best_test_accuracy", "best_epoch", "max_lr", "at_chance_level"}
# A row of these tables is a few numbers or two class names, under 100 bytes: a table over
# this many bytes per row its writer can write is not one it wrote, and is refused unparsed.
MAX_BYTES_PER_ROW = 1024
# A number as pandas writes it takes at most 24 characters and a comma; a table of numbers
# has a column or two besides those read (lr_find's log10_lr, train's seconds). At 1 KiB a row,
# lr_find's curve could take 10 GB at its cap on rows, and 1.2 GB of it took 5 GB to refuse.
NUMBER_BYTES, MORE_COLUMNS = 32, 4


def read_table(
    path: str, columns: dict, stage: str, most_rows: int, least_rows: int = 1, once: str | None = None
) -> pd.DataFrame:
    """A CSV another stage wrote, of `least_rows` to `most_rows` rows (refused unparsed beyond
    what that many rows take in bytes), with in each of `columns` finite numbers in a Numbers' range or names
    from a tuple, each value of column `once` in one row only; else a one-line DataError, not
    a hang, a traceback or a chart of text, NaN, an accuracy of 500% or a bar drawn twice."""
    fix = f"re-create it with `dvc repro {stage}`"
    # Class names as text: a class named '0' was read as the number 0, not one of the split's.
    names = {column: str for column, allowed in columns.items() if not isinstance(allowed, Numbers)}
    per_row = MAX_BYTES_PER_ROW if names else NUMBER_BYTES * (len(columns) + MORE_COLUMNS)
    with missing_as_data_error(path, fix):
        data = read_artifact(path, per_row * (most_rows + 1), fix, too_large=f"far more than {most_rows:,} rows take")
    # Counted in the header before pandas parses a byte: a row of a million columns took 2.8 GB,
    # and 191,950 ended by a lone `\r`, which pandas ends a line at too, kept it past 300 s.
    header = re.split(rb"[\r\n]", data, maxsplit=1)[0]
    if b'"' in header:  # a quoted name may hold a line end: the stages write none
        raise DataError(f"{path}: a quoted column name, which {stage} never writes; {fix}")
    if header.count(b",") + 1 > len(columns) + MORE_COLUMNS:
        raise DataError(f"{path}: {header.count(b',') + 1:,} columns, far more than {stage} writes; {fix}")
    try:
        table = pd.read_csv(
            io.BytesIO(data),
            dtype=names,
            keep_default_na=False,
            na_values=[""],
            usecols=lambda column: column in columns,
            nrows=most_rows + 1,  # one more is enough to refuse: parsed whole, 80 million took 5 GB
        )
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: unreadable ({one_line(error)}); {fix}") from None
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(missing)}; {fix}")
    if table.empty:
        raise DataError(f"{path}: no rows; {fix}")
    if len(table) < least_rows:
        raise DataError(f"{path}: {len(table)} row(s), fewer than the {least_rows} that {stage} writes; {fix}")
    for column, allowed in columns.items():
        if isinstance(allowed, Numbers):
            values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
            bad = ~np.isfinite(values) | allowed.bad(values)
        else:
            bad = ~table[column].isin(allowed).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            if not isinstance(allowed, Numbers):
                what = "not one of the test split's classes"
            else:
                what = f"not {allowed.words}" if np.isfinite(values[row]) else "not a finite number"
            raise DataError(
                f"{path}: column {column} holds {shown(table[column].iloc[row])} in row {row}, {what}; {fix}"
            )
    repeated = table[once].duplicated().to_numpy() if once else np.zeros(0, bool)
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        raise DataError(f"{path}: column {once} holds {shown(table[once].iloc[row])} again in row {row}; {fix}")
    if len(table) > most_rows:
        raise DataError(f"{path}: more than the {most_rows} rows that {stage} writes; {fix}")
    return table


@contextlib.contextmanager
def missing_as_data_error(path: str | Path, fix: str):
    """A missing input named with its fix: after DVC removed train's outputs (a run stopped
    under `dvc repro`) figures said to check that plots/history.csv exists and may be read."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{path}: not found; {fix}") from None


def check_counts(table: pd.DataFrame, column: str, path: str, stage: str) -> None:
    """The column counts its rows 1, 2, 3, ... in order, as the stage writes it: rows out of
    order, or a count of 1.5, would be drawn where they are without a word."""
    expected = np.arange(1, len(table) + 1)
    wrong = table[column].to_numpy(dtype=float) != expected
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise DataError(
            f"{path}: column {column} holds {shown(table[column].iloc[row])} in row {row}, not {expected[row]}: "
            f"{stage} writes them counted from 1 in order; re-create it with `dvc repro {stage}`"
        )


def check_per_class(per_class: pd.DataFrame, predictions: pd.DataFrame, classes: tuple[str, ...]) -> None:
    """Each class's row counts its images and correct predictions as predictions.csv does,
    and its accuracy is the one those counts give."""
    label = predictions["label"].to_numpy()
    right = label == predictions["predicted"].to_numpy()
    expected = pd.DataFrame(
        {
            "images": np.bincount(label, minlength=len(classes)),
            "correct": np.bincount(label[right], minlength=len(classes)),
        },
        index=list(classes),
    )
    rows = per_class.set_index("class").loc[list(classes)]
    for column in ("images", "correct"):
        differs = rows[column].to_numpy() != expected[column].to_numpy()
        if differs.any():
            name = classes[int(np.flatnonzero(differs)[0])]
            raise DataError(
                f"{paths.PER_CLASS}: class {name!r} has {shown(rows[column][name])} {column}, but {paths.PREDICTIONS} "
                f"gives it {expected[column][name]}; re-create it with `dvc repro evaluate`"
            )
    wrong = ~np.isclose(rows["accuracy"].to_numpy(), expected["correct"] / np.maximum(expected["images"], 1))
    if wrong.any():
        name = classes[int(np.flatnonzero(wrong)[0])]
        raise DataError(
            f"{paths.PER_CLASS}: class {name!r} has accuracy {shown(rows['accuracy'][name])}, not its "
            f"{expected['correct'][name]} correct of {expected['images'][name]}; re-create it with `dvc repro evaluate`"
        )


def check_confusion(confusion: pd.DataFrame, predictions: pd.DataFrame, classes: tuple[str, ...]) -> None:
    """Row i of the confusion table is test image i's class and prediction, as in predictions.csv."""
    names = np.array(classes)
    ordered = predictions.sort_values("index")
    for column, source in (("actual", "label"), ("predicted", "predicted")):
        differs = confusion[column].to_numpy() != names[ordered[source].to_numpy()]
        if differs.any():
            row = int(np.flatnonzero(differs)[0])
            raise DataError(
                f"{paths.CONFUSION}: row {row} says {column} {shown(confusion[column].iloc[row])}, but "
                f"{paths.PREDICTIONS} says {shown(names[ordered[source].iloc[row]])} for test image {row}; "
                f"re-create it with `dvc repro evaluate`"
            )


def shown(value) -> str:
    """A table's value as a message shows it: inf, not np.float64(inf)."""
    return short_repr(value.item() if isinstance(value, np.generic) else value)


def read_lr_find_metrics(lowest_tested: float, highest_tested: float) -> dict:
    """lr_find's picks, each within the LRs its curve tested (min_loss_div10 a tenth below)."""
    path = Path(paths.LR_FIND_METRICS)
    fix = "re-create it with `dvc repro lr_find`"
    # Python floats: an integer of 400 digits compares with them, where numpy's overflowed.
    lowest_tested, highest_tested = float(lowest_tested), float(highest_tested)
    try:
        with missing_as_data_error(path, fix):
            chosen = read_json_artifact(path, MAX_METRICS_BYTES, fix)
        descent = chosen.get("descent", True)
        # Without a descent lr_find chose nothing, and train ran at its fixed train.max_lr.
        max_lr = chosen["max_lr"] if descent is True else None
        steepest = chosen.get("steepest_lr")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{path}: no max_lr to read ({one_line(error)}); {fix}") from None
    if not isinstance(descent, bool):
        raise DataError(f"{path}: descent = {short_repr(descent)} is not true or false; {fix}")
    if descent and max_lr is None:
        raise DataError(f"{path}: descent is true but max_lr is null, where lr_find writes its pick; {fix}")
    for name, value, least in (("max_lr", max_lr, lowest_tested / 10), ("steepest_lr", steepest, lowest_tested)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf
        ):
            raise DataError(f"{path}: {name} = {short_repr(value)} is not a learning rate; {fix}")
        if value is not None and not least <= value <= highest_tested:
            raise DataError(
                f"{path}: {name} = {short_repr(value)} lies outside the LRs {paths.LR_FIND_CURVE} tested "
                f"({lowest_tested:.3g} to {highest_tested:.3g}); {fix}"
            )
    return chosen


def augmented_samples(train: Split, params: Params):
    """What the network sees: a seeded random draw of training images after augmentation,
    so the grid does not depend on the order in which the source listed its images."""
    chosen = np.random.default_rng(params.seed).choice(len(train), size=min(SAMPLE_COUNT, len(train)), replace=False)
    sample = Split(train.images[chosen], train.labels[chosen], train.classes)
    loader = DeviceLoader(sample, SAMPLE_COUNT, torch.device("cpu"), augmentation=params.augment, seed=params.seed)
    images, labels = next(iter(loader))
    return image_grid(
        denormalize(images).numpy(),
        [train.classes[label] for label in labels.tolist()],
        suptitle=f"augmented training images (crop pad {params.augment.crop_padding}, "
        f"flip {params.augment.flip}, cutout {params.augment.cutout})",
    )


if __name__ == "__main__":
    run_stage(main, **paths.as_declared("figures"))
