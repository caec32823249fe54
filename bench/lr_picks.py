"""The LR finder's rules, measured on short real-data runs: the table in docs/lr-finder.md.

    .venv/bin/python -m bench.lr_picks --data /path/to/cifar10-jpeg.tar.xz

For each range length (20, 50, then 100 steps), for both models:
1. one range test, as the lr_find stage runs it, recorded in docs/lr-finder-curves.json;
2. every lr_find.pick rule applied to the recorded curve, offline, with the curve's verdict;
3. one training run, as the train stage runs it, per distinct max_lr among the picks,
   recorded in docs/lr-finder-runs.json. A pick is trained at the nearest quarter decade
   (1e-3, 1.78e-3, 3.16e-3, 5.62e-3, ...): rules that agree that closely share a run.
Both files are kept and extended, so an interrupted measurement resumes where it stopped
and a new rule trains only the LRs no run has covered. Last, the table, in Markdown, on stdout.

A pipeline run with these settings (`train.max_lr=find`) already holds a range test and the
training at its pick: `--from-run CHECKOUT` records both instead of measuring them again.

Settings (as a README-style small CPU run): 5,000 train / 1,000 test images, class-balanced,
batch 512, 3 epochs with the OneCycle peak after the first, seed 0, other knobs at their defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import typing
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import cifar
from cifar.config import DataConfig, LRFindConfig, ModelConfig, OneCycleConfig, Params, load_params
from cifar.errors import ConfigError, TrainingError
from cifar.training.lr_find import range_test, read_curve, rule_picks
from cifar.training.recipe import Recipe
from stages import paths

CURVES = Path("docs/lr-finder-curves.json")
RUNS = Path("docs/lr-finder-runs.json")
MODELS = {"custom_resnet": ModelConfig("custom_resnet"), "resnet18-gn": ModelConfig("resnet18", norm="group")}
RANGE_LENGTHS = (20, 50, 100)
RULES = typing.get_args(typing.get_type_hints(LRFindConfig)["pick"])
STEPS_PER_DECADE = 4

log = logging.getLogger("lr_picks")


def settings(source: str, model: str, **overrides) -> Params:
    base = Params()
    return replace(
        base,
        model=MODELS[model],
        data=DataConfig(source=source, train_limit=5000, test_limit=1000),
        lr_find=replace(base.lr_find, **{key: value for key, value in overrides.items() if key != "max_lr"}),
        train=replace(
            base.train,
            batch_size=512,
            epochs=3,
            onecycle=OneCycleConfig(max_at_epoch=1),
            max_lr=overrides.get("max_lr", "find"),
        ),
    )


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "torch": torch.__version__,
        "date": date.today().isoformat(),
    }


def on_grid(lr: float) -> float:
    return float(f"{10 ** (round(STEPS_PER_DECADE * np.log10(lr)) / STEPS_PER_DECADE):.3g}")


class Store:
    """A JSON list of measurements, rewritten whole after each one."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = json.loads(path.read_text()) if path.exists() else []

    def find(self, **key) -> dict | None:
        return next((row for row in self.rows if all(row[name] == value for name, value in key.items())), None)

    def add(self, row: dict) -> dict:
        self.rows.append(row)
        self.path.write_text(json.dumps(self.rows, indent=1) + "\n")
        return row


def record_curve(data: cifar.Data, source: str, model: str, steps: int) -> dict:
    params = settings(source, model, num_iter=steps)
    recipe = Recipe.from_params(params)
    network = recipe.fresh_model(len(data.train.classes))
    started = time.perf_counter()
    test = range_test(recipe, network, recipe.train_loader(data.train))
    seconds = time.perf_counter() - started
    log.info("curve %s, %d steps: %.0f s", model, steps, seconds)
    return {
        "model": model,
        "num_iter": steps,
        "lrs": test.lrs,
        "losses": test.losses,
        "seconds": round(seconds),
        **machine(),
    }


