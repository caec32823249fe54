"""Run a stage's main function: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import _thread
import atexit
import contextlib
import hashlib
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cifar.atomic import (
    STOP_SIGNALS,
    checked_as_outputs_land,
    landed_among,
    refuse_linked_outputs,
    remove_stale_scratch,
    signal_name,
)
from cifar.errors import (
    ConfigError,
    PipelineError,
    call_off_torchs_exit_report,
    one_line,
    out_of_memory_message,
    out_of_open_files,
    printable,
)
from cifar.reading import walk

log = logging.getLogger(__name__)


class Stopped(BaseException):
    """A termination signal, raised wherever the stage is, so that a write in flight is undone
    as for Ctrl-C's KeyboardInterrupt."""


_stopping = False  # set by the first stop signal or Ctrl-C, cleared as the handlers are installed
_stopped_by: BaseException | None = None  # what the first one raised


def _raise_stopped(signal_number, frame) -> None:
    if _first_stop():
        raise _stop_with(Stopped(signal_number))


def _raise_interrupted(signal_number, frame) -> None:
    if _first_stop():
        raise _stop_with(KeyboardInterrupt())


def _stop_with(stop: BaseException) -> BaseException:
    global _stopped_by
    _stopped_by = stop
    return stop


def stop_that_came() -> BaseException | None:
    """The Stopped or KeyboardInterrupt a stop signal or Ctrl-C raised, if one came. A library
    may turn it into an error of its own: raised as numpy's C code imported `datetime`, it
    became numpy's ImportError "Importing the numpy C-extensions failed", in a traceback."""
    return _stopped_by


def _raise_the_stop_again(signal_number, frame) -> None:
    if _in_the_hook:  # raised here it would be lost again ("Exception ignored in sys.unraisablehook")
        _call_it_again(signal_number)
        return
    signal.signal(signal_number, _ignore)
    raise _stopped_by


def _call_it_again(signal_number: int) -> None:
    """Has the main thread call signal_number's handler a moment later, where it is then: from a
    thread of its own, as the main thread's interrupt_main calls the handler at once, inside the
    hook; one not waited for (threading's start() waits, and the handler ran in that wait)."""
    with contextlib.suppress(RuntimeError):  # no thread to be had (`ulimit -u`): _run stops it once main returns
        _thread.start_new_thread(_interrupt_main_soon, (signal_number,))


def _interrupt_main_soon(signal_number: int) -> None:
    time.sleep(0.001)  # the main thread leaves the hook meanwhile (should it not, the handler calls again)
    _thread.interrupt_main(signal_number)


def _raise_where_python_can(unraisable) -> None:
    """sys.unraisablehook while a stage runs. A stop raised in a finalizer (a weak reference's
    callback as matplotlib drew), where Python cannot raise it, was written as "Exception ignored
    in ..." with a traceback, and the stage ran on to exit 0: it is raised again where the stage
    is, through its signal's handler, at once."""
    if unraisable.exc_value is None or unraisable.exc_value is not _stopped_by:
        _hook_before(unraisable)
    elif not _outcome_decided:
        global _in_the_hook
        number = _stopped_by.args[0] if isinstance(_stopped_by, Stopped) else signal.SIGINT
        signal.signal(number, _raise_the_stop_again)
        _in_the_hook = True
        try:
            _call_it_again(number)
        finally:
            _in_the_hook = False


_hook_before = sys.unraisablehook
_outcome_decided = _in_the_hook = False


def _first_stop() -> bool:
    """Whether this is the first stop signal or Ctrl-C; the others are ignored from then on. A
    stage that stops undoes its writes in flight: a second signal meanwhile (20 SIGTERMs 2 ms
    apart) cut that short, and left their scratch behind. Python may run a signal's handler
    inside another's, so the flag is set before the handlers are changed."""
    global _stopping
    if _stopping:
        return False
    _stopping = True
    _ignore_further_stops()
    return True


def _ignore_further_stops() -> None:
    for sig in (signal.SIGINT, *STOP_SIGNALS):
        if signal.getsignal(sig) in (
            _raise_stopped,
            _raise_interrupted,
            _raise_the_stop_again,
            signal.default_int_handler,
        ):
            signal.signal(sig, _ignore)


