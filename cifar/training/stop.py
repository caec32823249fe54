"""A request to stop training between steps, made by a signal, so a kill never lands mid-write."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from cifar.atomic import signal_name


class StopRequest:
    """Made by a stage and given to the training loop, which stops after the step in flight
    once a signal has arrived; the object itself is the signal handler."""

    def __init__(self):
        self.signal_name: str | None = None

    def __call__(self, signal_number, frame) -> None:
        self.signal_name = signal_name(signal_number)

    @contextmanager
    def on_signals(self, *signals: int) -> Iterator[StopRequest]:
        """While inside, these signals request the stop instead of killing the process."""
        previous = {sig: signal.signal(sig, self) for sig in signals}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
