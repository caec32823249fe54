"""Write outputs atomically: to a temporary sibling, then rename over the target.

A stage killed half-way leaves either the previous file or none, never a torn one, so DVC
never caches a half-written artifact. Inside `replaced_together()` a stage's outputs are
written first and renamed into place together at its end, with stop signals held back, so
a failure or a signal leaves the previous outputs as they were, not a mix of old and new.
What a killed write leaves is its scratch folder, `.NAME.partial-PID-XXXX` beside the
target: git-ignored, and removed by the next stage run (`remove_stale_scratch`), which first
puts back a previous output the write had moved aside there.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import json
import logging
import os
import pwd
import re
import resource
import shlex
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cifar.errors import OutputError, one_line, out_of_open_files

log = logging.getLogger(__name__)

SCRATCH_MARK = ".partial-"
_SCRATCH_NAME = re.compile(rf"\.(?P<name>.+){re.escape(SCRATCH_MARK)}(?P<pid>[0-9]+)-[a-z0-9_]{{8}}")
# The signals that ask a stage to stop: SIGTERM (kill, a job scheduler), SIGHUP (a closed
# terminal), SIGXCPU (a soft CPU-time limit, `ulimit -t`), SIGQUIT (Ctrl-\), SIGABRT (`timeout
# -s ABRT`, a watchdog), and the others whose default is to end a process without a word
# (SIGUSR1, SIGALRM, the real-time signals, ...). Renames of outputs hold them back, with
# Ctrl-C's SIGINT; cifar.cli turns them into one line. An abort() from C code still ends the
# process: abort() raises SIGABRT again once the handler returns. Faults (SIGSEGV, SIGBUS,
# SIGFPE, SIGILL) are left to end it. (SIGPIPE and SIGXFSZ Python ignores, and turns into
# errors of the write.)
STOP_SIGNALS = (
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGXCPU,
    signal.SIGQUIT,
    signal.SIGABRT,
    signal.SIGSYS,
    signal.SIGTRAP,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGPOLL,
    signal.SIGPWR,
    signal.SIGSTKFLT,
    *range(signal.SIGRTMIN, signal.SIGRTMAX + 1),
)


def signal_name(number: int) -> str:
    """SIGTERM, or SIGRTMIN+3 for a real-time signal, which has no name of its own."""
    if signal.SIGRTMIN < number < signal.SIGRTMAX:
        return f"SIGRTMIN+{number - signal.SIGRTMIN}"
    return signal.Signals(number).name


# How torch.save's C++ writer reports a full disk, without an errno: "[enforce fail at
# inline_container.cc:672] . unexpected pos 704 vs 598", or for a small file
# "basic_ios::clear: iostream error".
TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "iostream error")
# A write that fills a disk takes its last blocks: what is left after it is less than this.
_ROOM_LEFT_BY_A_FULL_DISK = 1 << 20


# In a scratch folder, the mark of a write (or of a replaced_together(), in its first scratch
# folder, removed last) whose outputs are all in place: the previous ones in its scratch folders
# are not put back.
_FINISHED = ".finished"
# In a scratch folder, beside NAME.previous, the device, inode and modification time of the new
# output renamed in as NAME: the sweep takes out only that one, not what a checkout put there
# since (which may have the inode of a file deleted before it, but not its time to the ns).
_RENAMED_IN = ".renamed-in"
# The scratch folders this process writes in, each locked (flock) while it does: the lock goes
# with the process however it ends, where its PID may still be alive (a zombie not yet reaped)
# or another process's (PID 1 of a container, seen from the next).
_claims: dict[Path, int] = {}
# The writes inside replaced_together() waiting for its end: (temporary, target, scratch).
_held: list[tuple[Path, Path, Path]] | None = None
# (outputs, check): a write of any of these outputs runs check first, which raises to keep the previous ones.
_landing_checks: list[tuple[frozenset[str], Callable[[], None]]] = []


@contextmanager
def checked_as_outputs_land(outputs: Iterable[str | Path], check: Callable[[], None]) -> Iterator[None]:
    """Inside, check runs as any of `outputs` is put in place (a stage's own outputs, not its
    checkpoint); an error it raises puts every previous output back where it was."""
    entry = (frozenset(os.path.abspath(output) for output in outputs), check)
    _landing_checks.append(entry)
    try:
        yield
    finally:
        _landing_checks.remove(entry)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside target; on success rename it to target, at once or,
    inside replaced_together(), at its end.

    Works for files and folders: whatever the caller creates at the yielded path replaces
    target in one rename.
    """
    target = Path(target)
    with _write_errors_as_output_error(target):
        refuse_linked_outputs([target])
        target.parent.mkdir(parents=True, exist_ok=True)
        if _immutable_or_append_only(target.parent) or _immutable_or_append_only(target):
            # Before the scratch, which an append-only folder lets be made and never removed.
            raise OSError(errno.EPERM, os.strerror(errno.EPERM), str(target))
        scratch = _claimed_scratch(target.parent, target.name)
        temporary = scratch / target.name
        held = False
        try:
            yield temporary
            # A write into another write's scratch (explain's galleries in their folder) is
            # part of that write: it goes in at once, and the folder is the one held back.
            if _held is None or any(SCRATCH_MARK in part for part in target.parent.parts):
                _put_in_place([(temporary, target, scratch)])
            else:
                _held.append((temporary, target, scratch))
                held = True
        finally:
            if not held:
                remove_scratch(scratch)


