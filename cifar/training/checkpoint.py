"""End-of-epoch training checkpoints, so a killed run resumes instead of starting over.

A checkpoint holds everything the next epoch depends on: weights and BatchNorm buffers,
optimizer and scheduler state, the loader's random generator (shuffling and augmentation),
the history so far and the untrained network's loss at the first step, which the diagnosis
of a run at chance or diverged reads the history against. With these restored, a resumed
CPU run ends bit-identical to an uninterrupted one, and is diagnosed as that one would be.
It also holds a fingerprint of what shaped the run (params, max_lr, both splits, device,
precision and the code); a checkpoint of a different run is never resumed from, nor one
whose weights or optimizer state hold NaN or infinity. The train stage removes it only
once every output is written, so a run that finished training but failed to write (a full
disk) writes its outputs from it on the next try.
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import math
import os
import shlex
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from cifar.atomic import atomic_path
from cifar.cli import in_a_dvc_workspace_copy, loaded_sources, under_dvc
from cifar.errors import OutputError, one_line, short_repr
from cifar.params_file import is_plain_data
from cifar.reading import torch_file_problem

# What a checkpoint's pickled structure may take without counting its epochs and steps, and
# what the file around the contents (a digest and a tensor) takes: about 600 bytes.
MAX_STRUCTURE_BYTES = 64 << 10
_WRAPPER_STRUCTURE_BYTES = 4 << 10

log = logging.getLogger(__name__)


def loaded_source_digest(packages: tuple[str, ...]) -> str:
    """SHA-256 of the source of every module of these packages imported so far.

    Taken once the training code is imported, it covers exactly the code that trains, so
    an edit to a model or the loop makes an old checkpoint a different run.
    """
    digest = hashlib.sha256()
    for name, (_, source_digest) in sorted(loaded_sources(packages).items()):
        digest.update(f"{name}\0{source_digest}\0".encode())
    return digest.hexdigest()


# The columns of a history row, as fit() writes them (tests/test_engine.py holds the two equal).
EPOCH_ROW_KEYS = {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "seconds"}
FLOAT32_MAX = torch.finfo(torch.float32).max
# Optimizer settings that the constructors and OneCycle set once and no step changes.
FIXED_SETTINGS = (
    "weight_decay",
    "initial_lr",
    "max_lr",
    "min_lr",
    "nesterov",
    "dampening",
    "eps",
    "amsgrad",
    "maximize",
    "base_momentum",
    "max_momentum",
)


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
    # The loss of the first step's batch, before the update: the untrained network's, which
    # chance.py reads the epochs' losses against, and its standard error. None only before the
    # first epoch is done.
    start_loss: float | None = None
    start_error: float | None = None

    def restore(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: LRScheduler, generator: torch.Generator
    ) -> None:
        """Load into a run's objects; raises if the state does not fit them."""
        model.load_state_dict(self.model)
        # A state dict carries its own settings: another weight decay or peak LR would train on.
        for run_group, group in zip(optimizer.param_groups, self.optimizer.get("param_groups", [])):
            for key in FIXED_SETTINGS:
                if key in run_group and group.get(key) != run_group[key]:
                    raise ValueError(
                        f"its optimizer's {key} is {short_repr(group.get(key))}, this run's {run_group[key]!r}"
                    )
        # load_state_dict casts a moment to its parameter's dtype: a bool one trained on as 0s and 1s.
        for moments in self.optimizer.get("state", {}).values():
            for name, value in moments.items():
                if name != "step" and torch.is_tensor(value) and not value.is_floating_point():
                    raise ValueError(f"optimizer state {name} is of {value.dtype}, which train never saves")
        settings = [dict(group) for group in optimizer.param_groups]
        optimizer.load_state_dict(self.optimizer)
        # The rest of a group's settings are the run's own (Adam's second beta), and the learning
        # rate and the momentum OneCycle cycles are the schedule's at this step, as step() sets
        # them: an edited beta or momentum would train on unnoticed. Only the moments are loaded.
        for group, own in zip(optimizer.param_groups, settings):
            group.update(own)
        # torch checks only the number of parameters; a moment of another shape (a 0-dim one
        # too) failed at the first step. (It casts a floating one to its parameter's dtype; one of
        # another kind, bool, is refused above.)
        for parameter, moments in optimizer.state.items():
            for name, value in moments.items():
                if name == "step" or value is None:  # a count, checked against the steps done; SGD without momentum
                    continue
                if not torch.is_tensor(value) or value.shape != parameter.shape:
                    shown = tuple(value.shape) if torch.is_tensor(value) else short_repr(value)
                    raise ValueError(f"optimizer state {name} is {shown} for a parameter of {tuple(parameter.shape)}")
        scheduler.load_state_dict(self.scheduler)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns of get_lr() called outside step()
            for group, lr in zip(optimizer.param_groups, scheduler.get_lr()):
                group["lr"] = lr
        generator.set_state(self.generator)


