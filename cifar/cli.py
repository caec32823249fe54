"""Run a stage's main function: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import logging
import sys
from typing import Callable

from cifar.errors import PipelineError


def run_stage(main: Callable[[], None]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
