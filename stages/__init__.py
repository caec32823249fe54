"""The pipeline's stages, one module each, run by DVC as `python -m stages.NAME`.

DVC runs whatever `python` comes first on PATH: started from a shell outside .venv, a stage
would end in a traceback about a missing package. Python imports this package before the
stage's module, so a stage started that way ends here in one line that names the
interpreter, the missing module and how to run it, with exit code 2.
"""

import sys


def _outside_the_environment(kind, error, trace):
    if issubclass(kind, ModuleNotFoundError) and (error.name or "").partition(".")[0] not in ("cifar", "stages"):
        print(
            f"error: {sys.executable} has no module {error.name!r}, so it is not the project's environment; "
            f"run `source .venv/bin/activate` first (or run the pipeline with scripts/run.sh)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    sys.__excepthook__(kind, error, trace)


# `python -m stages.NAME` sets argv[0] to "-m" while it imports this package: only a stage
# started that way gets the hook, never a notebook or test that imports stages.paths.
if sys.argv[:1] == ["-m"]:
    sys.excepthook = _outside_the_environment