def refuse_a_linked_checkpoint(path: Path) -> None:
    """A checkpoint moved elsewhere and linked back: train resumed from it, trained an epoch, and
    was refused as it replaced it, with the advice to remove the link (and the epochs it held)."""
    if path.is_symlink():
        target = path.parent / os.readlink(path)
        if not target.exists():  # moved on, or deleted: no file to move back
            raise OutputError(
                f"{path} is a symbolic link to {target}, which does not exist; remove the link (`rm "
                f"{shlex.quote(str(path))}`), and train starts from its first epoch"
            )
        raise OutputError(
            f"{path} is a symbolic link (to {target}), and train replaces its checkpoint whole after each epoch; "
            f"move the file back in its place to resume from it (`mv {shlex.quote(str(target))} "
            f"{shlex.quote(str(path))}`), or link its folder {path.parent} instead, which may lead out of the "
            f"repository"
        )


@dataclass(frozen=True)
class CheckpointFile:
    path: Path
    fingerprint: dict  # JSON-like; must equal the stored one to resume

    def save(self, state: TrainingState) -> None:
        write_checkpoint(self.path, {"fingerprint": self.fingerprint, "state": state.__dict__})

    def remove(self) -> None:
        """Forget a finished run's state: the next run with the same fingerprint starts afresh."""
        self.path.unlink(missing_ok=True)

    def resume_hint(self, epoch: int, epochs: int) -> str:
        """How a run stopped before its epoch `epoch` of `epochs` goes on (past the last, to write
        its outputs): in a copy of the workspace DVC deletes with the checkpoint, `dvc repro` in the
        project would not resume that run; and after a run outside DVC, whose outputs stay those
        dvc.lock records, it finds nothing to do. Each command names the stage as cifar.cli's
        rewording finds it: "finds train up to date" named a renamed stage by its old name."""
        if in_a_dvc_workspace_copy():
            return (
                "the checkpoint was in the copy of the workspace that DVC ran this experiment in, which DVC "
                "deletes: run the experiment again, which trains from epoch 1"
            )
        goes_on = f"resume from epoch {epoch}" if epoch <= epochs else f"write the outputs from its {epochs} epochs"
        if not under_dvc():
            return (
                f"the checkpoint holds every completed epoch: run `python -m stages.train` (or `dvc repro -f -s "
                f"train`) to {goes_on}"
            )
        if os.environ.get("DVC_EXP_NAME"):  # DVC's mark of `dvc exp run` in the workspace
            # `dvc repro` resumed it, but recorded no experiment; params.yaml holds what -S set.
            return (
                f"the checkpoint holds every completed epoch: run `dvc exp run` (no -S: params.yaml holds what it "
                f"set; or `dvc exp run -f -s train` where it finds nothing to run) to {goes_on} and record the "
                f"experiment"
            )
        # After `dvc repro -f` the outputs are still those dvc.lock records, and a plain `dvc repro`
        # found train up to date and left the checkpoint unused.
        return (
            f"the checkpoint holds every completed epoch: run `dvc repro` (or `dvc repro -f -s train` where `dvc "
            f"repro` finds nothing to run) to {goes_on}"
        )

    def load(self, epochs: int, steps: int = 0, most_bytes: int | None = None) -> TrainingState | None:
        """The stored state of this run of `epochs` epochs and `steps` steps, or None (logging
        why) to start from scratch; a file over `most_bytes` is not read."""
        if not self.path.is_file():
            return None
        size = self.path.stat().st_size
        if most_bytes is not None and size > most_bytes:
            # A 2 GiB file of zeros (sparse, 8 KB on disk) took train 3.5 GB more to find it damaged.
            log.warning(
                "not resuming: %s takes %s bytes, more than the %s a checkpoint of this model takes; training from "
                "scratch",
                self.path,
                f"{size:,}",
                f"{most_bytes:,}",
            )
            return None
        try:
            stored = read_checkpoint(self.path, structure_bound(epochs, steps))
            state = TrainingState(**stored["state"])
            _check_types(stored["fingerprint"], state)
            _check_tensor_sizes(stored)
        except Exception as error:  # any damage means: do not trust it
            log.warning("not resuming: %s is unreadable (%s); training from scratch", self.path, error)
            return None
        if stored["fingerprint"] != self.fingerprint:
            changed = sorted(
                key
                for key in self.fingerprint.keys() | stored["fingerprint"].keys()
                if self.fingerprint.get(key) != stored["fingerprint"].get(key)
            )
            log.info(
                "not resuming: %s is from a run with different %s; training from scratch", self.path, ", ".join(changed)
            )
            return None
        if not 0 <= state.epoch <= epochs:
            log.warning(
                "not resuming: %s claims %d of %d epochs done; training from scratch", self.path, state.epoch, epochs
            )
            return None
        inconsistent = _inconsistency(state)
        if inconsistent:
            log.warning("not resuming: %s %s; training from scratch", self.path, inconsistent)
            return None
        broken = _first_non_finite({"model": state.model, "optimizer": state.optimizer, "scheduler": state.scheduler})
        if broken:
            # Resumed, it would fail at its first step as if max_lr were too high, on every re-run.
            self.remove()
            log.warning(
                "not resuming: %s holds NaN or infinity (first in %s); removed it, training from scratch",
                self.path,
                broken,
            )
            return None
        return state

    def resume(
        self,
        epochs: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler,
        generator: torch.Generator,
    ) -> TrainingState | None:
        """Restore the state to resume from into the run's objects and return it, or return
        None (logging why) with the objects as they were, to train from scratch."""
        state = self.load(epochs, scheduler.total_steps, checkpoint_bound(model, epochs, scheduler.total_steps))
        if state is None:
            return None
        steps = state.epoch * (scheduler.total_steps // epochs)
        try:
            progress = _progress_problem(state, steps)
        except Exception as error:  # a value of a type train never saves: a complex moment, a list of states
            progress = f"holds optimizer or schedule values train never saves ({one_line(error)})"
        if progress:
            log.warning("not resuming: %s %s; training from scratch", self.path, progress)
            return None
        fresh = copy.deepcopy(
            TrainingState(0, model.state_dict(), optimizer.state_dict(), scheduler.state_dict(), generator.get_state())
        )
        try:
            state.restore(model, optimizer, scheduler, generator)
        except Exception as error:  # whatever a state train did not save raises as it loads
            log.warning(
                "not resuming: %s matches this run but does not load into it (%s); training from scratch",
                self.path,
                one_line(error),
            )
            fresh.restore(model, optimizer, scheduler, generator)
            return None
        if state.epoch == epochs:
            log.info("finishing from %s: all %d epochs were done; writing the outputs", self.path, epochs)
        else:
            log.info("resuming from %s: %d of %d epochs done", self.path, state.epoch, epochs)
        return state


def write_checkpoint(path: Path, contents: dict) -> None:
    """Save {"fingerprint": ..., "state": ...} as bytes beside their digest: any change to
    them after this save (a bit flipped on disk, a hand edit of a value or of the fingerprint)
    is caught whole at load, before a value is trusted; the checks below hold for a file
    written otherwise."""
    serialized = io.BytesIO()
    torch.save(contents, serialized)
    payload = serialized.getvalue()
    with atomic_path(path) as temporary:
        # The contents as a tensor, which torch keeps in a record of its own: as bytes they
        # would be pickled, and the file's pickled structure could not be bounded apart from them.
        contents = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        torch.save({"sha256": hashlib.sha256(payload).hexdigest(), "contents": contents}, temporary)


def read_checkpoint(path: Path, max_structure_bytes: int = MAX_STRUCTURE_BYTES) -> dict:
    """What write_checkpoint saved; raises if it is not what it saved, or if the contents'
    pickled structure takes more than max_structure_bytes."""
    problem = torch_file_problem(path, _WRAPPER_STRUCTURE_BYTES)
    if problem:
        raise ValueError(problem)
    stored = torch.load(path, map_location="cpu", weights_only=True)
    contents = stored["contents"]
    if not (
        torch.is_tensor(contents)
        and contents.dtype == torch.uint8
        and contents.dim() == 1
        and contents.is_contiguous()
        and contents.untyped_storage().nbytes() == contents.numel()  # not one byte viewed 2e9 times
    ):
        raise ValueError("its contents are not the bytes train saves")
    if hashlib.sha256(contents.numpy()).hexdigest() != stored["sha256"]:  # hashed in place, not copied
        raise ValueError("its contents do not match the digest saved with them: edited or damaged")
    payload = contents.numpy().tobytes()
    del stored, contents  # before the contents are unpickled beside their bytes
    problem = torch_file_problem(payload, max_structure_bytes)
    if problem:
        raise ValueError(f"its saved contents: {problem}")
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)


