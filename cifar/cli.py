"""Run a stage's main function: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from cifar.atomic import STOP_SIGNALS, remove_stale_scratch, signal_name
from cifar.errors import PipelineError, call_off_torchs_exit_report, one_line, out_of_memory_message, printable

log = logging.getLogger(__name__)


class Stopped(BaseException):
    """A termination signal, raised wherever the stage is, so that a write in flight is undone
    as for Ctrl-C's KeyboardInterrupt."""


def _raise_stopped(signal_number, frame) -> None:
    raise Stopped(signal_number)


def stop_signals(*, ctrl_c: bool = False) -> list[signal.Signals]:
    """The stop signals (cifar.atomic.STOP_SIGNALS), and Ctrl-C's SIGINT where asked, that are
    not ignored: under nohup, or SIGINT for a job a script started in the background."""
    asked = (signal.SIGINT, *STOP_SIGNALS) if ctrl_c else STOP_SIGNALS
    return [sig for sig in asked if signal.getsignal(sig) != signal.SIG_IGN]


def install_stop_handlers() -> None:
    """From here on the stop signals raise Stopped wherever the stage is. By default they end
    a process without a word, and leave its scratch behind."""
    for sig in stop_signals():
        signal.signal(sig, _raise_stopped)


def stopped_line(stopped: Stopped, stage: str) -> str:
    name = signal_name(stopped.args[0])
    if stopped.args[0] == signal.SIGXCPU:
        name += " (its CPU-time limit, `ulimit -t`, ran out)"
    return f"error: stopped by {name} before {stage} finished; no file is left half-written: run it again"


def run_stage(main: Callable[[], None], output_folders: Iterable[str | Path]) -> None:
    """Run main, first clearing what killed writes left in the folders the stages write to."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for scratch in remove_stale_scratch(output_folders):
        log.info("removed %s, left by an interrupted write", scratch)
    install_stop_handlers()
    try:
        _run(main)
    finally:
        # The stage's outcome is decided and said: a signal from here to the exit (a CPU-time
        # limit that keeps sending SIGXCPU, a late Ctrl-C while torch unloads) could only end it
        # in a traceback, or in exit code 130 after its outputs are written.
        for sig in (signal.SIGINT, *STOP_SIGNALS):
            if signal.getsignal(sig) in (_raise_stopped, signal.default_int_handler):
                signal.signal(sig, signal.SIG_IGN)
        call_off_torchs_exit_report()


def _run(main: Callable[[], None]) -> None:
    try:
        main()
    except Stopped as stopped:
        print(stopped_line(stopped, Path(sys.argv[0]).stem), file=sys.stderr)
        sys.exit(128 + stopped.args[0])
    except PipelineError as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)
        sys.exit(2)
    except (MemoryError, ImportError, OSError, RuntimeError) as error:
        # Out of memory in main; stages/__init__.py's hook covers the imports before it.
        message = out_of_memory_message(error, Path(sys.argv[0]).stem)
        # a file the stage cannot read or write, where it does not say so itself
        if message is None and isinstance(error, OSError):
            where = f"{error.filename}: " if error.filename else ""
            message = (
                f"error: {printable(where)}{error.strerror or one_line(error)}; "
                f"check that it exists and that you may read and write it"
            )
        if message is None:
            raise
        print(message, file=sys.stderr)
        sys.exit(2)