def refuse_linked_outputs(targets: Iterable[str | Path]) -> None:
    """Refuse outputs that are symbolic links, all named at once: stages replace their outputs
    whole. Checked as a stage starts too: under DVC's symlink cache, train was refused at its
    first write, after all its epochs, and named one of its seven links."""
    linked = [Path(target) for target in targets if Path(target).is_symlink()]
    if not linked:
        return
    first = linked[0]
    if len(linked) == 1:
        what, fix = f"{first} is a symbolic link (to {os.readlink(first)})", "remove the link"
    else:
        names = ", ".join(map(str, linked))
        what, fix = f"{names} are symbolic links ({first} to {os.readlink(first)})", "remove the links"
    raise OutputError(
        f"{what}, and stages replace their outputs whole; {fix} and re-run (`dvc unprotect` turns links to "
        f"DVC's cache into copies; DVC's cache keeps outputs on another disk: `dvc cache dir`)"
    )


@contextmanager
def replaced_together() -> Iterator[None]:
    """Inside, each output written through atomic_path waits beside its target; at the end
    all are put in place together (_put_in_place). On an error inside, none is: the previous
    outputs stay."""
    global _held
    if _held is not None:
        raise RuntimeError("replaced_together() inside replaced_together()")
    _held = []
    try:
        yield
        _put_in_place(_held)
    finally:
        for _, _, scratch in reversed(_held):  # the one marked finished last
            remove_scratch(scratch)
        _held = None


def _put_in_place(writes: list[tuple[Path, Path, Path]]) -> None:
    """Rename each write's temporary onto its target, one after another with stop signals held
    back, then mark the first's scratch folder finished. On an error while renaming (a target
    that is a busy mount point), or a stop signal, those renamed go back: the stop then acts
    as it would have, and the stage's line that nothing was written is true (a SIGTERM among
    evaluate's renames ended it in that line, its new outputs all in place)."""
    with stop_signals_held() as arrived:
        replaced = []
        try:
            for temporary, target, scratch in writes:
                with _write_errors_as_output_error(target):
                    replaced.append((target, scratch, _replace(temporary, target, scratch)))
            # After the renames, which the previous outputs come back from: an edit during them is seen too.
            landed = {os.path.abspath(target) for _, target, _ in writes}
            for outputs, check in list(_landing_checks):
                if landed & outputs:
                    check()
            if writes:
                with _write_errors_as_output_error(writes[0][1]):
                    (writes[0][2] / _FINISHED).touch()
            if arrived:
                raise OutputError(
                    f"stopped by {signal_name(arrived[0])} while putting the outputs in place; the previous ones are "
                    f"back: run it again"
                )
            _landed.update(os.path.abspath(target) for _, target, _ in writes)
        except BaseException:
            if writes:  # first: a kill while they go back leaves the start-up sweep to finish it
                (writes[0][2] / _FINISHED).unlink(missing_ok=True)
            for target, scratch, previous in reversed(replaced):
                os.replace(target, scratch / f"{target.name}.new")
                if previous is not None:
                    os.replace(previous, target)
            raise