def structure_bound(epochs: int, steps: int) -> int:
    """The most bytes a checkpoint's pickled structure may take in a run of these epochs and
    steps: the optimizer's and scheduler's own (a few KB), a history row per epoch and a
    learning rate per step (about 150 and 9 bytes), with room to spare."""
    return MAX_STRUCTURE_BYTES + 512 * epochs + 32 * steps


def checkpoint_bound(model: nn.Module, epochs: int, steps: int) -> int:
    """The most bytes a checkpoint of this model's run takes: its weights and buffers and an
    optimizer's state of at most twice as many (Adam's two moments), a fourth share for room,
    the pickled structure's bound and 1 MiB for torch's zip headers (ResNet-9's: 80 MB)."""
    tensors = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
    return 4 * tensors + structure_bound(epochs, steps) + (1 << 20)


def _check_types(fingerprint: object, state: TrainingState) -> None:
    """Raise TypeError unless each stored value has the type save() writes: a weights-only
    load still takes any dicts, lists, numbers and strings."""
    expected = {
        "fingerprint": (fingerprint, dict),
        "epoch": (state.epoch, int),
        "model": (state.model, dict),
        "optimizer": (state.optimizer, dict),
        "scheduler": (state.scheduler, dict),
        "generator": (state.generator, torch.Tensor),
        "history": (state.history, list),
        "step_lrs": (state.step_lrs, list),
        "chance_warning": (state.chance_warning, (str, type(None))),
        "start_loss": (state.start_loss, (float, type(None))),
        "start_error": (state.start_error, (float, type(None))),
    }
    for name, (value, kind) in expected.items():
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"its {name} is {short_repr(value)}, not what train saves")
    if not is_plain_data(fingerprint):  # compared with `!=`, which a tensor answers with a tensor
        raise TypeError("its fingerprint holds values that are not what train saves")
    if not all(isinstance(row, dict) for row in state.history):
        raise TypeError("its history holds rows that are not what train saves")
    if state.chance_warning == "":
        raise TypeError("its chance_warning is '', not what train saves")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _progress_problem(state: TrainingState, steps: int) -> str | None:
    """Where the state's step counts (of the LR record, the schedule, each parameter's Adam
    moments) differ from the steps its epochs hold, or a second moment is negative, in words."""
    if len(state.step_lrs) != steps:
        return f"holds {len(state.step_lrs)} step learning rates for {steps} steps done"
    # FiniteOneCycleLR stays at its last step once the schedule is done.
    if state.scheduler.get("last_epoch") != min(steps, state.scheduler.get("total_steps", 0) - 1):
        return f"holds a schedule at step {short_repr(state.scheduler.get('last_epoch'))} for {steps} steps done"
    for moments in state.optimizer.get("state", {}).values():
        taken = moments.get("step") if isinstance(moments, dict) else None
        if taken is not None and float(taken) != steps:
            return f"holds optimizer moments of {short_repr(float(taken))} steps for {steps} steps done"
        second = moments.get("exp_avg_sq") if isinstance(moments, dict) else None
        if torch.is_tensor(second) and (second < 0).any():
            return "holds a negative second moment (exp_avg_sq), which Adam never makes"
    return None