def _ignore(signal_number, frame) -> None:
    """Ignores its signal from now on (SIG_IGN), also while Python exits, when the signals that
    had a handler of Python's end the process again. SIG_IGN in place of a handler that a signal
    had come for made Python write "Signal 15 ignored due to race condition" in a traceback:
    here it has been handled."""
    signal.signal(signal_number, signal.SIG_IGN)


def stop_signals(*, ctrl_c: bool = False) -> list[signal.Signals]:
    """The stop signals (cifar.atomic.STOP_SIGNALS), and Ctrl-C's SIGINT where asked, that are
    not ignored: under nohup, or SIGINT for a job a script started in the background."""
    asked = (signal.SIGINT, *STOP_SIGNALS) if ctrl_c else STOP_SIGNALS
    return [sig for sig in asked if signal.getsignal(sig) != signal.SIG_IGN]


def install_stop_handlers() -> None:
    """From here on the stop signals raise Stopped wherever the stage is, Ctrl-C (unless it is
    ignored) KeyboardInterrupt as Python's own handler does. By default the stop signals end a
    process without a word, and leave its scratch behind."""
    global _stopping, _stopped_by, _outcome_decided, _hook_before
    _stopping, _stopped_by, _outcome_decided = False, None, False
    if sys.unraisablehook is not _raise_where_python_can:
        _hook_before, sys.unraisablehook = sys.unraisablehook, _raise_where_python_can
    for sig in stop_signals():
        signal.signal(sig, _raise_stopped)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _raise_interrupted)


def under_dvc() -> bool:
    """Whether DVC runs this stage (`dvc repro`, `dvc exp run`): it names the project in
    DVC_ROOT and runs the stage there or in a copy of it. A stage run by hand from another
    project's stage inherits that project's DVC_ROOT, and runs elsewhere."""
    return _dvc_project() == Path.cwd().resolve() or in_a_dvc_workspace_copy()


def in_a_dvc_workspace_copy() -> bool:
    """Whether DVC runs this stage in a copy of the workspace (`dvc exp run --temp`, a queued
    experiment), which DVC 3 makes under the project's .dvc/tmp/exps and deletes when the run
    ends; it holds the files git tracks, and of the data DVC tracks only the stages' dependencies."""
    project = _dvc_project()
    return project is not None and project / ".dvc" / "tmp" / "exps" in Path.cwd().resolve().parents


def kept_for_inspection() -> str:
    """What became of a failed run's outputs: under `dvc exp run --temp` (or a queued run) in a
    copy DVC deletes, where `dvc checkout --force` was advised for a workspace it never touched."""
    if in_a_dvc_workspace_copy():
        return (
            "its outputs were written in the copy of the workspace that DVC runs this experiment in, which DVC "
            "deletes; the workspace's own outputs are untouched, and the experiment is not recorded"
        )
    return (
        "its outputs are written for inspection, but the stage is not recorded as done "
        "(`dvc checkout --force` puts back the recorded ones)"
    )


def workspace_copied() -> Path | None:
    """The workspace of which DVC runs this stage in a copy, if it does."""
    return _dvc_project() if in_a_dvc_workspace_copy() else None


def _dvc_project() -> Path | None:
    project = os.environ.get("DVC_ROOT")
    return Path(project).resolve() if project else None


class _StderrThatMayFail:
    """stderr, sent to /dev/null from the first write it cannot take (a full disk under its log
    file, its reader gone, as with `| head -1`): train and lr_find stopped at their first
    progress bar, which tqdm could not draw, where the other stages ran on."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):  # ValueError: a closed stderr
            self._to_nowhere()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self._to_nowhere()

    def _to_nowhere(self) -> None:
        self._stream = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115  stderr from here to the exit, never closed


def say(line: str) -> None:
    """The stage's last line, on stderr. Where stderr cannot take it (its reader gone, as with
    `| head`; /dev/full) the stage ended in a traceback written to nowhere, and exit code 1:
    stderr then becomes /dev/null, and the exit code stays the one the line goes with."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # ValueError: a closed stderr
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115  stderr from here to the exit, never closed


