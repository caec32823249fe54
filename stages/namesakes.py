"""A stage imports its environment's modules, never a file named like one.

Python imports from the working folder and PYTHONPATH before the environment, so an empty
`yaml.py` there ended download in "module 'yaml' has no attribute 'MarkedYAMLError'", a
`random.py` evaluate in an ImportError; one that raised at import ended a stage in its own
traceback, one that called `sys.exit(0)` ended it with exit 0 and nothing done. Python asks
the finder here first, for each module not yet loaded, so a stage refuses such a file in one
line before any of it runs. The project's pinned versions are what the pipeline reproduces,
so a working copy of another version (a vendored `typing_extensions.py`) is refused as well.
The working folder is the repository's root, from which a stage imports only its own
packages: it leaves the import path once they are imported, so nothing else there (a
`gmpy2.py`, which sympy tries in passing as torch loads) is a module to a library.
PYTHONPATH may add modules the environment lacks (a folder of extra wheels); one that a
library takes for its own and fails on is named as the stage ends (stand_in_on_the_import_path),
as is one from a folder that a sitecustomize or a .pth file puts on the path.

This module imports only what every Python has loaded before it (`importlib.machinery` is
frozen into the interpreter, `os` and `sys` too), since anything else could be a namesake.
"""

if not __package__:  # `python stages/namesakes.py`: not a stage, and cifar/ is off sys.path
    raise SystemExit(
        "error: run a stage from the repository root as `python -m stages.NAME`, NAME one of download, lr_find, "
        "train, evaluate, figures, explain"
    )

import importlib.machinery
import os
import sys

_OWN_PACKAGES = ("cifar", "stages")


def started_module() -> str:
    """`stages.figures` for `python -m stages.figures` (or `-mstages.figures`, `-B -m ...`),
    read from the command line as Python parsed it; "" for no -m."""
    arguments = iter(sys.orig_argv[1:])
    for argument in arguments:
        if not argument.startswith("-") or argument in ("-", "--"):
            break
        if argument.startswith("--"):
            if argument == "--check-hash-based-pycs":
                next(arguments, None)
            continue
        for position, option in enumerate(argument[1:], start=2):
            if option in "cmWX":  # the options that take a value, joined or next
                value = argument[position:] or next(arguments, "")
                if option == "m":
                    return value
                break
    return ""


def _places_put_first() -> tuple[list[str], list[str]]:
    """The folders Python puts on the import path before the environment's: the working folder
    (`python -m`'s first entry, unless -P leaves it out), then PYTHONPATH's."""
    working_folder = [] if sys.flags.safe_path else [sys.path[0]]
    pythonpath = os.environ.get("PYTHONPATH", "") if not sys.flags.ignore_environment else ""
    return working_folder, pythonpath.split(os.pathsep) if pythonpath else []


