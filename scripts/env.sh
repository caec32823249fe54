# shellcheck shell=bash
# Sourced by run.sh and test.sh: creates .venv with the pinned dependencies if it is
# missing or a requirements file changed since it was made, then puts it first on PATH.
# CIFAR_DVC_VENV puts the environment elsewhere: the training workflow keeps it on the
# runner, outside the workspace that every checkout starts afresh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
venv=${CIFAR_DVC_VENV:-.venv}
# What the stages import (a dep of every stage), and DVC with the test tools (a dep of none).
stamp="$venv/.installed-$(cat requirements-stages.txt requirements.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$python" -c 'import sys; v = sys.version_info[:2]; assert (3, 11) <= v <= (3, 12), f"Python 3.11 or 3.12 needed, found {v}"' \
    || { echo "error: set PYTHON to a Python 3.11 or 3.12 interpreter" >&2; exit 2; }
  echo "setting up $venv (torch with CUDA, about 6 GB on disk; a few minutes the first time)" >&2
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  # --no-compile: Python writes each module's bytecode at its first import instead. pip's
  # compiling of every module up front made this install take 241 s instead of 143 s on 2 CPU cores.
  "$venv/bin/python" -m pip install --quiet --no-compile -r requirements-stages.txt -r requirements.txt
  # An older .venv may hold an editable install of this checkout; stages must not import it.
  "$venv/bin/python" -m pip uninstall --quiet --yes cifar-dvc 2>/dev/null || true
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
export PATH="$(cd "$venv" && pwd)/bin:$PATH"
# It leaves the working folder off Python's import path: `python -m stages.NAME`, as dvc.yaml
# runs each stage, would find no stages package.
unset PYTHONSAFEPATH