def leave(code: int) -> None:
    """sys.exit(code), or at once past `ulimit -t`'s soft limit: the stage has little CPU time
    left before Linux kills it at the hard one (stages/__init__.py), and Python's own exit,
    which unloads torch, took more than a second. It then ends after its atexit calls."""
    soft = resource.getrlimit(resource.RLIMIT_CPU)[0]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    if soft != resource.RLIM_INFINITY and usage.ru_utime + usage.ru_stime >= soft:
        _end_at_once(code)
    sys.exit(code)


def _end_at_once(code: int) -> None:
    """End the process after its atexit calls, without Python's own exit, which unloads torch."""
    call_off_torchs_exit_report()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None where it was started with it closed
            with contextlib.suppress(OSError, ValueError):  # a full or closed one: nothing more to say there
                stream.flush()
    os._exit(code)


def stopped_line(stopped: Stopped, stage: str, outputs_in_place: bool = False) -> str:
    """The stop's line; `outputs_in_place` where the stage had put its new outputs in place
    (a SIGTERM as download logged its import said "before download finished", the previous
    data gone)."""
    if outputs_in_place:
        return (
            f"error: stopped by {signal_name(stopped.args[0])} after {stage} put its new outputs in place, before "
            f"it finished its checks: DVC has not recorded them; run it again (or `dvc checkout` puts back the "
            f"recorded ones)"
        )
    if stopped.args[0] == signal.SIGXCPU:  # the same limit would stop a second run too
        return (
            f"error: stopped by SIGXCPU: its CPU-time limit (`ulimit -t`) ran out before {stage} finished; "
            f"no file is left half-written: raise that limit, then run it again"
        )
    name = signal_name(stopped.args[0])
    return f"error: stopped by {name} before {stage} finished; no file is left half-written: run it again"


def run_stage(
    main: Callable[[], None],
    output_folders: Iterable[str | Path],
    declared_params: Sequence[str] = (),
    outputs: Sequence[str | Path] = (),
    inputs: Sequence[str | Path] = (),
    reword: Callable[[str], str] = str,
) -> None:
    """Run main, first clearing what killed writes left in the folders the stages write to and
    refusing `outputs` that are links; fail it if params.yaml's values of its `declared_params`,
    its `inputs` (files or folders) or the project's modules it loaded changed while it ran.
    Its refusal's line is passed through `reword` (the stages name their fixes' stages as
    dvc.yaml does)."""
    # None where the stage was started with stderr closed (`2>&-`): its writes then failed at exit, code 120.
    sys.stderr = _StderrThatMayFail(sys.stderr or open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115  kept to the exit
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    swept = remove_stale_scratch(output_folders)
    for scratch in swept:
        log.info("removed %s, left by an interrupted write", scratch)
    if swept:  # a previous output put back may be an input, kept as it was before: "changed while it ran"
        global _inputs_at_start
        _inputs_at_start = ((), {})
    install_stop_handlers()
    # held since stages/__init__.py, while the stage's libraries loaded: one that came meanwhile acts here
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, *STOP_SIGNALS})
    started_as = getattr(sys.modules.get("__main__"), "__spec__", None)
    if started_as is not None and started_as.name.startswith("stages.") and not _started_up:
        # stages/__init__.py cut short ran the stage without the checks past the cut, exit 0
        say(
            "error: stages/__init__.py ended before the stages' start-up checks did (cut short, or edited?); "
            "restore it from git (`git diff stages/__init__.py` shows what changed)"
        )
        raise SystemExit(2)
    try:
        started_with = _deps_at_start(inputs)
        _run(
            lambda: (
                refuse_linked_outputs(outputs),
                _with_deps_unchanged(main, declared_params, inputs, outputs, started_with),
            ),
            reword,
            outputs,
        )
    finally:
        ignore_stops_from_now()
        call_off_torchs_exit_report()
        # Python opens its prompt after a script that returns with PYTHONINSPECT set, which a
        # library's module could do as it was imported: evaluate waited there with its outputs written.
        os.environ.pop("PYTHONINSPECT", None)
    if _sources_read is not None:  # a stage's own process (stages/__init__.py), not a test's call
        # DVC hashes a stage's deps once its process has ended, and Python's own exit took 1 to
        # 1.6 s after the last check (2-core CPU): a module edited then was recorded beside the
        # outputs of the old one.
        _end_at_once(0)


