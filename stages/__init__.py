"""The pipeline's stages, one module each, run by DVC as `python -m stages.NAME`.

DVC runs whatever `python` comes first on PATH: started from a shell outside .venv, a stage
would end in a traceback about a missing package. Python imports this package before the
stage's module, so a stage started that way ends here in one line that names the
interpreter, the missing module and how to run it, with exit code 2. Likewise Ctrl-C while
a stage still loads its libraries (or anywhere it has no handler of its own) ends in one
line and exit code 130, not a traceback, SIGTERM, SIGHUP and the other stop signals
(cifar.atomic.STOP_SIGNALS) in one line and 128 + its number; so does running out of
memory while loading them (torch's libraries cannot be mapped under a low `ulimit -v`), or
meeting a non-ASCII path that the locale cannot encode, or a damaged paths table in
dvc.yaml, with exit code 2.
"""

if not __package__:  # `python stages/__init__.py`: not a stage, and cifar/ is off sys.path
    raise SystemExit(
        "error: run a stage from the repository root as `python -m stages.NAME`, NAME one of download, lr_find, "
        "train, evaluate, figures, explain"
    )

import _frozen_importlib_external  # Python's own import system, loaded as it starts
import _imp  # built in, as _signal and marshal are
import _signal  # built in: no file can stand in for it, as one could for `signal` or its `enum`
import marshal
import os  # loaded as Python starts, as sys is: no file can stand in for either
import sys

if sys.argv[:1] == ["-m"]:
    _CHECKED_BY_CONTENTS = 0b11  # a cache's flags: its source's hash is in the header, and checked

    def _ran_from_an_older_cache() -> bool:
        """Whether Python ran this package from a cache of another text than its source's: one
        with the source's time and size (`cp -p`, `tar x`, an edit within the second), or any
        cache by its source's hash under `--check-hash-based-pycs never`. Python reads it before
        any line here can check the caches of the project's other modules, below."""
        try:
            with open(__file__, "rb") as source_file, open(__cached__, "rb") as cache_file:
                source, cache = source_file.read(), cache_file.read(16 << 20)
                status = os.fstat(source_file.fileno())
        except (OSError, TypeError):  # no cache (TypeError: __cached__ is None), or not this user's
            return False
        flags, checks = int.from_bytes(cache[4:8], "little"), _imp.check_hash_based_pycs
        source_stamp = b"".join((n & 0xFFFFFFFF).to_bytes(4, "little") for n in (int(status.st_mtime), status.st_size))
        taken_as_it_is = (
            (flags == 0 and cache[8:16] == source_stamp)
            or (flags == 0b01 and checks != "always")
            or (flags == _CHECKED_BY_CONTENTS and checks == "never")
        )
        if cache[:4] != _frozen_importlib_external.MAGIC_NUMBER or not taken_as_it_is:
            return False
        try:
            return marshal.loads(cache[16:]) != compile(source, __file__, "exec", dont_inherit=True)
        except (EOFError, ValueError, TypeError, SyntaxError):  # Python would not have run either
            return False

    if _ran_from_an_older_cache():
        # Before any signal is blocked, which the new process would inherit, or anything is written.
        try:
            os.remove(__cached__)
            os.execv(sys.executable, sys.orig_argv)
        except OSError as error:
            sys.stderr.write(
                f"error: Python ran {__cached__}, a cache of an older text of stages/__init__.py, in place of the "
                f"source, and the stage cannot start over without it ({error.strerror}); remove it and run the stage "
                f"again\n"
            )
            sys.stderr.flush()
            os._exit(2)