def _inconsistency(state: TrainingState) -> str | None:
    """What in the state disagrees with itself, in words; None when it is as fit() saves it:
    one history row of finite numbers per epoch done, counted from 1, positive step LRs, and
    a start loss, a finite number above 0, once an epoch is done."""
    if len(state.history) != state.epoch:
        return f"holds {len(state.history)} epochs of history for {state.epoch} epochs done"
    for number, row in enumerate(state.history, 1):
        if row.keys() != EPOCH_ROW_KEYS or row["epoch"] != number or not all(map(_is_number, row.values())):
            return f"holds a history row {number} that train did not write ({short_repr(row)})"
    if not all(_is_number(lr) and lr > 0 for lr in state.step_lrs):
        return "holds step learning rates that are not finite numbers above 0"
    # Without it a resumed run would read its losses against a guess at the start, and could
    # advise the other way from the run it continues.
    # A float32 loss, as training computes it (1e300 flipped the advice from "lower max_lr" to "raise");
    # the standard error of a mean of losses, none below 0, is at most that mean.
    if state.epoch and not (_is_number(state.start_loss) and 0 < state.start_loss <= FLOAT32_MAX):
        return (
            f"holds a start loss (the untrained network's) of {short_repr(state.start_loss)} for {state.epoch} "
            f"epochs done, not a number above 0 and at most float32's {FLOAT32_MAX:.4g}"
        )
    if state.epoch and not (_is_number(state.start_error) and 0 <= state.start_error <= state.start_loss):
        return (
            f"holds a start loss's standard error of {short_repr(state.start_error)} for {state.epoch} epochs done, "
            f"not a number from 0 to the start loss's {state.start_loss:.4g}"
        )
    if not state.epoch and (state.start_loss, state.start_error) != (None, None):
        return f"holds a start loss of {short_repr(state.start_loss)} for 0 epochs done, before any step"
    return None