def ignore_stops_from_now() -> None:
    """Once a stage's outcome is decided and said: a signal from there to the exit (a CPU-time
    limit that keeps sending SIGXCPU, a late Ctrl-C while torch unloads) could only end it in a
    traceback, or in another exit code after its line (130 after its outputs are written)."""
    global _outcome_decided
    _outcome_decided = True
    _ignore_further_stops()
    for sig in (signal.SIGINT, *STOP_SIGNALS):  # those that did not come meanwhile
        if signal.getsignal(sig) is _ignore:
            signal.signal(sig, signal.SIG_IGN)


def _with_deps_unchanged(
    main: Callable[[], None],
    keys: Sequence[str],
    inputs: Sequence[str | Path],
    outputs: Sequence[str | Path],
    deps_before: dict[str, object],
) -> None:
    """DVC records a stage's params and deps in dvc.lock as it ends: weight_decay edited while
    train ran was recorded for a model trained at the old value (and DVC's run cache restored
    that model when the new value was asked for), inference.py edited while evaluate ran as the
    code of the old code's predictions. Checked as the outputs are put in place, so that a
    refused stage leaves the previous ones, and again at the end."""
    # Here, not at the top: cifar.cli loads before the stages' import hook, with the standard
    # library only (params_file needs yaml, which may be missing or a stray namesake).
    from cifar.params_file import declared_values

    params_before = declared_values(keys) if keys else {}

    def unchanged() -> None:
        _check_params_unchanged(keys, params_before)
        _check_deps_unchanged(inputs, deps_before)

    with checked_as_outputs_land(outputs, unchanged):
        main()
    unchanged()


def _check_params_unchanged(keys: Sequence[str], before: dict) -> None:
    from cifar.params_file import PARAMS_FILE, declared_values, first_difference, shown

    if not keys:
        return
    stage = Path(sys.argv[0]).stem
    try:
        after = declared_values(keys)
    except ConfigError as error:  # moved away or replaced while the stage ran
        raise ConfigError(
            f"{PARAMS_FILE} could not be read as {stage} ended, to check its values had not changed while it ran "
            f"({error}); restore it and run {stage} again"
        ) from None
    changed = [first_difference(key, before[key], after[key]) for key in keys if before[key] != after[key]]
    if changed:
        key, old, new = changed[0]
        raise ConfigError(
            f"{PARAMS_FILE}: {key} changed while {stage} ran (from {shown(old)} to {shown(new)}); DVC would record "
            f"the new values beside outputs made with the old ones: run it again"
        )


PROJECT_PACKAGES = ("cifar", "stages")


def loaded_sources(packages: tuple[str, ...] = PROJECT_PACKAGES) -> dict[str, tuple[str, str | None]]:
    """{module name: (its source file, the file's SHA-256, None if unreadable)} for every module
    of these packages imported so far, the stage's own (`__main__`, which `python -m` runs by
    its name) among them."""
    by_name = {
        getattr(getattr(module, "__spec__", None), "name", None) or name: module
        for name, module in list(sys.modules.items())
    }
    files = {
        name: module.__file__
        for name, module in by_name.items()
        if name.split(".")[0] in packages and getattr(module, "__file__", None)
    }
    return {name: (file, _file_sha256(file)) for name, file in files.items()}


def _file_sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as source:
            return hashlib.file_digest(source, "sha256").hexdigest()
    except OSError:
        return None


def _files_as_they_are(inputs: Sequence[str | Path]) -> dict[str, tuple | None]:
    """{file: its inode, size and modification time} for each file of `inputs` (files or
    folders): the stages replace their outputs by renames, so a new one is a new inode."""
    found: dict[str, tuple | None] = {}
    for top in inputs:
        walked = walk(top) if os.path.isdir(top) else [(os.path.dirname(top), [], [os.path.basename(top)])]
        for folder, _, files in walked:
            for name in files:
                path = os.path.join(folder, name)
                try:
                    status = os.stat(path)
                    found[path] = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
                except OSError:
                    found[path] = None
    return found


_sources_read: dict[str, bytes] | None = None  # None: not started as a stage (a test calling run_stage)
_started_up = False  # set as stages/__init__.py ends, its checks all run


def start_up_done() -> None:
    global _started_up
    _started_up = True


_sources_at_start: dict[str, tuple[int, int, int]] = {}
_inputs_at_start: tuple[tuple[str | Path, ...], dict[str, tuple | None]] = ((), {})


