"""Errors a user can fix. Stages print them as one line and exit non-zero."""

import atexit
import errno
import os
import re
import reprlib
import resource
import sys
from pathlib import Path


class PipelineError(Exception):
    """Base class: the message names the problem and how to fix it."""


class ConfigError(PipelineError):
    """params.yaml has an unknown key, a wrong type or an impossible value."""


class DataError(PipelineError):
    """A data source or data artifact is missing, corrupt or laid out wrongly."""


class TrainingError(PipelineError):
    """Training cannot go on, e.g. the loss became non-finite."""


# The tail of a failed stage's line that wrote its outputs to show why: DVC leaves outputs it has
# not cached in place, and a plain `dvc checkout` refused to replace them.


class OutputError(PipelineError):
    """An output cannot be written whole: the disk is full, or a value has no form in the file's format."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, cut to `limit` characters, to quote in a one-line error."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def out_of_memory_message(error: BaseException, stage: str) -> str | None:
    """The one-line error for a stage that ran out of memory or address space (ulimit -v),
    or None for any other error, which must keep its traceback. Such a failure surfaces as a
    MemoryError or ENOMEM, as a shared library that cannot be mapped while a module (torch)
    is imported (an ImportError, or an OSError where torch loads it with ctypes), as a
    thread that cannot get its stack, or as torch's allocator failing. For such a failure,
    what would run out of memory again at exit is called off."""
    if not is_out_of_memory(error):
        return None
    call_off_torchs_exit_report()
    threads_limit = user_threads_limit()
    if threads_limit is not None and "can't start new thread" in str(error):
        return (
            f"error: {stage} could not start a thread: `ulimit -u` lets this user run {threads_limit} processes and "
            f"threads in all; raise it (or stop some of the user's programs), then run it again"
        )
    return (
        f"error: {stage} ran out of memory ({one_line(error)}); raise the memory limit "
        f"({', '.join(memory_limits_set()) or 'ulimit -v'}) or stop programs that hold memory, then run it again"
    )


def memory_limits_set() -> list[str]:
    """The `ulimit` options that bound the stage's memory: its address space (-v), or its data
    (-d), which an out-of-memory line named as -v when only -d was set."""
    return [
        option
        for option, limit in (("ulimit -v", resource.RLIMIT_AS), ("ulimit -d", resource.RLIMIT_DATA))
        if resource.getrlimit(limit)[0] != resource.RLIM_INFINITY
    ]


_CAN_IGNORE_THREADS_LIMIT = (21, 24)  # CAP_SYS_ADMIN, CAP_SYS_RESOURCE


def user_threads_limit() -> int | None:
    """`ulimit -u`, the processes and threads the user may run in all, where it binds: Linux
    does not hold root (the real user) or a process with either capability to it."""
    limit = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    if limit == resource.RLIM_INFINITY or os.getuid() == 0:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            capabilities = next(int(line.split()[1], 16) for line in status if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        capabilities = 0
    return None if any(capabilities >> bit & 1 for bit in _CAN_IGNORE_THREADS_LIMIT) else limit


READ_ACCESS_FIX = "give the user who runs the stage read access to it (`chmod -R u+rX`, or ask its owner)"


def first_folder_not_searchable(top: Path, path: Path) -> Path | None:
    """The first folder from top down to path's own folder whose files cannot be reached."""
    ancestors = [folder for folder in reversed(path.parents) if folder == top or top in folder.parents]
    for folder in [*ancestors, path]:
        try:
            os.stat(os.path.join(folder, "."))
        except NotADirectoryError:
            return None
        except OSError:
            return folder
    return None


def unreadable(path, error: OSError, fix: str) -> DataError:
    """The one-line error for a file that could not be opened or read. Where the user may not
    read it, so is every fix that reads it ("extract it yourself", for an archive of mode 000)."""
    if error.errno in (errno.EACCES, errno.EPERM):
        # The folder on the way that cannot be searched (`chmod -R 644`), not the file in it, on
        # which `chmod -R u+rX` failed alike
        path = first_folder_not_searchable(Path("/"), Path(os.path.abspath(path))) or path
        fix = READ_ACCESS_FIX
    return DataError(out_of_open_files(error, path) or f"{path}: cannot read it ({error.strerror}); {fix}")


def out_of_open_files(error: OSError, where) -> str | None:
    """Out of open files (the process's `ulimit -n`, or the system's), it is the limit, not the
    file, that needs a fix: `ulimit -n 7` had download advise replacing a valid image, figures
    checking that a font of matplotlib's exists."""
    if error.errno not in (errno.EMFILE, errno.ENFILE):
        return None
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return (
        f"ran out of open files at {where} (`ulimit -n` allows {limit}); raise that limit (1024 is usual) "
        f"or close programs that hold many files, then re-run"
    )


def call_off_torchs_exit_report() -> None:
    """torch reports its compile times at exit, importing tabulate (and html) to do so, and
    logs them where no stage shows them. Out of memory, that import was a second traceback
    after the one line; with a tabulate.py in the working folder, a refusal after the outputs."""
    reporter = getattr(sys.modules.get("torch._dynamo.utils"), "dump_compile_times", None)
    if reporter is not None:
        atexit.unregister(reporter)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether the error is running out of memory or address space, in any of the ways above."""
    text = str(error)
    return (
        isinstance(error, MemoryError)
        or (isinstance(error, OSError) and error.errno == errno.ENOMEM)
        or (isinstance(error, (ImportError, OSError)) and "failed to map segment" in text)
        or (isinstance(error, RuntimeError) and "can't start new thread" in text)
        # Python's threading, as a pool waits for a thread it started: "can't allocate lock"
        or (isinstance(error, RuntimeError) and "can't allocate lock" in text)
        # torch's CPU allocator: "DefaultCPUAllocator: can't allocate memory: you tried to allocate ..."
        or (isinstance(error, RuntimeError) and "can't allocate memory" in text)
    )


# Messages show a bad value cut short, so a huge list or string still makes one short line.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 2, 60, 60


def short_repr(value: object) -> str:
    """A value's repr, cut short, to quote in a one-line error."""
    return _SHORT_REPR.repr(value)


# Control characters (newlines, terminal escapes) and Unicode line separators, which a file or
# folder name may hold: printed raw they would split the one-line error or restyle the terminal.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """Text with every control character written as its escape (a newline as \\n), to print as one line."""
    return _UNPRINTABLE.sub(lambda match: repr(match.group())[1:-1], text)