# Where writes have been put in place in this process, for the stop line (landed_among).
_landed: set[str] = set()


def landed_among(outputs: Iterable[str | Path]) -> bool:
    """Whether a write has been put in place at one of `outputs` or inside one (a folder)."""
    folders = [Path(os.path.abspath(output)) for output in outputs]
    return any(Path(target).is_relative_to(folder) for target in _landed for folder in folders)


def _replace(temporary: Path, target: Path, scratch: Path) -> Path | None:
    """Rename temporary onto target; return where the previous target went, if there was one."""
    if temporary.is_dir() and target.exists() and not target.is_dir():
        raise OutputError(f"{target} is a file where a folder is written; remove it and re-run")
    if not temporary.is_dir() and target.is_dir():  # a folder of the user's, deleted without a word
        raise OutputError(f"{target} is a folder where a file is written; move it elsewhere and re-run")
    renamed_in = temporary.lstat()
    (scratch / f"{target.name}{_RENAMED_IN}").write_text(
        " ".join(map(str, _identity(renamed_in))) + "\n", encoding="ascii"
    )
    previous = None
    if target.exists():
        # The previous output goes aside into the scratch folder first, removed with it: a
        # crash in between leaves it whole there (a folder not half-deleted in place), and
        # replaced_together can put it back.
        previous = scratch / f"{target.name}.previous"
        os.replace(target, previous)
    os.replace(temporary, target)
    return previous


@contextmanager
def stop_signals_held() -> Iterator[list[int]]:
    """Ctrl-C and the stop signals arriving inside are noted in the list yielded, and handled
    as they would have been once the block is done. (A signal mask would not do: a signal
    for the process goes to any thread that does not block it, torch's among them.)"""
    arrived: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield arrived  # only the main thread handles signals, or may set their handlers
        return
    # A signal the stage was started ignoring (nohup's SIGHUP) stays ignored.
    handlers = {
        sig: signal.signal(sig, lambda number, frame: arrived.append(number))
        for sig in (signal.SIGINT, *STOP_SIGNALS)
        if signal.getsignal(sig) != signal.SIG_IGN
    }
    try:
        yield arrived
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for number in arrived[:1]:
            os.kill(os.getpid(), number)  # now to its own handler


@contextmanager
def _write_errors_as_output_error(target: Path) -> Iterator[None]:
    """A failed write as one line: a full disk, a file-size limit, or a folder that is read-only or not a folder."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(target) from None
        if error.errno == errno.EFBIG:
            raise _too_large(target) from None
        # mkdir's own word for a dangling link among the folders is "File exists".
        dangling = next(
            (folder for folder in reversed(target.parents) if folder.is_symlink() and not folder.exists()), None
        )
        if dangling:
            raise OutputError(
                f"cannot write {target}: {dangling} is a symbolic link to {os.readlink(dangling)}, which does not "
                f"exist; create that folder or remove the link, and re-run"
            ) from None
        if error.errno == errno.EXDEV:  # an overlay that cannot rename a folder of its lower layer
            raise OutputError(
                f"cannot replace {target} ({error.strerror}): this file system cannot rename it in place (an overlay "
                f"without redirect_dir, as in a container's image); remove it (`rm -r {shlex.quote(str(target))}`) "
                f"and re-run"
            ) from None
        if error.errno == errno.EBUSY:  # renaming over a mount point: `data` itself was writable
            raise OutputError(
                f"cannot replace {target} ({error.strerror}): a file system is mounted there; unmount it "
                f"(`umount {shlex.quote(str(target))}`) and re-run"
            ) from None
        marked = next((path for path in (target, _existing(target.parent)) if _immutable_or_append_only(path)), None)
        if error.errno == errno.EPERM and marked:  # `data` was said to need to be writable, which it was
            raise OutputError(
                f"cannot write {target} ({error.strerror}): {marked} is marked immutable or append-only (`lsattr -d "
                f"{shlex.quote(str(marked))}` shows it); clear that with `chattr -i -a {shlex.quote(str(marked))}` and "
                f"re-run"
            ) from None
        raise OutputError(
            out_of_open_files(error, target)
            or f"cannot write {target} ({error.strerror or one_line(error)}); {_make_writable(target)}, and re-run"
        ) from None
    except RuntimeError as error:
        if any(failure in str(error) for failure in TORCH_WRITE_FAILURES):
            if _file_size_limited(target.parent):
                raise _too_large(target) from None
            raise _disk_full(target, f" (torch: {one_line(error)})") from None
        raise


def _disk_full(target: Path, detail: str = "") -> OutputError:
    """A file system out of space, or out of inodes, which `df -h` shows with room left: "free
    space" alone named no cause there (by the time this is said, the failed write's scratch is
    gone, and with it the last inode it took)."""
    return OutputError(
        f"disk full while writing {target}{detail}: no space or no inodes left there (`df -h` and `df -i` show "
        f"which); free some, and re-run"
    )


def _make_writable(target: Path) -> str:
    """The folders to make writable: the one replaced, where it is there and read-only (`data` was
    named, which was writable, for a `chmod 555` data/cifar10), and the one it is written in,
    where that is read-only too (naming one, then the other, took two runs); else the latter."""
    above = _existing(target.parent)
    if os.access(above, os.W_OK) and _sticky_and_not_ours(above, target):  # `chmod u+w data` failed: not its owner
        owner = _user(target.lstat().st_uid)
        return (
            f"{above} is sticky (only an entry's owner may replace it there) and {target} belongs to {owner}: remove "
            f"it as {owner} or root"
        )
    folders = [folder for folder in (target, above) if folder.is_dir() and not os.access(folder, os.W_OK)]
    folders = folders or [above]
    return f"make {' and '.join(map(str, folders))} {'folders' if len(folders) > 1 else 'a folder'} you may write to"


def _sticky_and_not_ours(folder: Path, entry: Path) -> bool:
    """Whether `folder` has the sticky bit (mode 1777, as /tmp) and neither it nor `entry` in it is this user's."""
    try:
        folder_status, entry_status = folder.stat(), entry.lstat()
    except OSError:
        return False
    mine = os.geteuid()
    return bool(folder_status.st_mode & stat.S_ISVTX) and mine not in (folder_status.st_uid, entry_status.st_uid)


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"user ID {uid}"