# Signals wait until the stage's handlers are in place, below: Ctrl-C as this package loaded
# (its first tenth of a second) ended a stage in a KeyboardInterrupt traceback, SIGHUP without
# a word. The faults a signal reports (SIGSEGV and the like) cannot wait.
if sys.argv[:1] == ["-m"]:
    _faults = (_signal.SIGILL, _signal.SIGTRAP, _signal.SIGABRT, _signal.SIGBUS, _signal.SIGFPE, _signal.SIGSEGV)
    _mask_at_start = _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals() - {*_faults, _signal.SIGSYS})

    def _a_damaged_project_module(kind, error) -> str | None:
        """A module of the project with a syntax error (merge-conflict markers left in it), or one
        that lacks a name another imports from it (emptied to 0 bytes): a traceback each, where a
        deleted module was one line. None for anything else."""
        project = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
        code = tuple(f"{project}{package}{os.sep}" for package in ("cifar", "stages"))
        if issubclass(kind, SyntaxError) and os.path.abspath(error.filename or "/").startswith(code):
            module = os.path.relpath(error.filename, project)
            marker = (
                " (a merge-conflict marker)" if (error.text or "").startswith(("<<<<<<<", "=======", ">>>>>>>")) else ""
            )
            return (
                f"{module} line {error.lineno}: {error.msg}{marker}; fix it, or restore it from git (`git diff "
                f"{module}` shows what changed)"
            )
        # cut short at a line: the names it lost are missed where they are used, by another
        # module (an AttributeError) or by its own code (a NameError)
        attribute_of = getattr(error, "obj", None) if issubclass(kind, AttributeError) else None
        module_file = getattr(attribute_of, "__file__", None) if isinstance(attribute_of, type(sys)) else None
        if issubclass(kind, NameError) and not issubclass(kind, UnboundLocalError) and error.__traceback__:
            innermost = error.__traceback__
            while innermost.tb_next:
                innermost = innermost.tb_next
            module_file = innermost.tb_frame.f_code.co_filename
        if module_file and os.path.abspath(module_file).startswith(code) and getattr(error, "name", None):
            module = os.path.relpath(module_file, project)
            return (
                f"{module} lacks {error.name}, which the stages use (cut short, or edited?); restore it from git "
                f"(`git diff {module}` shows what changed)"
            )
        project_import = issubclass(kind, ImportError) and not issubclass(kind, ModuleNotFoundError)
        if project_import and os.path.abspath(error.path or "/").startswith(code):
            module = os.path.relpath(error.path, project)
            return (
                f"{module} lacks what the stages import from it ({error.msg}); restore it from git (`git diff "
                f"{module}` shows what changed)"
            )
        return None

    class _FolderWithoutInit(ImportError):
        """A folder without __init__.py where a project module goes. Not a ModuleNotFoundError,
        which `from stages import dvcignore` turns into runpy's "cannot import name ... from
        partially initialized module", exit code 1."""

    def _a_missing_project_module_in_one_line(kind, error, trace):
        """Until the handler below is in place: a deleted stages/namesakes.py or cifar/cli.py
        (or a folder in its place), which this package imports first, ended every stage in a
        traceback."""
        damaged = _a_damaged_project_module(kind, error)
        if damaged:
            sys.stderr.write(f"error: {damaged}\n")
            sys.stderr.flush()
            os._exit(2)
        missing = issubclass(kind, (ModuleNotFoundError, _FolderWithoutInit))
        if missing and (error.name or "").partition(".")[0] in ("cifar", "stages"):
            module = error.name.replace(".", "/")
            sys.stderr.write(
                f"error: the stages need the project's module {error.name} ({module}.py or {module}/__init__.py), "
                f"which is missing; restore it from git (`git status` lists it as deleted)\n"
            )
            sys.stderr.flush()
            os._exit(2)
        sys.__excepthook__(kind, error, trace)

    sys.excepthook = _a_missing_project_module_in_one_line
    # Python opens its prompt once the stage ends under -i, or PYTHONINSPECT (which -E ignores),
    # and shows any exit as a traceback: a stage that had written its outputs waited there, as
    # did one refused or stopped as it loaded. Nothing is loaded or written yet, so it ends at
    # once, not through SystemExit.
    if sys.flags.inspect or (os.environ.get("PYTHONINSPECT") and not sys.flags.ignore_environment):
        sys.stderr.write(
            "error: `python -i` (or PYTHONINSPECT) keeps a stage at Python's prompt once it ends, and shows its exit "
            "as a traceback; run it without -i, with PYTHONINSPECT unset\n"
        )
        sys.stderr.flush()
        os._exit(2)
    # Python writes the bytecode it caches without checking the write, so a file-size limit
    # (`ulimit -f`) in any python that compiled one of the project's modules cut the cache short,
    # and Python loads it as it is: every later run ended in "EOFError: marshal data too short".
    # Such caches are removed (this package's own is read before this line): 1.2 ms for the 22
    # that evaluate leaves (2-core CPU). So is what no cache can be, and what would block or
    # fill memory as it is read: a named pipe, a device, a file of more than 16 MiB (the
    # project's largest cache takes 40 KB). So is one that Python takes for its source's by the
    # source's time and size, not its contents: inference.py edited to the same size within
    # the second (or with its time kept, as `cp -p` and `tar x` do) ran as it was before. The
    # stage writes its caches checked by contents, below.
    import stat  # loaded by os as Python starts

    _MOST_CACHE_BYTES = 16 << 20
    # The sources compiled ahead, at most 1 MiB each (the project's largest takes 53 KB): a stray
    # 16.5 MB module no stage imports took every stage 5 GB to compile. One over it that a
    # stage imports is compiled by the import, as Python does.
    _MOST_SOURCE_BYTES = 1 << 20
    _places = [os.path.abspath(f"{os.path.dirname(__path__[0])}/{_package}") for _package in ("stages", "cifar")]
    # A cache prefix (PYTHONPYCACHEPREFIX, -X pycache_prefix) keeps the caches in a copy of the
    # source folders' tree under it, not in their __pycache__ folders.
    if sys.pycache_prefix:
        _places += [os.path.join(sys.pycache_prefix, _place.lstrip(os.sep)) for _place in _places]

    def _files_under(places: list[str], suffix: str):
        """Like cifar.reading.walk, which cannot be imported before its cache is checked: no
        recursion, as Python 3.11's os.walk recurses once per level (a folder 1,100 deep in
        cifar/ ended every stage in RecursionError)."""
        folders = list(places)
        while folders:
            try:
                with os.scandir(folders.pop()) as entries:
                    for entry in entries:
                        # Not followed: a link that loops (ELOOP) ended the folder's listing, and a
                        # stale cache after it was left to run.
                        if entry.is_dir(follow_symlinks=False):
                            folders.append(entry.path)
                        elif entry.name.endswith(suffix):
                            yield entry.path
            except OSError:  # gone, or not this user's, as os.walk passes it over
                pass

    def _cache_bytes(cache: str) -> bytes:
        """A cache's bytes; b"" for what no cache can be (a named pipe, a device, over 16 MiB)."""
        with open(os.open(cache, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
            bytecode = file.read(_MOST_CACHE_BYTES + 1) if stat.S_ISREG(os.fstat(file.fileno()).st_mode) else b""
        return b"" if len(bytecode) > _MOST_CACHE_BYTES else bytecode

    def _is_whole_and_checked_by_contents(cache: str, bytecode: bytes) -> bool:
        """Whether a cache holds the hash of its source as it is now, and all of its code. The
        hash first: marshal allocates what a length field declares before it finds the data
        short (a 21-byte cache declaring a tuple of 2**28 items took download 2 GB)."""
        if int.from_bytes(bytecode[4:8], "little") != _CHECKED_BY_CONTENTS:
            return False
        try:
            # Unblocking, and a regular file only: a named pipe as cifar/pipe.py blocked every stage for good.
            with open(
                os.open(_frozen_importlib_external.source_from_cache(cache), os.O_RDONLY | os.O_NONBLOCK), "rb"
            ) as source_file:
                if not stat.S_ISREG(os.fstat(source_file.fileno()).st_mode):
                    return False
                source = source_file.read(_MOST_CACHE_BYTES + 1)
        except (OSError, ValueError):  # no source beside it, which no import runs it for
            return False
        return bytecode[8:16] == _imp.source_hash(_frozen_importlib_external._RAW_MAGIC_NUMBER, source) and _is_whole(
            bytecode
        )

    def _is_whole(bytecode: bytes) -> bool:
        try:
            marshal.loads(bytecode[16:])  # after the header: magic, flags, the source's hash
        except (EOFError, ValueError, TypeError, MemoryError):
            return False
        return True

    for _cache in _files_under(_places, ".pyc"):
        try:
            if not _is_whole_and_checked_by_contents(_cache, _cache_bytes(_cache)):
                os.remove(_cache)
        except OSError:  # gone meanwhile, not this user's, or in a read-only folder: the loader below passes it over
            pass

    import importlib.machinery  # frozen into the interpreter, as _signal is built in

    # The bytes each of the project's modules runs from, as Python reads them to import it (it
    # reads them to check a cache by contents, too). cifar.cli holds each module to them: one
    # edited after it was read, while torch loaded (seconds), ran as it was but was checked, and
    # recorded by DVC, as it is now; one edited before and changed back ran as neither says.
    _SOURCES_READ: dict[str, bytes] = {}

    class _SourceKeeper(importlib.machinery.SourceFileLoader):
        def source_to_code(self, data, path, *, _optimize=-1):
            try:
                return super().source_to_code(data, path, _optimize=_optimize)
            except SyntaxError as error:
                if error.filename is None:  # NUL bytes (what a crash leaves): Python names no file
                    error.filename, error.lineno = path, data.count(b"\n", 0, max(data.find(b"\0"), 0)) + 1
                raise

        def get_data(self, path):
            if path == self.path:
                data = super().get_data(path)
                _SOURCES_READ.setdefault(path, data)  # the first: inspect may ask for it again
                return data
            # Only a whole cache of the source as it is now is run; for any other Python compiles
            # the source, as for a cache it cannot read. A stale one that the sweep above could
            # not remove (a read-only folder, or one behind a linked __pycache__) ran the module's
            # old text with exit 0, and so did any under `--check-hash-based-pycs never`.
            bytecode = _cache_bytes(path)
            source_hash = _imp.source_hash(_frozen_importlib_external._RAW_MAGIC_NUMBER, self.get_data(self.path))
            checked_by_contents = int.from_bytes(bytecode[4:8], "little") == _CHECKED_BY_CONTENTS
            if bytecode[8:16] != source_hash or not checked_by_contents or not _is_whole(bytecode):
                raise OSError(f"{path} is not a whole cache of {self.path} as it is now")
            return bytecode

    import importlib.util  # loaded by runpy for `python -m`, as importlib.machinery is

    class _TwoModulesOfOneName(ImportError):
        """A module's .py beside a package folder of its name: one line, exit code 2."""

    _PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # Imported before any stage code ran, by a sitecustomize, usercustomize or .pth file on the
    # path (a notebook helper adding an older clone): that clone's cifar ran, exit 0.
    _imported_elsewhere = [
        # a folder named cifar without __init__.py (data) is a namespace package of no file
        getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", None) or []), repr(module))
        for name, module in list(sys.modules.items())
        if name.partition(".")[0] == "cifar"
        and not os.path.abspath(getattr(module, "__file__", None) or "/").startswith(_PROJECT + os.sep)
    ]
    if _imported_elsewhere:
        sys.stderr.write(
            f"error: {_imported_elsewhere[0]} was imported as Python started (by a sitecustomize, usercustomize or "
            f".pth file on its path), in place of this checkout's cifar in {_PROJECT}; remove that import\n"
        )
        raise SystemExit(2)

    class _ProjectModules:
        """Finds the project's modules as Python would, with a loader that keeps their source,
        and from their source where something else would stand in for it."""

        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.partition(".")[0] not in ("cifar", "stages"):
                return None
            # `cifar` from the project's folder alone: without cifar/__init__.py, Python took a
            # whole other clone's cifar from PYTHONPATH over the namespace package left here.
            found = importlib.machinery.PathFinder.find_spec(name, path if path is not None else [_PROJECT])
            if found is not None and found.loader is None and found.submodule_search_locations is not None:
                # A folder without __init__.py, which Python imports as an empty namespace package:
                # one in place of a deleted module (or of a package's __init__.py) ended in an
                # AttributeError traceback, or ran without its code. The project has none.
                raise _FolderWithoutInit(f"{name} is a folder without __init__.py", name=name)
            if found is None or not found.has_location:
                return None
            # Python takes a package folder, then a compiled extension, before a module's .py: a
            # stale `errors.cpython-311-x86_64-linux-gnu.so` (as mypyc or Cython leave one) ran in
            # place of the edited cifar/errors.py, which DVC recorded. Of a package folder and a
            # .py, either may be the stale one.
            folder = os.path.dirname(found.origin)
            if found.submodule_search_locations is not None:
                folder = os.path.dirname(folder)
            source = os.path.join(folder, name.rpartition(".")[2] + ".py")
            if "." in name and source != found.origin and os.path.isfile(source):
                if found.submodule_search_locations is not None:
                    package = os.path.relpath(os.path.dirname(found.origin))
                    raise _TwoModulesOfOneName(
                        f"{os.path.relpath(source)} and the package folder {package} both are module {name}; remove "
                        f"the one that is not the project's (`git status` shows it)"
                    )
                return importlib.util.spec_from_file_location(name, source, loader=_SourceKeeper(name, source))
            init = os.path.join(os.path.dirname(found.origin), "__init__.py")
            if found.submodule_search_locations is not None and found.origin != init and os.path.isfile(init):
                # A package's compiled `__init__` too: its __init__.py is the project's.
                return importlib.util.spec_from_file_location(
                    name, init, loader=_SourceKeeper(name, init), submodule_search_locations=[os.path.dirname(init)]
                )
            if type(found.loader) is not importlib.machinery.SourceFileLoader:
                # The project is all source: a stale compiled module (.so) or bare .pyc of a
                # deleted one ran in its place, exit 0, every label shifted.
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            found.loader = _SourceKeeper(found.loader.name, found.loader.path)
            return found

    sys.meta_path.insert(0, _ProjectModules)

from stages.namesakes import refuse_namesakes, stand_in_on_the_import_path, started_module

# Before any other import, so that each is of the environment's module, not a namesake's.
if sys.argv[:1] == ["-m"]:
    refuse_namesakes()
    import importlib.util
    import py_compile
    import resource

    # Under a file-size limit (`ulimit -f`) Python would cache cut bytecode for what it compiles
    # from here on, the environment's modules too (the project's own are checked above).
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        sys.dont_write_bytecode = True

    def _checked_by_contents(cache: str) -> bool:
        try:
            with open(os.open(cache, os.O_RDONLY | os.O_NONBLOCK), "rb") as header:
                return int.from_bytes(header.read(8)[4:], "little") == _CHECKED_BY_CONTENTS
        except OSError:
            return False

    # A module without a cache checked by contents (those Python wrote as this package loaded)
    # gets one (0.2 s for all 42, 2-core CPU), which Python keeps so, rewriting it as its source
    # changes. A source that no module can be (a named pipe, over 16 MiB) is left to the import.
    # Each source's file as the stage starts: one emptied or half-renamed while torch loaded,
    # then read so, broke the import in a traceback (and may be restored before it is told).
    _SOURCES_AT_START: dict[str, tuple[int, int, int]] = {}
    for _source in _files_under(_places[:2], ".py"):
        try:
            _status = os.stat(_source)
            _SOURCES_AT_START[_source] = (_status.st_ino, _status.st_size, _status.st_mtime_ns)
            _cache = importlib.util.cache_from_source(_source)
            if (
                sys.dont_write_bytecode
                or not stat.S_ISREG(_status.st_mode)
                or _status.st_size > _MOST_SOURCE_BYTES
                or _checked_by_contents(_cache)
            ):
                continue
            py_compile.compile(
                _source, _cache, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH
            )
        except OSError:  # gone meanwhile, or not this user's: as an import of it would find
            pass
        except py_compile.PyCompileError:  # Python says what is wrong with it if the stage imports it
            pass

# isort: split

import atexit
import errno
import glob
import importlib
import importlib.util
import io
import logging
import math
import re
import resource
import shutil
import string
import tempfile
from pathlib import Path

from cifar.atomic import STOP_SIGNALS, landed_among, process_alive, stop_signals_held
from cifar.cli import (
    Stopped,
    ignore_stops_from_now,
    install_stop_handlers,
    keep_state_at_start,
    leave,
    module_changed_since_read,
    say,
    start_up_done,
    stop_that_came,
    stopped_line,
)
from cifar.errors import PipelineError, one_line, out_of_memory_message, printable, user_threads_limit

# The stages dvc.yaml runs, each as `python -m stages.NAME` (tests/test_dvc_yaml.py checks the two agree).
STAGES = ("download", "lr_find", "train", "evaluate", "figures", "explain")


def _command_line_problem() -> str | None:
    """`python -m stages.Evaluate` ended in runpy's "No module named", `python -m stages.paths`
    exited 0 with nothing done, and `python -m stages.train --help` trained a model."""
    started = started_module()
    if started.partition(".")[2] not in STAGES:
        return (
            f"`python -m {printable(started)[:100]}` runs no stage; run one as `python -m stages.NAME`, NAME one of "
            f"{', '.join(STAGES)}, or the whole pipeline with `dvc repro`"
        )
    stage_file = f"stages/{started.partition('.')[2]}.py"
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(project, stage_file)):
        # runpy said "No module named stages.download", or with a folder in its place "is a package".
        return f"the stage's module {stage_file} is missing; restore it from git (`git status` lists it as deleted)"
    package = stage_file.removesuffix(".py")
    if os.path.isfile(os.path.join(project, package, "__init__.py")):
        # runpy's own "Error while finding module specification", exit code 1, where the
        # project's modules get this line
        return (
            f"{stage_file} and the package folder {package} both are module {started}; remove the one that is not "
            f"the project's (`git status` shows it)"
        )
    try:
        with open(os.path.join(project, stage_file), "rb") as module:
            # a call at any depth, or after `if __name__ == "__main__":` on one line: wrapped in a
            # `with` block, or so, it was refused
            runs_the_stage = re.search(rb"(?m)^(?:[^#\n]*[ \t:])?run_stage\(", module.read(1 << 20)) is not None
    except OSError:
        runs_the_stage = True  # Python's own reading of it names what is wrong
    if not runs_the_stage:  # emptied, or cut short: it ran nothing, exit code 0
        return (
            f"{stage_file} does not run the stage (no run_stage call at its end: emptied or cut short?); restore it "
            f"from git (`git diff {stage_file}` shows what changed)"
        )
    if sys.argv[1:]:
        return (
            f"a stage takes no arguments ({printable(' '.join(sys.argv[1:]))[:100]}); its settings are in "
            f"params.yaml: edit them, or run the pipeline with `dvc exp run -S KEY=VALUE`"
        )
    return None


def _working_folder_problem() -> str | None:
    """A stage reads and writes its paths in the working folder, and checks them against the
    repository its code lies in: run from another folder with PYTHONPATH naming the code,
    evaluate wrote plots that folder's .dvcignore had DVC ignore, exit 0."""
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        if os.path.samefile(os.getcwd(), project):
            return None
        here = os.getcwd()
    except OSError as error:  # a working folder removed, or one this user may not search
        return f"the working folder cannot be read ({one_line(error)}); run the stage from {printable(project)}"
    if os.path.isdir("stages") and not os.path.isfile("stages/__init__.py"):
        # Python took another clone's stages from PYTHONPATH over the namespace package left here.
        return (
            f"the stages need stages/__init__.py in {printable(here)}, which is missing, so Python ran those of "
            f"{printable(project)} (on PYTHONPATH); restore it from git (`git status` lists it as deleted)"
        )
    return (
        f"a stage runs in the repository that holds its code, {printable(project)}, not in {printable(here)}; "
        f"run it from there"
    )


def _stage_name() -> str:
    """`figures` for `python -m stages.figures`, also while this package loads, when argv[0]
    is still "-m"."""
    return started_module().rpartition(".")[2] or Path(sys.argv[0]).stem


def _refuse(line: str):
    """A stage's one line and exit code 2, as it loads. A signal from here to the exit (a burst
    of SIGTERM) ended it in a traceback from its exit, or in another exit code."""
    ignore_stops_from_now()
    say(line)
    raise SystemExit(2)


def _setting_a_library_failed_on(error: BaseException, trace) -> tuple[str, str] | None:
    """The library an error came from and the environment variable its message names, by
    name or by its value quoted: a library reads settings of its own as it loads (torch's
    TORCHINDUCTOR_*, sklearn's SKLEARN_WORKING_MEMORY=1GB, pandas' PANDAS_FUTURE, sympy's
    SYMPY_DEBUG=yes) and failed on a value it cannot use in a traceback. None where the error
    came from the project's own code, or names no setting."""
    innermost = trace
    while innermost is not None and innermost.tb_next is not None:
        innermost = innermost.tb_next
    if innermost is None:
        return None
    module = str(innermost.tb_frame.f_globals.get("__name__", ""))
    library = module.partition(".")[0]
    if not library or library in ("cifar", "stages", "__main__") or library in sys.stdlib_module_names:
        return None
    message = str(error)
    named = [
        name
        for name, value in os.environ.items()
        if len(name) > 3 and (name in message or (len(value) > 1 and f"{value!r}" in message))
    ]
    if len(named) > 1:  # `IS_SANDBOX=yes` beside JOBLIB_MULTIPROCESSING=yes: the library's own
        named = [name for name in named if library.upper() in name]
    if not named and type(error).__module__ == "cv2":  # OPENCV_FOR_THREADS_NUM=abc: "cv2.error: stoull"
        library, named = "OpenCV", sorted(name for name in os.environ if name.startswith("OPENCV_"))
    return (library, named[0]) if len(named) == 1 else None


def _one_line_for_a_missing_package_or_ctrl_c(kind, error, trace):
    ignore_stops_from_now()  # the outcome is decided, as in _refuse
    stage = _stage_name()
    if stop_that_came() is not None:  # whatever a library made of it
        error = stop_that_came()
        kind = type(error)
    if issubclass(kind, Stopped):
        say(stopped_line(error, stage))
        leave(128 + error.args[0])
    if kind is globals().get("_TwoModulesOfOneName"):  # defined where a stage runs, as _ProjectModules is
        say(f"error: {printable(str(error))}")
        raise SystemExit(2)
    if issubclass(kind, PipelineError):  # dvc.yaml's paths table, read as stages.paths loads
        say(f"error: {printable(str(error))}")
        raise SystemExit(2)
    out_of_memory = out_of_memory_message(error, stage)
    if out_of_memory:
        say(out_of_memory)
        raise SystemExit(2)
    # torch's libraries with an older libstdc++ that LD_LIBRARY_PATH put first: "version
    # `CXXABI_1.3.8' not found", also for a torch on PYTHONPATH
    compiled_code = issubclass(kind, ImportError) and not issubclass(kind, ModuleNotFoundError) and ".so" in str(error)
    libraries_put_first = compiled_code and any(os.environ.get(name) for name in ("LD_LIBRARY_PATH", "LD_PRELOAD"))
    # before a missing module is taken for a missing environment (pyarrow.compute), and a
    # KeyboardInterrupt that no Ctrl-C raised for Ctrl-C
    stand_in = None if stop_that_came() or libraries_put_first else stand_in_on_the_import_path(error, trace)
    if stand_in:
        say(f"error: {stage} imported {stand_in}")
        raise SystemExit(2)
    if issubclass(kind, KeyboardInterrupt):
        # after its outputs went in place, "no file is left half-written" hid that they had
        loaded_paths = sys.modules.get("stages.paths")
        if loaded_paths is not None and landed_among(loaded_paths.output_paths()):
            say(stopped_line(Stopped(_signal.SIGINT), stage, outputs_in_place=True))
        else:
            say(f"error: interrupted before {stage} finished; no file is left half-written: run it again")
        raise SystemExit(130)
    if compiled_code:
        say(
            f"error: {stage} cannot load a library's compiled code ({printable(one_line(error, 300))}); check "
            f"LD_LIBRARY_PATH and LD_PRELOAD, which may put other versions of the system's libraries first, or "
            f"re-create .venv"
        )
        raise SystemExit(2)
    if issubclass(kind, ModuleNotFoundError) and (error.name or "").partition(".")[0] not in ("cifar", "stages"):
        because = (
            "`python -S` leaves out the environment's packages; run it without -S"
            if sys.flags.no_site
            else "so it is not the project's environment; run `source .venv/bin/activate` first (or run the "
            "pipeline with scripts/run.sh)"
        )
        say(f"error: {sys.executable} has no module {error.name!r}, {because}")
        raise SystemExit(2)
    package = (error.name or "").replace(".", "/") if issubclass(kind, ImportError) else ""
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    in_the_project = package.partition("/")[0] in ("cifar", "stages")
    if (
        in_the_project
        and os.path.isdir(f"{project}/{package}")
        and not os.path.isfile(f"{project}/{package}/__init__.py")
    ):
        # `rm cifar/models/__init__.py` left a namespace package: "cannot import name
        # 'load_trained' from 'cifar.models' (unknown location)" was a traceback.
        if glob.glob(f"{glob.escape(project)}/{glob.escape(package)}/*.py"):
            missing = f"file {package}/__init__.py"
        else:  # an empty folder where a deleted module was: its __init__.py was never the project's
            missing = f"module {error.name} ({package}.py or {package}/__init__.py; {package}/ is a folder of neither)"
        say(
            f"error: {stage} needs the project's {missing}, which is missing; restore it from git (`git status` "
            f"lists it as deleted)"
        )
        raise SystemExit(2)
    if issubclass(kind, ModuleNotFoundError) and in_the_project:
        # A module of the project deleted or moved (`rm cifar/ingest/synthetic.py`) was a traceback.
        module = error.name.replace(".", "/")
        say(
            f"error: {stage} needs the project's module {error.name} ({module}.py or {module}/), which is missing; "
            f"restore it from git (`git status` lists it as deleted)"
        )
        raise SystemExit(2)
    if issubclass(kind, UnicodeEncodeError) and error.reason == "surrogates not allowed":
        # Python's C locale without UTF-8 mode (PYTHONUTF8=0) keeps a non-ASCII path's bytes as
        # surrogates, which torch's import cannot encode: the environment's own path, say.
        say(
            f"error: {stage} met a path that is not text under this locale ({ascii(error.object)[:120]}); "
            f"use a UTF-8 locale (export LC_ALL=C.UTF-8) or leave PYTHONUTF8 unset"
        )
        raise SystemExit(2)
    if issubclass(kind, Warning) and sys.warnoptions:
        # PYTHONWARNINGS=error (with PYTHONWARNDEFAULTENCODING=1, PEP 597's check) made
        # matplotlib's own EncodingWarning a traceback as it wrote its font cache.
        say(
            f"error: {stage} stopped on a warning ({kind.__name__}: {printable(one_line(error, 200))}), which "
            f"{' '.join(sys.warnoptions)[:100]!r} in PYTHONWARNINGS or -W makes an error; let warnings be warnings "
            f"for this run (unset PYTHONWARNINGS)"
        )
        raise SystemExit(2)
    setting = _setting_a_library_failed_on(error, trace)
    if setting:
        library, name = setting
        say(
            f"error: {stage} stopped in {library} ({type(error).__name__}: {printable(one_line(error, 200))}), which "
            f"read {name}={printable(repr(os.environ[name])[:100])} from the environment; fix or unset {name}"
        )
        raise SystemExit(2)
    # a module read half-edited (emptied, a name not yet renamed everywhere) and then restored
    changed = module_changed_since_read()
    if changed:
        say(
            f"error: {changed} changed while {stage} ran, as it was being loaded ({printable(one_line(error, 200))}); "
            f"run {stage} again"
        )
        raise SystemExit(2)
    damaged_module = globals().get("_a_damaged_project_module")  # defined where a stage runs
    damaged = damaged_module and damaged_module(kind, error)
    if damaged:
        say(f"error: {printable(damaged)}")
        raise SystemExit(2)
    sys.__excepthook__(kind, error, trace)


def _temp_folder_fix(error: OSError) -> str:
    """What to change where a folder cannot be made in the system temp folder."""
    file_size_limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    # tempfile's 4-byte probe file, or the file written into the folder
    if file_size_limit != resource.RLIM_INFINITY and (file_size_limit < 4 or error.errno == errno.EFBIG):
        return f"raise `ulimit -f`, which lets it write files of {file_size_limit} bytes at most"
    return "point TMPDIR at a writable folder with room and a short path"


MATPLOTLIB_FOLDER_PREFIX = "matplotlib-config-"
_MATPLOTLIB_FOLDER_NAME = re.compile(rf"{MATPLOTLIB_FOLDER_PREFIX}(?P<pid>[0-9]+)-[a-z0-9_]{{8}}")


def _remove_matplotlib_folders_of_stages_gone() -> None:
    """A stage killed by SIGKILL leaves its matplotlib folder (44 KB) in the temp folder, where
    no exit handler removes it: one more per killed run. Those of this user's stages whose
    process is gone are removed, as a killed write's scratch is (cifar.atomic)."""
    try:
        with os.scandir(tempfile.gettempdir()) as entries:
            for entry in entries:
                named = _MATPLOTLIB_FOLDER_NAME.fullmatch(entry.name)
                if (
                    named
                    and entry.is_dir(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_uid == os.geteuid()
                    and not process_alive(int(named["pid"]))
                ):
                    try:
                        shutil.rmtree(entry.path, ignore_errors=True)
                    except RecursionError:  # nested deeper than Python 3.11's rmtree recurses: not a stage's
                        continue
    except OSError:  # a temp folder that cannot be listed: the folder made next says what is wrong
        return


def _import_matplotlib_with_its_own_settings() -> None:
    """The figures are drawn by matplotlib's defaults (cifar.reporting.plots), but it reads
    the user's state as it loads: a matplotlibrc (./matplotlibrc first, then MATPLOTLIBRC's,
    then its config folder's), the config folder's style sheets and its font cache. Reading
    them blocked on a named pipe, filled memory (/dev/zero), ended in tracebacks (a style
    sheet in Latin-1, a folder named like one), and a cache naming another font's file drew
    every PNG in it. matplotlib loads here from its own folder, whose ./matplotlibrc is its
    defaults, with a config folder of the stage's own: it builds its font cache there in
    about 0.1 s (2-core CPU, 38 system fonts)."""
    found = importlib.util.find_spec("matplotlib")
    if found is None or found.origin is None:  # not in this environment: the hook says how to run the stage
        importlib.import_module("matplotlib")
        return
    os.environ.pop("MATPLOTLIBRC", None)
    _remove_matplotlib_folders_of_stages_gone()
    # As it builds its font cache, matplotlib reads the font folders of HOME and XDG_DATA_HOME
    # and asks fontconfig (FONTCONFIG_FILE): a named pipe in any of them kept it waiting. Its
    # own fonts and the system's folders are what it reads here, with an empty fontconfig file.
    try:
        with stop_signals_held():  # a stop between the two would leave the folder behind
            # absolute: TMPDIR=. gave a relative one, which the chdir below moved into matplotlib's own folder
            config_folder = os.path.abspath(tempfile.mkdtemp(prefix=f"{MATPLOTLIB_FOLDER_PREFIX}{os.getpid()}-"))
            atexit.register(shutil.rmtree, config_folder, ignore_errors=True)
        fontconfig_file = Path(config_folder, "fonts.conf")
        fontconfig_file.write_text("<fontconfig></fontconfig>\n", encoding="ascii")
    except OSError as error:
        _refuse(
            f"error: {_stage_name()} cannot make a folder for matplotlib's font cache in the system temp "
            f"folder ({one_line(error)}); {_temp_folder_fix(error)}"
        )
    os.environ["MPLCONFIGDIR"] = config_folder
    users_settings = {name: os.environ.get(name) for name in ("HOME", "XDG_DATA_HOME", "FONTCONFIG_FILE")}
    os.environ.update(HOME=config_folder, XDG_DATA_HOME=config_folder, FONTCONFIG_FILE=str(fontconfig_file))
    working_folder = os.getcwd()
    os.chdir(Path(found.origin).parent / "mpl-data")
    # The cache lives as long as the stage: one that cannot be saved (a full temp folder, a low
    # `ulimit -f`) costs 0.1 s, not a line of its own beside the stage's.
    font_log = logging.getLogger("matplotlib.font_manager")
    font_log.setLevel(logging.ERROR)
    try:
        importlib.import_module("matplotlib.font_manager")
    finally:
        font_log.setLevel(logging.NOTSET)
        os.chdir(working_folder)
        for name, value in users_settings.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


# Columns or rows, far more than a terminal shows: TQDM_NCOLS=1000000000 kept evaluate
# drawing its first bar for minutes, TQDM_POSITION=300000000 ran it out of memory.
_LARGEST_PROGRESS_BAR = 10_000


def _oversized_progress_bars() -> None:
    """Raises ValueError where a TQDM_* setting draws the bars larger than _LARGEST_PROGRESS_BAR:
    their width, height or line, or a field of TQDM_BAR_FORMAT padded to that width."""
    for name in ("TQDM_NCOLS", "TQDM_NROWS", "TQDM_POSITION"):
        try:
            size = abs(float(os.environ.get(name, "0")))
        except ValueError:  # not a number: tqdm says so as it draws
            continue
        if size > _LARGEST_PROGRESS_BAR:
            raise ValueError(f"{name} is beyond the {_LARGEST_PROGRESS_BAR:,} columns or rows a bar may take")
    try:
        specs = [spec or "" for _, _, spec, _ in string.Formatter().parse(os.environ.get("TQDM_BAR_FORMAT", ""))]
    except ValueError:  # not a format: tqdm says so as it draws
        specs = []
    if any("{" in spec for spec in specs):  # a width taken from the bar's figures, known only as it draws
        raise ValueError("TQDM_BAR_FORMAT takes a field's width from another field; write the width as digits")
    # \d: str.format reads any decimal digits as a width, fullwidth ones too
    if sum(int(width) for spec in specs for width in re.findall(r"\d+", spec)) > _LARGEST_PROGRESS_BAR:
        raise ValueError(f"TQDM_BAR_FORMAT pads its fields beyond the {_LARGEST_PROGRESS_BAR:,} columns a bar may take")


def _draw_the_stages_progress_bars() -> None:
    """train's epoch bar (cifar.training.engine) and torch-lr-finder's, drawn into a buffer."""
    _oversized_progress_bars()
    import tqdm

    terminal, sys.stderr = sys.stderr, io.StringIO()  # tqdm's default file, read at each bar
    try:
        with tqdm.tqdm(total=2, desc="epoch 1/1", unit="step", leave=True) as bar:
            bar.update()
            bar.set_postfix(loss="2.303", acc="0.100", lr="1.00e-02")
            bar.update()
        for _ in tqdm.tqdm(range(2)):
            pass
    finally:
        sys.stderr = terminal


def _import_torch() -> None:
    import torch  # noqa: F401  torch reads its TORCH_LOGS* settings as it loads


def _import_numpy() -> None:
    import numpy  # noqa: F401  numpy reads its NPY_* and NUMPY_* settings as it loads


def _refuse_settings_a_library_fails_on(prefixes: tuple[str, ...], library: str, use_them, advice: str = "") -> None:
    """One line and exit code 2 where `use_them` raises on the library's own settings, the
    variables whose names start with one of `prefixes`."""
    settings = sorted(name for name in os.environ if name.startswith(prefixes))
    if not settings:
        return
    try:
        use_them()
    except Exception as error:  # whatever the library raises on a setting of its own
        _refuse(
            f"error: {library} cannot use its environment ({', '.join(settings)}): {type(error).__name__}: "
            f"{one_line(error)}; fix or unset it{advice}"
        )


# The address space a stage needs at least, and why. The stages that run torch mapped 3.5 to
# 4.4 GiB on a 500-image run, download 0.7 GiB (2-core CPU, 2026-12-01). Under a lower
# `ulimit -v` they failed wherever the limit struck: mostly in one line, as a library could
# not be mapped or memory allocated, but also in C++'s std::bad_alloc abort, a segmentation
# fault, oneDNN's "could not create a primitive" traceback, a hang, or OpenBLAS's own line.
_LEAST_ADDRESS_SPACE = {
    "download": (2**30, "its decoding threads and numpy's libraries map about 0.7 GiB"),
    "torch": (5 * 2**30, "torch's libraries alone map about 3 GiB"),
}
# The data a stage needs at least (`ulimit -d` bounds what it allocates, threads' stacks
# included, not the libraries it maps): on the same runs the torch stages used up to 1.47 GiB
# of it, download 0.16 GiB. Under `ulimit -d 800000` train ended in a SystemError traceback,
# figures under 300000 in a segmentation fault, download under 40000 in OpenBLAS's own line.
_LEAST_DATA = {
    "download": (192 * 2**20, "it used up to 0.16 GiB on a 500-image run"),
    "torch": (2 * 2**30, "the stages that run torch used up to 1.47 GiB on a 500-image run"),
}


# The limits a stage checks up front: each `ulimit` option, its limit, what a stage needs of
# it, and the most it used on those runs.
_MEMORY_LIMITS = (
    ("ulimit -v", resource.RLIMIT_AS, "of address space", _LEAST_ADDRESS_SPACE, {"download": 0.7, "torch": 4.4}),
    ("ulimit -d", resource.RLIMIT_DATA, "of data", _LEAST_DATA, {"download": 0.16, "torch": 1.47}),
)


def _memory_limit_problem() -> str | None:
    stage = _stage_name()
    for option, kind, room, least_needed, _ in _MEMORY_LIMITS:
        least, why = least_needed["download" if stage == "download" else "torch"]
        limit = resource.getrlimit(kind)[0]
        if limit != resource.RLIM_INFINITY and limit < least:
            return (
                f"`{option}` leaves {stage} {limit / 2**30:.2f} GiB {room}, and it needs {least / 2**30:.3g} GiB "
                f"({why}); raise the limit to {least // 1024} KiB or more, or remove it"
            )
    return None


# glibc gives each new thread a stack of `ulimit -s`'s size: the stages' threads (OpenBLAS's,
# OpenMP's, download's decoders) got 28.6 GiB each under `ulimit -s 30000000`, could not
# start, and OpenBLAS then raised Ctrl-C's signal itself; under `ulimit -s 2000000` with
# `ulimit -v 6000000`, train ended in libgomp's own "Thread creation failed". A main stack
# under 80 KiB ended lr_find in a segmentation fault as it imported torch (Python itself
# needs 72 KiB to start).
_USUAL_STACK = 8 * 2**20  # what _LEAST_ADDRESS_SPACE was measured with
_LEAST_STACK = 256 * 2**10


def _stack_limit_problem() -> str | None:
    stack = resource.getrlimit(resource.RLIMIT_STACK)[0]
    if stack == resource.RLIM_INFINITY:  # glibc's own default then
        return None
    stage = _stage_name()
    if stack < _LEAST_STACK:
        return (
            f"`ulimit -s` leaves {stage} {stack // 1024} KiB of stack, and importing torch took more than 72 KiB; "
            f"raise it to {_LEAST_STACK // 1024} KiB or more ({_USUAL_STACK // 1024} KiB is usual)"
        )
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    threads = os.cpu_count() or 1  # OpenBLAS and OpenMP each start about one a core
    if stack > memory:
        beyond = f"more than this machine's {memory / 2**30:,.0f} GiB of memory"
    else:
        for option, kind, room, _, most_used in _MEMORY_LIMITS:
            used = most_used["download" if stage == "download" else "torch"]
            limit = resource.getrlimit(kind)[0]
            if limit != resource.RLIM_INFINITY and used * 2**30 + threads * max(0, stack - _USUAL_STACK) > limit:
                beyond = (
                    f"and {threads} such threads beside the {used} GiB {stage} uses exceed the "
                    f"{limit / 2**30:.2f} GiB {room} `{option}` leaves"
                )
                break
        else:
            return None
    return (
        f"`ulimit -s` gives each thread {stage} starts a {stack / 2**30:,.2f} GiB stack, {beyond}, so they cannot "
        f"start; lower it ({_USUAL_STACK // 1024} KiB is usual)"
    )


# The stages held up to 10 files open at once on a 500-image run (2-core CPU, 2026-12-02; download
# one image per decoding thread, up to 32 threads on a larger machine). Under `ulimit -n 8`
# figures and explain ran out while writing, and could not remove their scratch either.
_LEAST_FREE_FILES = 48


def _is_open(descriptor: int) -> bool:
    try:
        os.fstat(descriptor)
    except OSError:
        return False
    return True


def _open_files_problem() -> str | None:
    """Files the program that started the stage left open count against the limit too: with
    56 of 64 open, figures ran out while writing, as under `ulimit -n 8`."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        already_open = len(os.listdir("/proc/self/fd")) - 1  # not the listing's own
    except OSError:  # no /proc to list them in: each descriptor the limit allows is asked
        already_open = sum(_is_open(descriptor) for descriptor in range(limit))
    if limit - already_open >= _LEAST_FREE_FILES:
        return None
    return (
        f"`ulimit -n` lets {_stage_name()} hold {limit} files open at once, {already_open} of them open already, and "
        f"the stages held up to 10 on a 500-image run (download one more for each decoding thread); raise it to "
        f"{already_open + _LEAST_FREE_FILES} or more (1024 is usual)"
    )


def _cpu_time_problem() -> str | None:
    """Linux sends SIGXCPU as a process's CPU time reaches `ulimit -t`'s soft limit, and SIGKILL
    at the hard one; bash's `ulimit -t` sets both, and evaluate was killed without a word. The
    stage asks for SIGXCPU at least a tenth of the limit (2 s to 30 s) earlier, and ends at once on it
    (cifar.cli.leave): its signal handler runs once torch's operation in flight returns, and with
    a second to spare train was still killed after its line. A hard limit under 3 s leaves no
    time to spare: loading torch took more than 2 s, and a download of 60,000 images was
    killed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY:
        return None
    if hard >= 3:  # a soft limit a second short of the hard one had train and download killed after their line
        resource.setrlimit(resource.RLIMIT_CPU, (min(soft, hard - min(30, max(2, hard // 10))), hard))
        return None
    # download needs less than a second on 500 images; a synthetic set of 60,000 was killed at 1 s and 2 s
    too_little = "less than loading torch takes (over 2 s)"
    if _stage_name() == "download":
        too_little = "too little to leave time for its stop line"
    return (
        f"`ulimit -t` gives {_stage_name()} {hard} s of CPU time, {too_little}, and Linux kills it at that limit "
        f"without a word; raise it"
    )


# Threads of a torch stage beside the main one, OpenBLAS's and OpenMP's, at their most on 2
# cores (2026-12-02): two more in explain. tqdm's monitor, one more in lr_find and train, is
# not started (below).
_OTHER_THREADS = {"explain": 2}


def _threads_needed(stage: str, cores: int) -> int:
    """The most threads a stage ran at once: 8 download, 3 lr_find, train, evaluate and
    figures, 5 explain on 2 cores. OpenBLAS and OpenMP each start one a core but the first, or
    fewer where their settings say so (with OMP_NUM_THREADS and OPENBLAS_NUM_THREADS at 1,
    evaluate ran on its one thread): torch sizes its OpenMP pool by MKL_NUM_THREADS, else
    OMP_NUM_THREADS, within OMP_THREAD_LIMIT; OpenBLAS reads OPENBLAS_NUM_THREADS, else
    GOTO_NUM_THREADS, else OMP_NUM_THREADS. download decodes on min(32, cores + 4) threads."""
    # torch reads its settings as C++'s stoi does ("1.0" is 1), as OpenBLAS does C's atoi;
    # libgomp, which starts torch's pool, reads OMP_NUM_THREADS as a whole number only.
    torchs = _threads_asked(("MKL_NUM_THREADS",), leading=True) or _threads_asked(("OMP_NUM_THREADS",))
    openmp = min(cores, torchs or cores, _threads_asked(("OMP_THREAD_LIMIT",)) or cores)
    openblas = min(
        cores, _threads_asked(("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"), leading=True) or cores
    )
    if stage == "download":
        return openblas + min(32, cores + 4)
    return openblas + openmp - 1 + _OTHER_THREADS.get(stage, 0)


def _threads_asked(settings: tuple[str, ...], leading: bool = False) -> int | None:
    """The threads the first of `settings` that names a count asks for (its first level: "4,2"
    is 4; "+1" is 1; with `leading`, "1.0" is 1 too), as the libraries fall back where a value
    is 0 or not a count (torch on MKL_NUM_THREADS=0 took OMP_NUM_THREADS's). More than the
    cores were not seen to start."""
    for setting in settings:
        value = os.environ.get(setting, "").split(",")[0].strip().removeprefix("+")
        count = re.match(r"[0-9]*", value).group() if leading else value
        if count.isascii() and count.isdigit() and int(count[:10]) > 0:  # 10 digits: more than any core count
            return int(count[:10])
    return None


# lr_find, train and evaluate load torch's compiler to set deterministic algorithms, explain as
# torchvision loads torch._dynamo; each makes torch's compile-cache folder as it loads.
_STAGES_THAT_LOAD_TORCHS_COMPILER = ("lr_find", "train", "evaluate", "explain")


def _compile_cache_problem() -> str | None:
    """A file where torch makes its compile-cache folder (TMPDIR/torchinductor_USER, or
    TORCHINDUCTOR_CACHE_DIR) ended explain in a FileExistsError traceback, and lr_find,
    train and evaluate in "...: File exists; check that it exists", naming neither."""
    try:
        # torch's own function, which importing torch._inductor already calls
        importlib.import_module("torch._inductor.runtime.cache_dir_utils").cache_dir()
    except OSError as error:
        where = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or error.filename
        if where is None:  # tempfile found no temp folder it may write in
            return (
                f"torch cannot make its compile-cache folder in the system temp folder ({one_line(error)}); "
                f"{_temp_folder_fix(error)}"
            )
        return (
            f"torch cannot make its compile-cache folder {printable(str(where))[:200]} ({error.strerror}); remove "
            f"what is in the way, or set TORCHINDUCTOR_CACHE_DIR to a folder {_stage_name()} may write"
        )
    return None


def _threads_limit_problem() -> str | None:
    """Under a `ulimit -u` the user's other tasks leave too little of, numpy's OpenBLAS could
    not start its threads as it loaded and raised Ctrl-C's signal itself: evaluate said it was
    interrupted."""
    limit = user_threads_limit()
    if limit is None:
        return None
    cores = len(os.sched_getaffinity(0))  # OpenBLAS and OpenMP count those this process may run on
    needed = _threads_needed(_stage_name(), cores)
    try:
        processes = [name for name in os.listdir("/proc") if name.isdigit()]  # not /proc/self, this one again
    except OSError:  # no /proc to count them in: a thread that cannot start names the limit then
        return None
    running = 0
    user = str(os.getuid())
    for process in processes:
        try:
            with open(f"/proc/{process}/status", encoding="ascii", errors="replace") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:  # gone meanwhile
            continue
        if fields.get("Uid", "").split()[:1] == [user]:
            running += int(fields.get("Threads", "1"))
    if running - 1 + needed <= limit:  # this stage's one thread counted
        return None
    return (
        f"`ulimit -u` lets this user run {limit} processes and threads in all, {running - 1} run already, and "
        f"{_stage_name()} starts up to {needed} threads on {cores} cores; raise it (or stop some of the user's "
        f"programs)"
    )


_C_SPACE = " \t\n\v\f\r"


def _libgomp_stack_size(setting: str) -> int | None:
    """The stack size in bytes libgomp reads from a variable's text, or None where it warns
    of the value and leaves it unused (libgomp's env.c, parse_stacksize: strtoul's number,
    an optional unit B, K (the default), M or G, the product within 64 bits)."""
    text = setting.lstrip(_C_SPACE)
    number = re.match(r"[+-]?[0-9]+", text)
    if not number:
        return None
    digits = number[0].lstrip("+-").lstrip("0") or "0"
    if len(digits) > 20 or int(digits) >= 2**64:  # strtoul's ERANGE
        return None
    value = (-int(digits) if number[0].startswith("-") else int(digits)) % 2**64  # strtoul wraps a "-"
    unit = text[number.end() :].strip(_C_SPACE)
    shift = {"": 10, "b": 0, "k": 10, "m": 20, "g": 30}.get(unit.lower())
    if shift is None or (value << shift) % 2**64 >> shift != value:
        return None
    return value << shift


def _openmp_stack_problem() -> str | None:
    """OMP_STACKSIZE=100G ended a stage at torch's first parallel step in libgomp's own line,
    "Thread creation failed", which names neither the setting nor a fix: libgomp maps a stack
    of that size for each thread it starts beside the stage's, and a mapping larger than the
    machine's memory, or stacks beyond the address space a limit (`ulimit -v`) leaves, fail."""
    for name in ("OMP_STACKSIZE", "GOMP_STACKSIZE"):  # libgomp takes the first it can read
        setting = os.environ.get(name, "")
        stack = _libgomp_stack_size(setting)
        if stack is not None:
            break
    else:
        return None
    import torch  # whose thread count OpenMP takes; every stage but download loads it anyway

    started = torch.get_num_threads() - 1
    # libgomp starts no more threads than OMP_THREAD_LIMIT in all: a number that fits 64 bits
    # (strtoul), over 0; it warns of any other and leaves it unused.
    thread_limit = re.fullmatch(
        f"[{_C_SPACE}]*[+]?0*([0-9]{{1,20}})[{_C_SPACE}]*", os.environ.get("OMP_THREAD_LIMIT", "")
    )
    if thread_limit and 0 < int(thread_limit[1]) < 2**64:
        started = min(started, int(thread_limit[1]) - 1)
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    address_limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if not started or (stack <= memory and address_limit == resource.RLIM_INFINITY):
        return None
    try:
        mapped = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # no /proc: the stacks are started and a limit that runs out is the usual one line
        mapped = 0
    room = math.inf if address_limit == resource.RLIM_INFINITY else address_limit - mapped
    if stack <= memory and started * stack <= room:
        # OpenMP maps its threads' stacks at its first parallel step: now, before the stage's
        # data and model take the room (a limit that runs out then is the usual one line).
        torch.ones(1 << 20).add_(1)
        return None
    within = (
        f"this machine's {memory / 2**30:,.0f} GiB of memory"
        if stack > memory
        else f"the {room / 2**30:,.1f} GiB of address space its limit leaves (`ulimit -v`)"
    )
    return (
        f"{name}={printable(setting)[:40]} gives each of the {started} threads OpenMP starts for torch "
        f"{stack / 2**30:,.0f} GiB of stack, more than {within}, so it cannot start them; lower or unset {name}"
    )


# `python -m stages.NAME` sets argv[0] to "-m" while it imports this package: only a stage
# started that way gets the hook, never a notebook or test that imports stages.paths.
if sys.argv[:1] == ["-m"]:
    sys.excepthook = _one_line_for_a_missing_package_or_ctrl_c
    # Stages draw into files only: a backend the environment names for its own windows (even a
    # misspelt one, which matplotlib refused at import with a raw ValueError) is not theirs.
    os.environ["MPLBACKEND"] = "Agg"
    # pydantic (as cifar.config loads), torch and triton (as torch loads) import the plugins
    # any distribution on the import path declares: a `*.dist-info` folder declaring one that
    # exits ended train with exit code 0 and nothing trained. The stages use none of them.
    os.environ.update(
        PYDANTIC_DISABLE_PLUGINS="__all__", TORCH_DEVICE_BACKEND_AUTOLOAD="0", TRITON_BACKENDS_IN_TREE="1"
    )
    # sympy and mpmath (torch's symbolic shapes) import gmpy2, python-flint or Sage if they can, for
    # faster integers: a user's `flint` package on PYTHONPATH whose __version__ is "dev" ended
    # evaluate in sympy's ValueError. The stages' results never depend on that arithmetic.
    os.environ.update(SYMPY_GROUND_TYPES="python", MPMATH_NOGMPY="1", MPMATH_NOSAGE="1")
    os.environ.pop("MPMATH_SAGE", None)
    # Left ignored by the parent, SIGXCPU would only trade the stop line for Linux's kill at
    # the hard CPU-time limit (evaluate under `ulimit -t 5` ended in exit code 137, no line).
    if resource.getrlimit(resource.RLIMIT_CPU)[1] != resource.RLIM_INFINITY:
        _signal.signal(_signal.SIGXCPU, _signal.SIG_DFL)
    # A stop signal while torch still loads is one line too, not a silent death.
    install_stop_handlers()
    # Ctrl-C and the stop signals wait on until run_stage, with the stage's libraries loaded: one
    # that came as numpy or torch imported was taken by the library (numpy left without `matrix`,
    # a traceback), lost (exit 0, every output written) or ended in pybind11's abort. SIGXCPU,
    # under a CPU-time limit, may not wait: the kill at the hard limit would come first.
    _under_a_cpu_limit = resource.getrlimit(resource.RLIMIT_CPU)[1] != resource.RLIM_INFINITY
    _signal.pthread_sigmask(
        _signal.SIG_SETMASK,
        (_mask_at_start | {_signal.SIGINT, *STOP_SIGNALS}) - ({_signal.SIGXCPU} if _under_a_cpu_limit else set()),
    )
    problem = _command_line_problem() or _working_folder_problem() or _cpu_time_problem()
    if problem:
        _refuse(f"error: {problem}")
    problem = _memory_limit_problem() or _stack_limit_problem() or _open_files_problem() or _threads_limit_problem()
    if problem:  # before numpy starts OpenBLAS's threads as matplotlib or torch loads
        _refuse(f"error: {problem}")
    # NPY_ENABLE_CPU_FEATURES naming a feature this CPU lacks, or NUMPY_MADVISE_HUGEPAGE=abc,
    # ended every stage in a traceback as numpy loaded.
    _refuse_settings_a_library_fails_on(("NPY_", "NUMPY_"), "numpy", _import_numpy)
    if _stage_name() != "download":  # which imports neither tqdm nor torch, and draws no bar
        # tqdm (4.66 on) takes each TQDM_* variable as a default of its own: a value it cannot
        # convert (TQDM_MININTERVAL=abc) ended the five stages that import tqdm in a traceback
        # at import; one it cannot use (TQDM_FILE, a string where a stream goes) or draw
        # (TQDM_BAR_FORMAT='{bogus}') ended lr_find and train at their first bar, or mid-epoch.
        # Their two bars are drawn here first, as they will be, into a buffer.
        _refuse_settings_a_library_fails_on(("TQDM_",), "tqdm", _draw_the_stages_progress_bars)
        # tqdm's monitor thread wakes every 10 s for a bar stalled between redraws; the stages'
        # bars redraw at each step, and under a tight `ulimit -u` it was a thread too many.
        importlib.import_module("tqdm").tqdm.monitor_interval = 0
    if _stage_name() in ("lr_find", "figures", "explain"):  # those that import matplotlib (torch-lr-finder does)
        _import_matplotlib_with_its_own_settings()
    # dvc.yaml's paths table is checked before a stage loads torch (2 to 6 s, up to 1 GB).
    _paths = importlib.import_module("stages.paths")
    _paths.check_definition(_stage_name())
    keep_state_at_start(_SOURCES_READ, _SOURCES_AT_START, _paths.declared_inputs(_stage_name()))
    problem = _openmp_stack_problem() if _stage_name() != "download" else None  # download runs no torch
    if problem:
        _refuse(f"error: {problem}")
    # Both weights-only switches set made each model.pt "unreadable", with the advice to re-create it.
    weights_only_switches = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    if all(os.environ.get(name, "0").lower() in ("1", "y", "yes", "true") for name in weights_only_switches):
        _refuse(f"error: {' and '.join(weights_only_switches)} are both set, and torch then loads no file; unset one")
    # TORCH_LOGS=bogus, an empty one or a TORCH_LOGS_OUT in a missing folder ended every stage
    # but download in a traceback as torch loaded.
    if _stage_name() != "download":
        _refuse_settings_a_library_fails_on(
            ("TORCH_LOGS",), "torch", _import_torch, " (TORCH_LOGS=help lists the logs)"
        )
    problem = _compile_cache_problem() if _stage_name() in _STAGES_THAT_LOAD_TORCHS_COMPILER else None
    if problem:
        _refuse(f"error: {problem}")
# Last: run_stage refuses a stage whose start-up ended before here (this file cut short).
start_up_done()