def _leaves(value: object, name: str = "", walked: set[int] | None = None) -> Iterator[tuple[str, object]]:
    """Each value of a nested state that is no dict, list or tuple, with its dotted name. Each
    container is walked once: a pickle may hold one list as both items of another, 40 deep in
    600 bytes, and a walk along every path (2**40) never ended."""
    walked = set() if walked is None else walked
    if not isinstance(value, (dict, list, tuple)):
        yield name, value
        return
    if id(value) in walked:
        return
    walked.add(id(value))
    for key, item in value.items() if isinstance(value, dict) else enumerate(value):
        yield from _leaves(item, f"{name}.{key}" if name else str(key), walked)


def _check_tensor_sizes(stored: dict) -> None:
    """Raise ValueError for a tensor larger than the data saved for it: a view of one number
    repeated 3e9 times (stride 0) is 4 bytes in the file, and checking its values took 19 GB."""
    for name, value in _leaves(stored):
        if torch.is_tensor(value) and value.numel() * value.element_size() > value.untyped_storage().nbytes():
            raise ValueError(f"its tensor {name} is larger than the data saved for it, which train never saves")


def _first_non_finite(state: object) -> str | None:
    """The dotted name of the first float tensor or number in a nested state that is NaN or infinite."""
    for name, value in _leaves(state):
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            return name
        if isinstance(value, float) and not math.isfinite(value):
            return name
    return None