def _existing(folder: Path) -> Path:
    """The folder, or the nearest one above it that exists: `data/sub`, not made yet, was named
    as the folder to make writable, where `data` was read-only."""
    return next((each for each in (folder, *folder.parents) if os.path.lexists(each)), folder)


_FS_IOC_GETFLAGS = 0x80086601  # Linux's ioctl for the flags chattr sets
_IMMUTABLE_OR_APPEND_ONLY = 0x10 | 0x20  # FS_IMMUTABLE_FL, FS_APPEND_FL


def _immutable_or_append_only(path: Path) -> bool:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        flags = fcntl.ioctl(descriptor, _FS_IOC_GETFLAGS, b"\0" * 8)
    except OSError:  # a file system without such flags
        return False
    finally:
        os.close(descriptor)
    return bool(int.from_bytes(flags[:4], sys.byteorder) & _IMMUTABLE_OR_APPEND_ONLY)


def _first_marked(folder: Path) -> Path | None:
    """The first file or folder in `folder` (itself included) marked immutable or append-only,
    of the first 10,000 looked at."""
    places = (Path(place) / name for place, folders, files in os.walk(folder) for name in (".", *folders, *files))
    return next((path for path in itertools.islice(places, 10_000) if _immutable_or_append_only(path)), None)


def _too_large(target: Path) -> OutputError:
    return OutputError(
        f"cannot write {target}: larger than the largest file this process may write (`ulimit -f`, or the "
        f"file system's own limit); raise that limit and re-run"
    )


def _file_size_limited(folder: Path) -> bool:
    """Whether a write that failed without an errno (torch's writer) met a file-size limit
    (`ulimit -f`) rather than a full disk: one is set, and the disk still has room. (Room,
    not room for the limit: the failed file, still open in the writer, holds its blocks.)"""
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY:
        return False
    try:
        disk = os.statvfs(folder)
    except OSError:
        return False
    return disk.f_bavail * disk.f_frsize >= _ROOM_LEFT_BY_A_FULL_DISK


def _scratch_prefix(name: str) -> str:
    return f".{name}{SCRATCH_MARK}{os.getpid()}-"