def _users_folders() -> list[str]:
    """PYTHONPATH's folders, and those on the import path outside the interpreter's and the
    environment's own folders (one a sitecustomize on PYTHONPATH added, say)."""
    prefixes = {os.path.realpath(prefix) for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    outside = [
        place
        for place in sys.path
        if place and not any(os.path.realpath(place).startswith(os.path.join(prefix, "")) for prefix in prefixes)
    ]
    return [*_places_put_first()[1], *outside]


class _NamesakeRefuser:
    """A meta-path finder that finds nothing: it refuses a module that would be imported from
    the working folder or PYTHONPATH while the environment's own folders (the standard library,
    site-packages, the folders their .pth files add) hold one of that name. A folder a library
    puts on the path itself (cv2 its own) is the library's business."""

    refused = False  # said once: the decoding threads import in parallel

    def __init__(self, stage: str, put_first: list[str]):
        self.stage = stage
        self.put_first = put_first
        put_first_folders = {os.path.realpath(place) for place in self.put_first}
        self.environment = [place for place in sys.path if place and os.path.realpath(place) not in put_first_folders]

    def find_spec(self, name, path=None, target=None):
        if path is not None or name in _OWN_PACKAGES or name in sys.builtin_module_names:
            return None  # a submodule comes from its package's folder; built-ins come first
        if importlib.machinery.FrozenImporter.find_spec(name) is not None:
            return None
        found = importlib.machinery.PathFinder.find_spec(name, sys.path)
        if found is None or found.origin is None:  # none, or a namespace folder, which hides nothing
            return None
        put_first = importlib.machinery.PathFinder.find_spec(name, self.put_first)
        if put_first is None or put_first.origin != found.origin:
            return None
        own = importlib.machinery.PathFinder.find_spec(name, self.environment)
        if own is not None and own.origin != found.origin:
            other = _other_environment(found.origin)
            fix = "rename or remove it (a file or folder named like a library, on PYTHONPATH or in the working folder)"
            if other:
                fix = (
                    f"those are the site-packages of the environment {_printable(other)}: run the stage with its "
                    f"python ({_printable(os.path.join(other, 'bin', 'python'))}), with them off PYTHONPATH"
                )
            self.refuse(
                name,
                f"{_printable(found.origin)}, which hides this environment's ({_printable(own.origin or name)}); {fix}",
            )
        # a module of the user's, which this environment lacks; one whose loader has only the old
        # load_module (a legacy import hook's) is left to it
        if own is None and hasattr(found.loader, "exec_module"):
            found.loader = _ImportWatcher(self, found)
            return found
        return None

    def refuse(self, name: str, where: str):
        if not _NamesakeRefuser.refused:
            _NamesakeRefuser.refused = True
            cli = sys.modules.get("cifar.cli")  # its stop handlers are in once it is imported
            if cli is not None:  # a signal from here to the exit ended it in a traceback
                cli.ignore_stops_from_now()
                # torch's report at exit imports tabulate: a tabulate.py refused as the stage loaded
                # was refused again there, in a traceback
                sys.modules["cifar.errors"].call_off_torchs_exit_report()
            print(f"error: {self.stage} would import {name!r} from {where}", file=sys.stderr)
        raise SystemExit(2)


def _other_environment(path: str) -> str | None:
    """The root of the virtual environment (the folder of its pyvenv.cfg) whose site-packages
    hold path, if that is not this interpreter's: pyenv's python with a venv's site-packages
    on PYTHONPATH was told to rename or remove that venv's own yaml."""
    folder = os.path.dirname(path)
    while os.path.basename(folder) != "site-packages":
        if folder == os.path.dirname(folder):
            return None
        folder = os.path.dirname(folder)
    root = os.path.dirname(os.path.dirname(os.path.dirname(folder)))  # ROOT/lib/pythonX.Y/site-packages
    if not os.path.isfile(os.path.join(root, "pyvenv.cfg")) or os.path.realpath(root) == os.path.realpath(sys.prefix):
        return None
    return root


# The errors that imports of the user's modules raised, with the module's spec: a numexpr.py
# saved as UTF-16 failed to compile, which left no frame of its own in the traceback.
_failed_imports: list[tuple[BaseException, importlib.machinery.ModuleSpec]] = []


class _ImportWatcher:
    """The loader of a module of the user's that this environment lacks, standing in for the
    one Python found: it notes the error the module's import raises, and refuses one that
    exits as it is imported (a numexpr.py that called `sys.exit(0)` ended evaluate with exit
    code 0 and nothing done). Everything else is the found loader's."""

    def __init__(self, refuser: _NamesakeRefuser, spec: importlib.machinery.ModuleSpec):
        self.refuser, self.spec, self.loader = refuser, spec, spec.loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self._watched(getattr(self.loader, "create_module", lambda spec: None), spec)

    def exec_module(self, module):
        self._watched(self.loader.exec_module, module)

    def _watched(self, step, argument):
        try:
            return step(argument)
        except SystemExit as exit:
            on, path = _on_which_path(self.spec)
            self.refuser.refuse(
                self.spec.name,
                f"{_printable(self.spec.origin)}, a module {on} that a library took for its own and that exits as it "
                f"is imported (sys.exit({_printable(repr(exit.code)[:100])})); rename or remove it, or take its "
                f"folder off {path}",
            )
        except BaseException as error:
            _failed_imports.append((error, self.spec))
            raise


def _printable(path: str) -> str:
    """A path as one line the terminal can show: control characters and bytes the locale did
    not decode (surrogates) written as escapes. cifar.errors.printable's regular expression
    would import `re`, which may be a namesake itself."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in path)


def _unreadable_entry_points(pythonpath: list[str]) -> str | None:
    """Why a distribution's entry points on PYTHONPATH cannot be read: libraries list those of
    every distribution on the import path (triton its backends, as torch loads), and an
    entry_points.txt in Latin-1 ended a stage in a traceback, a named pipe kept it waiting."""
    for place in pythonpath:
        try:
            names = os.listdir(place or ".") if os.path.isdir(place or ".") else []
        except OSError:
            continue
        for name in names:
            entry_points = os.path.join(place, name, "entry_points.txt")
            if not name.endswith((".dist-info", ".egg-info")) or not os.path.lexists(entry_points):
                continue
            try:
                if not os.path.isfile(entry_points) or os.path.getsize(entry_points) > 2**20:
                    raise ValueError("not a text file of at most 1 MiB")
                with open(entry_points, encoding="utf-8") as text:
                    text.read()
            except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
                return f"{_printable(entry_points)} cannot be read as text ({error}); fix or remove {_printable(name)}"
    return None


def refuse_namesakes() -> None:
    """For a stage started as `python -m stages.NAME`, which Python is importing this package
    for. A PYTHONPATH entry that is neither a folder nor a file (a named pipe) is refused too:
    importlib.metadata, which pydantic asks for its plugins, opened it as a zip and waited."""
    stage = started_module().rpartition(".")[2]
    working_folder, pythonpath = _places_put_first()
    put_first = working_folder + _users_folders()
    for place in put_first:
        if place and os.path.exists(place) and not (os.path.isdir(place) or os.path.isfile(place)):
            print(
                f"error: the import path entry {_printable(place)} is neither a folder nor a file, and Python "
                f"waits on reading it; take it off PYTHONPATH",
                file=sys.stderr,
            )
            raise SystemExit(2)
    unreadable = _unreadable_entry_points(pythonpath)
    if unreadable:
        print(f"error: a library's metadata on the import path: {unreadable}", file=sys.stderr)
        raise SystemExit(2)
    sys.meta_path.insert(0, _NamesakeRefuser(stage, put_first))
    if working_folder:
        # `python -m` put the working folder, the repository's root, first on the import path for
        # this package and `cifar` beside it. Once both are imported (their modules come from their
        # own folders then), it leaves: no other file or folder there (a user's onnx/ of exports,
        # a gmpy2.py, which sympy tries as torch loads) is a module to any library, nor is a
        # `*.dist-info` folder there a distribution (one declaring a plugin that exits ended train
        # with exit code 0).
        importlib.import_module("cifar")
        sys.path.remove(working_folder[0])


def stand_in_on_the_import_path(error: BaseException, trace) -> str | None:
    """The user's module that a library failed on, when error is that failure: an empty
    pyarrow.py on PYTHONPATH is a module to Python, which pandas imported in place of the
    library this environment lacks and then asked for its `__version__` (an AttributeError
    traceback). The module is the one the error names (or its package), one a library held as
    it failed (pandas, on a pyarrow whose `__version__` is "dev", raised InvalidVersion as it
    loaded), or one that failed as it was imported (a pytz.py that raises, a numexpr.py in
    Python 3.12's syntax, or in UTF-16)."""
    suspects = []
    if isinstance(error, AttributeError):
        suspects.append(getattr(error.obj, "__spec__", None))
    elif isinstance(error, ImportError):
        name = error.name or ""
        suspects += [getattr(sys.modules.get(part), "__spec__", None) for part in (name, name.partition(".")[0])]
    if isinstance(error, SyntaxError) and error.filename:
        suspects.append(_spec_of_a_users_file(error.filename))
    causes = _chain(error)
    suspects += [spec for failure, spec in _failed_imports if any(failure is cause for cause in causes)]
    while trace is not None:
        suspects.extend(_held_by_a_library(trace.tb_frame))
        trace = trace.tb_next
    for spec in suspects:
        where = _users_only(spec)
        if where:
            kind = "a folder without __init__.py" if not spec.has_location else "a module"
            on, path = _on_which_path(spec)
            return (
                f"{spec.name!r} from {_printable(where)}, {kind} {on} that a library took for its own and "
                f"failed on ({_printable((str(error) or type(error).__name__)[:200])}); rename or remove it, or take "
                f"its folder off {path}"
            )
    return None


def _on_which_path(spec) -> tuple[str, str]:
    """Where the user's module lies, and the path to take its folder off: PYTHONPATH, or the
    import path (a folder that a sitecustomize or a .pth file added)."""
    pythonpath = [place or "." for place in _places_put_first()[1]]
    found = importlib.machinery.PathFinder.find_spec(spec.name.partition(".")[0], pythonpath) if pythonpath else None
    if found is not None and _users_only(found):
        return "on PYTHONPATH", "PYTHONPATH"
    return "on the import path", "the import path"


def _chain(error: BaseException) -> list[BaseException]:
    """error and the errors it was raised from or while handling (pandas re-raises a failed
    optional import as its own ImportError)."""
    chain = [error]
    while len(chain) < 20 and (chain[-1].__cause__ or chain[-1].__context__) is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    return chain


def _held_by_a_library(frame) -> list:
    """The modules a function's locals hold, or a module's globals (what it has imported) while
    the environment's library runs its code as it loads; a module of the user's itself, when it
    is the one whose code runs (read from its file: it may have set its `__spec__` to None)."""
    if frame.f_code.co_name != "<module>":
        held = frame.f_locals.values()
    else:
        name = frame.f_globals.get("__name__", "")
        if name == "__main__" or name.partition(".")[0] in _OWN_PACKAGES:
            return []
        users = _spec_of_a_users_file(frame.f_code.co_filename)
        if _users_only(users):
            return [users]
        held = frame.f_globals.values()
    return [value.__spec__ for value in held if isinstance(value, type(sys)) and value.__spec__ is not None]


def _spec_of_a_users_file(path: str):
    """A spec for a module's file in one of the user's folders, named as Python names it there."""
    for place in _users_folders():
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(place or "."))
        if not relative.startswith(os.pardir) and relative.endswith(".py"):
            name = relative[: -len(".py")].removesuffix(os.sep + "__init__").replace(os.sep, ".")
            spec = importlib.machinery.ModuleSpec(name, None, origin=path)
            spec.has_location = True
            return spec
    return None


def _users_only(spec) -> str | None:
    """Where the module of spec was imported from, if that is one of the user's folders, as
    Python found it (a link there to a folder elsewhere too), and the environment has no module
    of that name."""
    if not isinstance(spec, importlib.machinery.ModuleSpec) or spec.name.partition(".")[0] in _OWN_PACKAGES:
        return None
    where = [spec.origin] if spec.has_location else list(spec.submodule_search_locations or ())
    users = [place or "." for place in _users_folders()]
    folders = {*map(os.path.abspath, users), *map(os.path.realpath, users)}
    inside = tuple(os.path.join(folder, "") for folder in folders)
    if not where or not all(
        os.path.abspath(place).startswith(inside) or os.path.realpath(place).startswith(inside) for place in where
    ):
        return None
    environment = [place for place in sys.path if place and os.path.realpath(place) not in folders]
    if importlib.machinery.PathFinder.find_spec(spec.name.partition(".")[0], environment) is not None:
        return None  # the environment's own, which a PYTHONPATH entry inside site-packages reaches too
    return where[0]
