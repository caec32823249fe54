"""train: the chosen model under its optimizer (Adam or SGD) and OneCycle; weights, quality and
speed metrics, history."""

if not __package__:  # `python stages/train.py` leaves the repository root, and cifar/, off sys.path
    raise SystemExit("error: run it from the repository root as `python -m stages.train` (or `dvc repro train`)")

import io
import logging
import math
import signal
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
import torchinfo
from torch._dynamo.exc import TorchDynamoException

from cifar.atomic import replaced_together, write_csv, write_json, write_text
from cifar.cli import kept_for_inspection, run_stage, stop_signals
from cifar.config import LEARNING_RATE, MAX_OPTIMIZER_FACTOR, MIN_LEARNING_RATE, Params, load_params
from cifar.dataset import Split, check_same_classes, load_split, recorded_split_problem
from cifar.errors import DataError, TrainingError, one_line, short_repr
from cifar.models import save_trained
from cifar.params_file import declared_values, ran_with_other_params
from cifar.reading import MAX_METRICS_BYTES, read_artifact, read_json_artifact
from cifar.runtime import cpu_kernels, device_name, environment, gpu_kernels
from cifar.training.chance import at_chance, at_chance_after_the_peak, diverged, guessing_accuracy
from cifar.training.checkpoint import CheckpointFile, loaded_source_digest, refuse_a_linked_checkpoint
from cifar.training.engine import fit
from cifar.training.lr_find import RangeTest, check_handed_curve, read_curve
from cifar.training.recipe import Recipe
from cifar.training.stop import StopRequest
from stages import paths

log = logging.getLogger("train")


def main() -> None:
    # As it starts, as lr_find records them: figures checks the curves it draws were trained with today's.
    ran_with = declared_values(paths.declared_params("train"))
    refuse_a_linked_checkpoint(Path(paths.CHECKPOINT))
    params = load_params(paths.PARAMS)
    recipe = Recipe.from_params(params)
    device, precision = recipe.device, recipe.precision
    max_lr, pick = chosen_max_lr(params)
    train, test = load_split(paths.DATA, "train"), load_split(paths.DATA, "test")
    # After the split is checked, which names damaged data as such.
    other_split = pick and recorded_split_problem(pick.get("train_sha256"), train, paths.DATA, "train")
    if other_split:
        raise DataError(
            f"{paths.MAX_LR_PICK}: {other_split}; re-run it with `dvc repro lr_find`, or set train.max_lr to a number"
        )
    fix = "re-create both with `dvc repro download`"
    check_same_classes(train.classes, f"{paths.DATA}/train.npz", test, f"{paths.DATA}/test.npz", fix)

    model = recipe.fresh_model(len(train.classes))
    # Of the fresh model: torchinfo's forward pass would move a trained one's BatchNorm statistics.
    summary = torchinfo.summary(
        model,
        input_size=(1, 3, 32, 32),
        device=device,
        verbose=0,
        col_names=("input_size", "output_size", "num_params", "mult_adds"),
    )
    train_loader, test_loader = recipe.train_loader(train), recipe.test_loader(test)
    log.info(
        "training %s on %d images (%s, %s), max_lr %.3g, %d epochs of %d steps",
        params.model.name,
        len(train),
        device_name(device),
        precision,
        max_lr,
        params.train.epochs,
        len(train_loader),
    )
    trainable = torch.compile(model) if params.train.compile else model
    checkpoint = CheckpointFile(Path(paths.CHECKPOINT), run_fingerprint(params, device, precision, max_lr, train, test))
    # SIGXCPU comes shortly before `ulimit -t` kills the stage (stages/__init__.py): a step may
    # take longer, so it stops the step in flight, as in the other stages.
    between_steps = [sig for sig in stop_signals(ctrl_c=True) if sig != signal.SIGXCPU]
    try:
        with StopRequest().on_signals(*between_steps) as stop:
            result = fit(
                recipe,
                trainable,
                train_loader,
                test_loader,
                max_lr=max_lr,
                num_classes=len(train.classes),
                checkpoint=checkpoint,
                stop=stop,
            )
    except TorchDynamoException as error:  # torch.compile's, as the first step compiles the model
        # its message ends in a paragraph on its own logs
        failure = one_line(Exception(str(error).partition("\n\n")[0]), limit=300)
        raise TrainingError(
            f"torch.compile failed ({failure}); set train.compile: false, or mend what it names (it compiles with "
            f"CXX's C++ compiler and writes to TORCHINDUCTOR_CACHE_DIR, by default a folder in the temp folder)"
        ) from error

    history = pd.DataFrame(result.history)
    with replaced_together():
        # Not each epoch's seconds: equal weights make an equal file, so DVC skips what follows.
        curves = [{key: value for key, value in row.items() if key != "seconds"} for row in result.history]
        save_trained(paths.MODEL, model, params.model, train.classes, curves, train.sha256, test.sha256, ran_with)
        write_text(paths.MODEL_SUMMARY, f"{summary}\n")
        write_csv(paths.HISTORY, history)
        write_csv(paths.LR_SCHEDULE, pd.DataFrame({"step": range(1, len(result.step_lrs) + 1), "lr": result.step_lrs}))
        guess = guessing_accuracy(test.labels, len(test.classes))
        at_chance_level = at_chance_after_the_peak(result.history, params.train.onecycle.max_at_epoch, guess, len(test))
        write_json(paths.TRAIN_METRICS, quality_metrics(history, at_chance_level, max_lr))
        write_json(paths.SPEED_METRICS, speed_metrics(history, train_loader.images_per_epoch))
        write_json(paths.TRAIN_ENVIRONMENT, environment(device, precision))
    final_accuracy = result.history[-1]["test_accuracy"]
    if at_chance(final_accuracy, guess, len(test)):
        raise TrainingError(
            f"training failed: the final test accuracy {final_accuracy:.3f} on {len(test)} images is not above chance; "
            f"{kept_for_inspection()}. {result.chance_warning}"
        )
    divergence = diverged(result.history, len(train.classes), max_lr, result.start, params.train.max_lr == "find")
    if divergence:
        raise TrainingError(f"{divergence}; {kept_for_inspection()}")
    checkpoint.remove()