@contextmanager
def scratch_folder(parent: Path, purpose: str) -> Iterator[str]:
    """A temporary folder in parent, named and locked like atomic_path's scratch, so that a
    killed process's leftover is swept by remove_stale_scratch too; removed after the block."""
    with _write_errors_as_output_error(parent / f"{_scratch_prefix(purpose)}*"):
        parent.mkdir(parents=True, exist_ok=True)
        scratch = _claimed_scratch(parent, purpose)
    try:
        yield str(scratch)
    finally:
        remove_scratch(scratch)


# What _lock_folder returns on a file system without locks: sweeps go by the PID in the name there.
_NO_LOCKS = -1


def _lock_folder(folder: Path) -> int | None:
    """An open descriptor of folder that holds its exclusive lock, None where another process
    holds it, or _NO_LOCKS. Raises OSError where it cannot be opened (gone, or not a folder)."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    except OSError:
        os.close(descriptor)
        return _NO_LOCKS
    return descriptor


def _claimed_scratch(parent: Path, name: str) -> Path:
    """A new scratch folder for `name` in parent, locked by this process until remove_scratch."""
    while True:
        scratch = Path(tempfile.mkdtemp(prefix=_scratch_prefix(name), dir=parent))
        try:
            lock = _lock_folder(scratch)
        except FileNotFoundError:  # a sweep took it, unlocked, for a dead process's: make another
            continue
        if lock is None:  # a sweep holds it to remove it
            continue
        if lock != _NO_LOCKS:
            _claims[scratch] = lock
        return scratch


def _lock_if_abandoned(scratch: Path, pid: int) -> tuple[bool, int | None]:
    """Whether no live process writes in this scratch folder, and if so the lock that keeps a
    new writer out of it while it is swept (None where the file system has no locks)."""
    try:
        lock = _lock_folder(scratch)
    except OSError:  # gone since it was listed, or not a folder
        return False, None
    if lock == _NO_LOCKS:
        return not process_alive(pid), None
    return lock is not None, lock


def remove_stale_scratch(folders: Iterable[str | Path]) -> list[Path]:
    """Delete the scratch folders in these folders whose writing process is gone, first putting
    back the previous outputs they hold unless its writes had finished; return them.

    A scratch folder of a live process is a write in progress (another stage run in the
    same workspace), so it stays.
    """
    dead, locks = [], []
    try:
        for folder in folders:
            for scratch in sorted(Path(folder).glob(f".*{SCRATCH_MARK}*")):
                # Only a name as tempfile makes it (eight random characters after the PID): a user's
                # `.images.partial-2024-11-30` was deleted, 2024 taken for a process that was gone.
                named = _SCRATCH_NAME.fullmatch(scratch.name)
                if not named or scratch.is_symlink() or scratch in _claims:
                    continue
                abandoned, lock = _lock_if_abandoned(scratch, int(named["pid"]))
                locks += [lock] if lock is not None else []
                if abandoned:
                    dead.append(((scratch / _FINISHED).exists(), int(named["pid"]), named["name"], scratch))
        finished = {pid for marked, pid, _, _ in dead if marked}
        removed = []
        # The finished mark goes last, should this sweep be cut short too.
        for _, pid, name, scratch in sorted(dead, key=lambda entry: entry[0]):
            if (pid in finished or _undo_unfinished_replace(scratch, name)) and remove_scratch(scratch):
                removed.append(scratch)
        return removed
    finally:
        for lock in locks:
            os.close(lock)


def _undo_unfinished_replace(scratch: Path, name: str) -> bool:
    """Make a dead writer's output the previous one again, unless its writes had finished;
    return whether its scratch folder may go. A writer killed while renaming its outputs into
    place (SIGKILL, a power cut: what no signal handler holds back) left some new outputs in
    place, their previous ones in its scratch folders: a download killed between its two
    renames left no `data/cifar10` at all, and a new `metrics/evaluate.json` stayed beside the
    previous tables. Undone, a killed stage's outputs are all the previous ones (or none,
    where there were none), as after a failure, and as DVC recorded them. An output that a
    checkout has replaced since is left as it is."""
    previous, target = scratch / f"{name}.previous", scratch.parent / name
    renamed_in = _read_record(scratch / f"{name}{_RENAMED_IN}")
    try:
        there = os.lstat(target)
    except FileNotFoundError:
        there = None
    except OSError as error:
        return _cannot_undo(target, scratch, error)
    if there is not None and _identity(there) != renamed_in:
        if os.path.lexists(previous):
            log.info("left %s as it is: it changed after an interrupted write had moved the previous one aside", target)
        return True
    try:
        # Both renames or neither: a stop between them left no output at all.
        with stop_signals_held():
            if there is not None:
                os.replace(target, scratch / f"{name}.new")
            if os.path.lexists(previous):
                os.replace(previous, target)
    except OSError as error:
        return _cannot_undo(target, scratch, error)
    if os.path.lexists(target):
        log.info("put back %s, the previous output, which an interrupted write had moved aside", target)
    elif there is not None:
        log.info("took out %s, which an interrupted write had put in where there was none", target)
    return True


def _read_record(path: Path) -> tuple[int, ...] | None:
    """The numbers of a `.renamed-in` record, None where there is none (killed before its
    renames, or as it recorded them: nothing moved). Only a small regular file is read: a named
    pipe there blocked every stage's start, a link to /dev/zero filled its memory."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        text = stream.read(256)
    try:
        return tuple(int(number) for number in text.split())
    except ValueError:
        return None


