"""lr_find: the LR range test on augmented training batches; picks train's max_lr."""

if not __package__:  # `python stages/lr_find.py` leaves the repository root, and cifar/, off sys.path
    raise SystemExit("error: run it from the repository root as `python -m stages.lr_find` (or `dvc repro lr_find`)")

import logging

import numpy as np
import pandas as pd

from cifar.atomic import replaced_together, text_digest, write_json, write_text
from cifar.cli import kept_for_inspection, run_stage
from cifar.config import load_params
from cifar.dataset import load_split
from cifar.errors import TrainingError
from cifar.params_file import declared_values
from cifar.training.lr_find import range_test
from cifar.training.recipe import Recipe
from stages import paths

log = logging.getLogger("lr_find")


def main() -> None:
    # As it starts: taken at the end, an edit while it ran was recorded beside the old values' curve.
    ran_with = declared_values(paths.declared_params("lr_find"))
    params = load_params(paths.PARAMS)
    recipe = Recipe.from_params(params)
    train = load_split(paths.DATA, "train")
    model = recipe.fresh_model(len(train.classes))
    loader = recipe.train_loader(train)
    log.info(
        "lr_find: %d steps of %d augmented images (%.1f passes over the %d training images)",
        params.lr_find.num_iter,
        params.train.batch_size,
        params.lr_find.num_iter * params.train.batch_size / len(train),
        len(train),
    )
    test = range_test(recipe, model, loader)
    # DVC's linear template has no log axis; log10(lr) spreads the curve as the PNG's log scale does.
    curve = pd.DataFrame({"lr": test.lrs, "log10_lr": np.log10(test.lrs), "loss": test.losses}).to_csv(index=False)
    with replaced_together():
        write_json(paths.LR_FIND_METRICS, test.metrics())
        write_text(paths.LR_FIND_CURVE, curve)
        # train's input: metrics are for comparing runs, this file for handing on the pick; and
        # for figures, what the curve is (one loss edited anywhere in it was drawn without a word).
        # For both, the params and training split it ran with: run alone after an edit, train ran
        # SGD at Adam's pick, and 700 images at the pick for 500.
        write_json(
            paths.MAX_LR_PICK,
            {
                "verdict": test.reading.verdict,
                "max_lr": test.max_lr,
                "curve_sha256": text_digest(curve),
                "params": ran_with,
                "train_sha256": train.sha256,
            },
        )
    if test.no_descent:
        if params.train.max_lr == "find":
            # The outputs above show why; DVC does not record a failed stage as done, so train never runs.
            try:
                test.require_descent()
            except TrainingError as error:
                raise TrainingError(f"{error}; {kept_for_inspection()}") from None
        log.warning("WARNING: %s; train runs at its fixed train.max_lr %.3g", test.no_descent, params.train.max_lr)
        return
    log.info(
        "lr_find: max_lr %.3g by %s (min loss %.3f at lr %.3g)",
        test.max_lr,
        test.pick,
        test.min_loss,
        test.lr_at_min_loss,
    )
    for warning in test.warnings:
        log.warning("WARNING: lr_find: %s", warning)


if __name__ == "__main__":
    run_stage(main, **paths.as_declared("lr_find"))