def keep_state_at_start(
    sources_read: dict[str, bytes], sources_at_start: dict[str, tuple[int, int, int]], inputs: Sequence[str | Path]
) -> None:
    """The source each of the project's modules was run from, as Python read it to import it
    (stages/__init__.py fills the dict as the stage imports them), each source's inode, size
    and modification time as the stage started, and _files_as_they_are of the stage's inputs
    as it read dvc.yaml, before it loaded torch: a module or an input edited while torch
    loaded (seconds) was checked as run_stage began, and recorded by DVC as the stage ended,
    as it is now, beside outputs made from what it was."""
    global _sources_read, _sources_at_start, _inputs_at_start
    _sources_read, _sources_at_start = sources_read, sources_at_start
    _inputs_at_start = (tuple(inputs), _files_as_they_are(inputs))


def _module_as_run(file: str, digest_now: str | None) -> str | None:
    """The SHA-256 of the source a module was run from; digest_now for one imported before
    stages/__init__.py kept them (itself), or in a test."""
    read = (_sources_read or {}).get(file)
    return digest_now if read is None else hashlib.sha256(read).hexdigest()


def module_changed_since_read() -> str | None:
    """The first of the project's modules whose file no longer holds what it was run from, or
    is not the file it was as the stage started (it may have been read so)."""
    for file, read in list((_sources_read or {}).items()):
        if _file_sha256(file) != hashlib.sha256(read).hexdigest():
            return _shown(file)
    for file, was in _sources_at_start.items():
        try:
            now = os.stat(file)
        except OSError:
            return _shown(file)
        if (now.st_ino, now.st_size, now.st_mtime_ns) != was:
            return _shown(file)
    return None


def _shown(path: str) -> str:
    return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else path


def _deps_at_start(inputs: Sequence[str | Path]) -> dict[str, object]:
    """What tells an edit of each file a stage depends on: the SHA-256 of each of the project's
    modules loaded so far (as DVC hashes them: a file saved unchanged is no edit), and
    _files_as_they_are of its inputs, both as the stage started."""
    modules = {file: _module_as_run(file, digest) for file, digest in loaded_sources().values()}
    kept_for, kept = _inputs_at_start
    return modules | (kept if kept_for == tuple(inputs) else _files_as_they_are(inputs))


def _check_deps_unchanged(inputs: Sequence[str | Path], started_with: dict[str, object]) -> None:
    """A module first loaded while the stage ran is held to the source it was run from."""
    modules = {file: digest for file, digest in loaded_sources().values()}
    was = {file: _module_as_run(file, digest) for file, digest in modules.items()} | started_with
    now = modules | _files_as_they_are(inputs)
    for path in sorted(was.keys() | now.keys()):
        if now.get(path) != was.get(path):
            stage = Path(sys.argv[0]).stem
            raise PipelineError(
                f"{_shown(path)} changed while {stage} ran; DVC would record what it holds now beside outputs made "
                f"from what it held before: run {stage} again"
            )


def _run(main: Callable[[], None], reword: Callable[[str], str], outputs: Sequence[str | Path]) -> None:
    try:
        main()
        if stop_that_came() is not None:  # a library's bare `except:` kept it, and the stage ran on
            raise stop_that_came()
    except Stopped as stopped:
        say(stopped_line(stopped, Path(sys.argv[0]).stem, landed_among(outputs)))
        leave(128 + stopped.args[0])
    except PipelineError as error:
        say(f"error: {printable(reword(str(error)))}")
        leave(2)
    except (MemoryError, ImportError, OSError, RuntimeError) as error:
        if stop_that_came() is not None:  # stages/__init__.py's hook says it in one line
            raise stop_that_came() from None
        # Out of memory in main; stages/__init__.py's hook covers the imports before it.
        message = out_of_memory_message(error, Path(sys.argv[0]).stem)
        # a file the stage cannot read or write, where it does not say so itself
        if message is None and isinstance(error, OSError):
            where = f"{error.filename}: " if error.filename else ""
            problem = (
                f"{where}{error.strerror or one_line(error)}; check that it exists and that you may read and write it"
            )
            message = f"error: {printable(out_of_open_files(error, error.filename or 'a file') or problem)}"
        if message is None:
            raise
        say(message)
        leave(2)
