"""End-of-epoch training checkpoints, so a killed run resumes instead of starting over.

A checkpoint holds everything the next epoch depends on: weights and BatchNorm buffers,
optimizer and scheduler state, the loader's random generator (shuffling and augmentation)
and the history so far. With these restored, a resumed CPU run ends bit-identical to an
uninterrupted one. It also holds a fingerprint of what shaped the run (params, max_lr,
both splits, device, precision and the code); a checkpoint of a different run is never
resumed from.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cifar.atomic import atomic_path

log = logging.getLogger(__name__)


def loaded_source_digest(packages: tuple[str, ...]) -> str:
    """SHA-256 of the source of every module of these packages imported so far.

    Taken once the training code is imported, it covers exactly the code that trains, so
    an edit to a model or the loop makes an old checkpoint a different run.
    """
    digest = hashlib.sha256()
    sources = {
        name: module.__file__ for name, module in list(sys.modules.items())
        if name.split(".")[0] in packages and getattr(module, "__file__", None)
    }
    for name in sorted(sources):
        with open(sources[name], "rb") as source:
            digest.update(name.encode() + b"\0" + source.read())
    return digest.hexdigest()


@dataclass
class TrainingState:
    epoch: int  # epochs completed
    model: dict
    optimizer: dict
    scheduler: dict
    generator: torch.Tensor
    history: list[dict] = field(default_factory=list)
    step_lrs: list[float] = field(default_factory=list)
    chance_warning: str | None = None


@dataclass(frozen=True)
class CheckpointFile:
    path: Path
    fingerprint: dict  # JSON-like; must equal the stored one to resume

    def save(self, state: TrainingState) -> None:
        with atomic_path(self.path) as temporary:
            torch.save({"fingerprint": self.fingerprint, "state": state.__dict__}, temporary)

    def remove(self) -> None:
        """Forget a finished run's state: the next run with the same fingerprint starts afresh."""
        self.path.unlink(missing_ok=True)

    def load(self, epochs: int) -> TrainingState | None:
        """The state to resume from, or None (logging why) to start from scratch."""
        if not self.path.is_file():
            return None
        try:
            stored = torch.load(self.path, map_location="cpu", weights_only=True)
            state = TrainingState(**stored["state"])
        except Exception as error:  # any damage means: do not trust it
            log.warning("not resuming: %s is unreadable (%s); training from scratch", self.path, error)
            return None
        if stored["fingerprint"] != self.fingerprint:
            changed = sorted(
                key for key in self.fingerprint.keys() | stored["fingerprint"].keys()
                if self.fingerprint.get(key) != stored["fingerprint"].get(key)
            )
            log.info("not resuming: %s is from a run with different %s; training from scratch", self.path, ", ".join(changed))
            return None
        if state.epoch >= epochs:
            log.info("not resuming: %s is of a finished run; training again from scratch", self.path)
            return None
        log.info("resuming from %s: %d of %d epochs done", self.path, state.epoch, epochs)
        return state
