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

import importlib
import importlib.machinery
import importlib.util
import io
import math
import os
import re
import resource
import sys
from pathlib import Path

from cifar.cli import Stopped, install_stop_handlers, stopped_line
from cifar.errors import PipelineError, one_line, out_of_memory_message, printable


def _stage_name() -> str:
    """`figures` for `python -m stages.figures`, also while this package loads, when argv[0]
    is still "-m"."""
    if "-m" in sys.orig_argv[:-1]:
        return sys.orig_argv[sys.orig_argv.index("-m") + 1].rpartition(".")[2]
    return Path(sys.argv[0]).stem


def _one_line_for_a_missing_package_or_ctrl_c(kind, error, trace):
    stage = _stage_name()
    if issubclass(kind, Stopped):
        print(stopped_line(error, stage), file=sys.stderr)
        raise SystemExit(128 + error.args[0])
    if issubclass(kind, KeyboardInterrupt):
        print(
            f"error: interrupted before {stage} finished; no file is left half-written: run it again", file=sys.stderr
        )
        raise SystemExit(130)
    if issubclass(kind, PipelineError):  # dvc.yaml's paths table, read as stages.paths loads
        print(f"error: {printable(str(error))}", file=sys.stderr)
        raise SystemExit(2)
    out_of_memory = out_of_memory_message(error, stage)
    if out_of_memory:
        print(out_of_memory, file=sys.stderr)
        raise SystemExit(2)
    shadowing = _shadowing_module() if issubclass(kind, (ImportError, AttributeError)) else None
    if shadowing:
        name, location, hidden = shadowing
        print(
            f"error: {stage} imported {name!r} from {location}, which hides this environment's ({hidden}); "
            f"rename or remove it (a file or folder named like a library, on PYTHONPATH or in the working folder)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if issubclass(kind, ModuleNotFoundError) and (error.name or "").partition(".")[0] not in ("cifar", "stages"):
        print(
            f"error: {sys.executable} has no module {error.name!r}, so it is not the project's environment; "
            f"run `source .venv/bin/activate` first (or run the pipeline with scripts/run.sh)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if issubclass(kind, UnicodeEncodeError) and error.reason == "surrogates not allowed":
        # Python's C locale without UTF-8 mode (PYTHONUTF8=0) keeps a non-ASCII path's bytes as
        # surrogates, which torch's import cannot encode: the environment's own path, say.
        print(
            f"error: {stage} met a path that is not text under this locale ({ascii(error.object)[:120]}); "
            f"use a UTF-8 locale (export LC_ALL=C.UTF-8) or leave PYTHONUTF8 unset",
            file=sys.stderr,
        )
        raise SystemExit(2)
    sys.__excepthook__(kind, error, trace)


def _shadowing_module() -> tuple[str, str, str] | None:
    """A module imported from outside the environment in place of one it has: an empty
    `yaml.py` on PYTHONPATH ended download in "module 'yaml' has no attribute
    'MarkedYAMLError'", a `numpy.py` evaluate inside pandas' import. (name, its file, the
    file it hides.)"""
    prefixes = {Path(prefix).resolve() for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    # the environment's folders on the import path: the standard library, lib-dynload, site-packages
    places = [place for place in sys.path if place and any(Path(place).resolve().is_relative_to(p) for p in prefixes)]
    resolved_places = [Path(place).resolve() for place in places]
    for name, module in list(sys.modules.items()):
        if "." in name or name in ("__main__", "cifar", "stages"):
            continue
        file = getattr(module, "__file__", None)
        locations = [file] if file else list(getattr(module, "__path__", None) or [])  # none: built in
        if not locations or any(
            Path(location).resolve().is_relative_to(place) for location in locations for place in resolved_places
        ):
            continue
        if name in sys.builtin_module_names:
            return name, printable(locations[0]), "built into Python"
        hidden = importlib.machinery.PathFinder.find_spec(name, places)
        if hidden is not None:
            return name, printable(locations[0]), printable(hidden.origin or str(hidden.submodule_search_locations))
    return None


def _import_matplotlib_with_its_own_settings() -> None:
    """matplotlib reads a matplotlibrc as it loads: ./matplotlibrc first, then MATPLOTLIBRC's,
    then its config folder's. The figures are drawn by its defaults (cifar.reporting.plots),
    and reading the user's blocked on a named pipe or filled memory (MATPLOTLIBRC=/dev/zero):
    it loads here from its own folder, whose ./matplotlibrc is its defaults."""
    found = importlib.util.find_spec("matplotlib")
    if found is None or found.origin is None:  # none, or a folder named like it: the hook says which
        importlib.import_module("matplotlib")
        return
    own_folder = Path(found.origin).parent / "mpl-data"
    working_folder = os.getcwd()
    os.chdir(own_folder)
    try:
        importlib.import_module("matplotlib")
    finally:
        os.chdir(working_folder)


def _draw_the_stages_progress_bars() -> None:
    """train's epoch bar (cifar.training.engine) and torch-lr-finder's, drawn into a buffer."""
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


def _refuse_settings_a_library_fails_on(prefix: str, library: str, use_them, advice: str = "") -> None:
    """One line and exit code 2 where `use_them` raises on the library's own settings, the
    variables named `prefix*`. Download imports neither tqdm nor torch: checking would cost it
    up to 600 MB."""
    settings = sorted(name for name in os.environ if name.startswith(prefix))
    if not settings or _stage_name() == "download":
        return
    try:
        use_them()
    except Exception as error:  # whatever the library raises on a setting of its own
        if isinstance(error, (ImportError, AttributeError)) and _shadowing_module():
            raise  # a file named like the library: the stage's hook names it
        print(
            f"error: {library} cannot use its environment ({', '.join(settings)}): {type(error).__name__}: "
            f"{one_line(error)}; fix or unset it{advice}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


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
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    address_limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if not started or (stack <= memory and address_limit == resource.RLIM_INFINITY):
        return None
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
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
    # A stop signal while torch still loads is one line too, not a silent death.
    install_stop_handlers()
    # tqdm (4.66 on) takes each TQDM_* variable as a default of its own: a value it cannot
    # convert (TQDM_MININTERVAL=abc) ended the five stages that import tqdm (all but download)
    # in a traceback at import; one it cannot use (TQDM_FILE, a string where a stream goes) or
    # draw (TQDM_BAR_FORMAT='{bogus}') ended lr_find and train at their first bar, or
    # mid-epoch. Their two bars are drawn here first, as they will be, into a buffer.
    _refuse_settings_a_library_fails_on("TQDM_", "tqdm", _draw_the_stages_progress_bars)
    if _stage_name() in ("lr_find", "figures", "explain"):  # those that import matplotlib (torch-lr-finder does)
        _import_matplotlib_with_its_own_settings()
    # dvc.yaml's paths table is checked before a stage loads torch (2 to 6 s, up to 1 GB).
    importlib.import_module("stages.paths")
    problem = _openmp_stack_problem() if _stage_name() != "download" else None  # download runs no torch
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    # Both weights-only switches set made each model.pt "unreadable", with the advice to re-create it.
    weights_only_switches = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    if all(os.environ.get(name, "0").lower() in ("1", "y", "yes", "true") for name in weights_only_switches):
        print(
            f"error: {' and '.join(weights_only_switches)} are both set, and torch then loads no file; unset one",
            file=sys.stderr,
        )
        raise SystemExit(2)
    # TORCH_LOGS=bogus, an empty one or a TORCH_LOGS_OUT in a missing folder ended every stage
    # but download in a traceback as torch loaded.
    _refuse_settings_a_library_fails_on("TORCH_LOGS", "torch", _import_torch, " (TORCH_LOGS=help lists the logs)")