def record_run_checkout(checkout: Path, curves: Store, runs: Store) -> None:
    """Records the range test (plots/lr_find.csv) and, if train ran, the training (plots/history.csv)
    of a pipeline run whose params.yaml holds this bench's settings."""
    params = load_params(checkout / paths.PARAMS)
    model = next((name for name, config in MODELS.items() if config == params.model), None)
    if model is None or params != settings(params.data.source, model, num_iter=params.lr_find.num_iter):
        raise SystemExit(
            f"error: {checkout / paths.PARAMS} does not hold this bench's settings (see bench/lr_picks.py)"
        )
    steps = params.lr_find.num_iter
    if not curves.find(model=model, num_iter=steps):
        curve = pd.read_csv(checkout / paths.LR_FIND_CURVE)
        curves.add(
            {
                "model": model,
                "num_iter": steps,
                "lrs": curve["lr"].tolist(),
                "losses": curve["loss"].tolist(),
                "recorded_by": "the lr_find stage",
                **machine(),
            }
        )
    if (checkout / paths.HISTORY).exists():
        max_lr = json.loads((checkout / paths.TRAIN_METRICS).read_text())["max_lr"]
        history = pd.read_csv(checkout / paths.HISTORY)
        run_near(runs, model, max_lr) or runs.add(
            {
                "model": model,
                "max_lr": max_lr,
                "test_accuracy": history["test_accuracy"].round(4).tolist(),
                "train_loss": history["train_loss"].round(4).tolist(),
                "recorded_by": "the train stage",
                **machine(),
            }
        )


def run_near(runs: Store, model: str, lr: float) -> dict | None:
    """The run of this model at lr's quarter decade, if any."""
    return next((row for row in runs.rows if row["model"] == model and on_grid(row["max_lr"]) == on_grid(lr)), None)


def train_run(data: cifar.Data, source: str, model: str, max_lr: float) -> dict:
    started = time.perf_counter()
    try:
        trained = cifar.train(settings(source, model, max_lr=max_lr), data)
        history = trained.history
        outcome = {
            "test_accuracy": history["test_accuracy"].round(4).tolist(),
            "train_loss": history["train_loss"].round(4).tolist(),
        }
    except TrainingError as error:  # a non-finite loss
        outcome = {"diverged": str(error)}
    log.info("run %s at max_lr %g: %s", model, max_lr, outcome)
    return {"model": model, "max_lr": max_lr, **outcome, "seconds": round(time.perf_counter() - started), **machine()}


def verdict_and_picks(curve: dict) -> tuple[str, dict[str, float | None]]:
    test = read_curve(curve["lrs"], curve["losses"], LRFindConfig(num_iter=curve["num_iter"]))
    reading = test.reading
    verdict = (
        f"{reading.verdict} (fall {reading.fall:.2g} = {reading.fall / reading.noise:.1f} × noise {reading.noise:.2g})"
    )
    return verdict, rule_picks(test.lrs, test.losses)


def result(run: dict | None, lr: float) -> str:
    if run is None:
        return "not trained"
    outcome = "diverged" if "diverged" in run else f"{run['test_accuracy'][-1]:.3f}"
    return outcome if np.isclose(run["max_lr"], lr, rtol=0.01) else f"{outcome} (trained at {run['max_lr']:.3g})"


def table(curves: Store, runs: Store) -> str:
    lines = [
        "| model | range steps | verdict | " + " | ".join(f"`{rule}`" for rule in RULES) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in RULES) + " |",
    ]
    for curve in sorted(curves.rows, key=lambda row: (row["model"], row["num_iter"])):
        verdict, picks = verdict_and_picks(curve)
        cells = []
        for rule in RULES:
            lr = picks[rule]
            cells.append("—" if lr is None else f"{lr:.3g} → {result(run_near(runs, curve['model'], lr), lr)}")
        lines.append(f"| {curve['model']} | {curve['num_iter']} | {verdict} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="the CIFAR-10 source to measure on: a local archive or class-folder tree")
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=RANGE_LENGTHS, help="range lengths to measure (steps)"
    )
    parser.add_argument("--curves-only", action="store_true", help="record the range tests, train nothing")
    parser.add_argument(
        "--table-only", action="store_true", help="print the table of what is recorded, measure nothing"
    )
    parser.add_argument(
        "--from-run",
        type=Path,
        metavar="CHECKOUT",
        help="record the range test and training of a pipeline run with these settings, measure nothing",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    curves, runs = Store(CURVES), Store(RUNS)
    if args.from_run:
        try:
            record_run_checkout(args.from_run, curves, runs)
        except (ConfigError, OSError) as error:
            raise SystemExit(f"error: --from-run: {error}") from None
    elif not args.table_only:
        if not args.data:
            parser.error("--data is needed to measure (or give --from-run or --table-only)")
        data = cifar.load_data(settings(args.data, "custom_resnet"))
        for steps in args.lengths:
            for model in MODELS:
                curves.find(model=model, num_iter=steps) or curves.add(record_curve(data, args.data, model, steps))
            for model in MODELS if not args.curves_only else ():
                _, picks = verdict_and_picks(curves.find(model=model, num_iter=steps))
                for lr in sorted({on_grid(lr) for lr in picks.values() if lr is not None}):
                    run_near(runs, model, lr) or runs.add(train_run(data, args.data, model, lr))
    print(table(curves, runs))


if __name__ == "__main__":
    main()