def run_fingerprint(
    params: Params, device: torch.device, precision: str, max_lr: float, train: Split, test: Split
) -> dict:
    """What shapes a training run: a checkpoint with another fingerprint is never resumed from."""
    return {
        "params": {key: asdict(getattr(params, key)) for key in ("model", "augment", "train")} | {"seed": params.seed},
        "device": str(device),
        # A CPU's sums run in another order on another number of threads, with other kernels
        # (ATEN_CPU_CAPABILITY=default, or another machine's: a run resumed with AVX-512 after an
        # epoch without matched neither run), and in another torch.
        "cpu threads": torch.get_num_threads() if device.type == "cpu" else None,
        "cpu kernels": cpu_kernels() if device.type == "cpu" else None,
        # A GPU's kernels are picked by its model and cuDNN's version: a run resumed on an H100
        # after epochs on an A100 matched neither run.
        "gpu kernels": gpu_kernels(device) if device.type == "cuda" else None,
        "torch": str(torch.__version__),  # a TorchVersion, which weights-only loading refuses
        "precision": precision,
        "max_lr": max_lr,
        "train data": train.sha256,
        "test data": test.sha256,
        "code": loaded_source_digest(("cifar", "stages")),
    }


def chosen_max_lr(params: Params) -> tuple[float, dict | None]:
    """The max_lr to train at and, when it is lr_find's pick, lr_find's record of it."""
    if params.train.max_lr != "find":
        return params.train.max_lr, None
    path = Path(paths.MAX_LR_PICK)
    fix = "run the lr_find stage first (`dvc repro lr_find`) or set train.max_lr to a number"
    try:
        found = read_json_artifact(path, MAX_METRICS_BYTES, fix)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: no max_lr to read ({one_line(error)}); {fix}") from None
    if not isinstance(found, dict):
        raise DataError(
            f"{path}: no max_lr to read (a JSON {type(found).__name__}, not the object lr_find writes); {fix}"
        )
    verdict, max_lr = found.get("verdict"), found.get("max_lr")
    if verdict not in ("descent", "flat", "rising"):
        raise DataError(f"{path}: verdict = {short_repr(verdict)} is not 'descent', 'flat' or 'rising'; {fix}")
    if verdict == "descent" and (
        isinstance(max_lr, bool)
        or not isinstance(max_lr, (int, float))
        or not MIN_LEARNING_RATE <= max_lr <= MAX_OPTIMIZER_FACTOR
    ):
        raise DataError(f"{path}: max_lr = {short_repr(max_lr)} is not a learning rate ({LEARNING_RATE}); {fix}")
    rerun = "re-run it with `dvc repro lr_find`, or set train.max_lr to a number"
    stale = ran_with_other_params(found.get("params"), "lr_find", paths.declared_params("lr_find"))
    if stale:
        raise DataError(f"{path}: {stale}; {rerun}")
    # The verdict and the pick as lr_find reads them off its curve: an edited verdict of "flat"
    # blamed a range test that had found a descent, and an edited max_lr was trained at.
    read = range_test_handed_on(found.get("curve_sha256"), params)
    if verdict != read.reading.verdict:
        raise DataError(
            f"{path}: verdict = {short_repr(verdict)}, but lr_find reads {read.reading.verdict!r} off "
            f"{paths.LR_FIND_CURVE}; {rerun}"
        )
    if read.max_lr is None:
        raise TrainingError(
            f"{path}: the range test found no descent (its loss {'rose' if verdict == 'rising' else 'stayed flat'}), "
            f"so there is no max_lr to train at; re-run lr_find with a longer or wider range (its error says how) "
            f"or set train.max_lr to a number"
        )
    if not math.isclose(max_lr, read.max_lr, rel_tol=1e-9):
        raise DataError(
            f"{path}: max_lr = {short_repr(max_lr)}, but lr_find picked {read.max_lr:.6g} off "
            f"{paths.LR_FIND_CURVE}; {rerun}"
        )
    return float(max_lr), found


