"""evaluate: the trained model on the test set: accuracy, loss, per class, confusion, predictions."""

if not __package__:  # `python stages/evaluate.py` leaves the repository root, and cifar/, off sys.path
    raise SystemExit("error: run it from the repository root as `python -m stages.evaluate` (or `dvc repro evaluate`)")

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from cifar.atomic import replaced_together, sha256sum_lines, text_digest, write_csv, write_json, write_text
from cifar.cli import run_stage
from cifar.config import load_params
from cifar.dataset import check_same_classes, load_split
from cifar.errors import DataError
from cifar.models import load_trained
from cifar.training.inference import predict
from cifar.training.recipe import Recipe
from stages import paths

log = logging.getLogger("evaluate")


def main() -> None:
    params = load_params(paths.PARAMS)
    recipe = Recipe.from_params(params)
    trained = load_trained(paths.MODEL, recipe.device)
    test = load_split(paths.DATA, "test")
    check_same_classes(
        trained.classes, paths.MODEL, test, f"{paths.DATA}/test.npz", "re-run the pipeline with `dvc repro`"
    )
    result = predict(
        trained.model, recipe.test_loader(test), recipe.device, recipe.precision, flip_tta=params.evaluate.tta
    )
    if not math.isfinite(result.loss):
        raise DataError(
            f"{paths.MODEL}: the test loss on {paths.DATA} is {result.loss}, as the model's outputs are not finite; "
            f"re-create it with `dvc repro train`"
        )

    metrics = result.metrics()
    with replaced_together():
        write_json(paths.EVALUATE_METRICS, metrics)
        names = np.array(test.classes)
        write_csv(paths.CONFUSION, pd.DataFrame({"actual": names[result.labels], "predicted": names[result.predicted]}))
        write_csv(paths.PER_CLASS, result.per_class(test.classes))
        predictions = pd.DataFrame(
            {
                "index": np.arange(len(result.labels)),
                "label": result.labels,
                "predicted": result.predicted,
                "confidence": result.confidence,
            }
        )
        table = predictions.to_csv(index=False)
        write_text(paths.PREDICTIONS, table)
        # figures checks the misclassified gallery and explain the images it explains through the
        # model, not every row: with the digests, rows edited past those (errors marked correct,
        # with tables and metrics to match) are refused too, and so are predictions of a test
        # split re-imported since (alike but for the images no model check looks at).
        made_of = {paths.PREDICTIONS: text_digest(table), f"{paths.DATA}/test.npz": test.sha256}
        write_text(paths.PREDICTIONS_DIGEST, sha256sum_lines(made_of, Path(paths.PREDICTIONS_DIGEST).parent))
    log.info("test accuracy %.4f, loss %.4f, %d misclassified", result.accuracy, result.loss, metrics["misclassified"])


if __name__ == "__main__":
    run_stage(main, **paths.as_declared("evaluate"))
