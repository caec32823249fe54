"""Reading data/predictions.csv (one row per test image, as the evaluate stage writes it),
checked against the test split it must describe."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cifar.dataset import Split
from cifar.errors import DataError, one_line


def load_predictions(path: str | Path, test: Split) -> pd.DataFrame:
    fix = "re-create it with `dvc repro evaluate`"
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: not found; {fix}") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: unreadable ({one_line(error)}); {fix}") from None
    # Each id column and how many ids exist.
    ids = {"index": (len(test), "test images"), "label": (len(test.classes), "classes"), "predicted": (len(test.classes), "classes")}
    missing = [column for column in (*ids, "confidence") if column not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(missing)}; {fix}")
    if not pd.api.types.is_numeric_dtype(frame["confidence"]):
        raise DataError(f"{path}: column confidence holds non-numbers; {fix}")
    if len(frame) != len(test):
        raise DataError(f"{path}: {len(frame)} rows for a test split of {len(test)} images; {fix}")
    for column, (count, what) in ids.items():
        values = frame[column]
        if not pd.api.types.is_integer_dtype(values):
            raise DataError(f"{path}: column {column} holds non-integers; {fix}")
        if values.min() < 0 or values.max() >= count:
            raise DataError(
                f"{path}: column {column} holds {values.min()}..{values.max()}, beyond the {count} {what} "
                f"(0..{count - 1}); {fix}"
            )
    return frame