def range_test_handed_on(curve_sha256: object, params: Params) -> RangeTest:
    """lr_find's reading of the curve whose digest its record holds."""
    fix = "re-run it with `dvc repro lr_find`, or set train.max_lr to a number"
    # A row is three floats, under 80 characters.
    try:
        curve = read_artifact(paths.LR_FIND_CURVE, 256 * (params.lr_find.num_iter + 1), fix)
    except FileNotFoundError:
        raise DataError(f"{paths.LR_FIND_CURVE}: not found; {fix}") from None
    check_handed_curve(paths.LR_FIND_CURVE, curve, paths.MAX_LR_PICK, curve_sha256, fix)
    try:
        table = pd.read_csv(io.BytesIO(curve))
        return read_curve(table["lr"].tolist(), table["loss"].tolist(), params.lr_find)
    except (ValueError, KeyError, TypeError, IndexError, TrainingError) as error:  # a digest recomputed for another
        raise DataError(f"{paths.LR_FIND_CURVE}: not a curve lr_find reads ({one_line(error)}); {fix}") from None


def quality_metrics(history: pd.DataFrame, at_chance_level: bool, max_lr: float) -> dict:
    """What the model is worth: equal for equal weights, whatever the machine or its speed."""
    last, best = history.iloc[-1], history.loc[history["test_accuracy"].idxmax()]
    return {
        "test_accuracy": float(last["test_accuracy"]),
        "test_loss": float(last["test_loss"]),
        "train_accuracy": float(last["train_accuracy"]),
        "train_loss": float(last["train_loss"]),
        "best_test_accuracy": float(best["test_accuracy"]),
        "best_epoch": int(best["epoch"]),
        "max_lr": max_lr,
        "at_chance_level": at_chance_level,
    }


def speed_metrics(history: pd.DataFrame, images_per_epoch: int) -> dict:
    # The first epoch carries one-off costs (cuDNN autotuning, torch.compile): report it apart.
    steady = history["seconds"].iloc[1:] if len(history) > 1 else history["seconds"]
    seconds_per_epoch = float(steady.mean())
    return {
        "seconds_per_epoch": seconds_per_epoch,
        "first_epoch_seconds": float(history["seconds"].iloc[0]),
        "images_per_second": images_per_epoch / seconds_per_epoch,
    }


if __name__ == "__main__":
    run_stage(main, **paths.as_declared("train"))