def _identity(status: os.stat_result) -> tuple[int, int, int]:
    return status.st_dev, status.st_ino, status.st_mtime_ns


def _cannot_undo(target: Path, scratch: Path, error: OSError) -> bool:
    log.warning(
        "WARNING: could not put back %s, the previous output an interrupted write moved aside into %s (%s); "
        "move it back by hand",
        target,
        scratch,
        one_line(error),
    )
    return False


def remove_scratch(scratch: Path) -> bool:
    """Delete a scratch folder, saying so when it will not go: one holding the previous
    Grad-CAM folder with an immutable file in it stayed without a word, and was then logged
    as removed on every run. The finished mark goes last: rmtree deletes in the order the
    folder lists (newest first on tmpfs), and a kill after the mark went left the previous
    outputs there unmarked, for the next sweep to put back over a finished run's."""
    try:
        for entry in scratch.iterdir():
            if entry.name == _FINISHED:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        shutil.rmtree(scratch)
    except FileNotFoundError:
        pass
    except (OSError, RecursionError) as error:  # RecursionError: a tree deeper than rmtree recurses
        # `rm -r` failed alike on an immutable file in it (the previous outputs, `chattr +i`)
        marked = _first_marked(scratch) if isinstance(error, PermissionError) else None
        how = f"`rm -r {shlex.quote(str(scratch))}`"
        if marked:
            how = f"`chattr -i -a {shlex.quote(str(marked))}`, then {how}: {marked} is marked immutable or append-only"
        log.warning(
            "WARNING: could not remove %s, a stage's scratch folder (%s); remove it: %s", scratch, one_line(error), how
        )
    finally:
        claim = _claims.pop(scratch, None)
        if claim is not None:
            os.close(claim)
    return not scratch.exists()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: a number no PID reaches
        return False
    except PermissionError:  # alive, but another user's
        return True
    # A zombie takes signal 0 too: ended, but not yet reaped by its parent (a notebook's Popen).
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != b"Z"


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as temporary:
        temporary.write_bytes(text.encode())


def text_digest(text: str) -> str:
    """The SHA-256 of the bytes write_text writes for `text`."""
    return hashlib.sha256(text.encode()).hexdigest()


def sha256sum_lines(digests: dict[str, str], folder: str | Path) -> str:
    """What `sha256sum` prints, run in `folder`, for these files (path: SHA-256): `sha256sum -c`
    there checks them."""
    return "".join(f"{digest}  {os.path.relpath(path, folder)}\n" for path, digest in digests.items())


def write_json(target: str | Path, data: dict) -> None:
    """Strict JSON: NaN and infinity are not JSON, and a strict reader would reject the whole file."""
    try:
        text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False)
    except ValueError:
        raise OutputError(
            f"{target}: not written, as JSON cannot store the NaN or infinity in {data}; the stage computed "
            f"a broken number: re-run it once its cause (a diverged model, bad data) is fixed"
        ) from None
    write_text(target, text + "\n")


def write_csv(target: str | Path, frame) -> None:
    """Write a pandas DataFrame without its index."""
    with atomic_path(target) as temporary:
        frame.to_csv(temporary, index=False)


def save_figure(target: str | Path, figure) -> None:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(target) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
