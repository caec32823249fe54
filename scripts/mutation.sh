#!/usr/bin/env bash
# Mutation testing with a score per module (see docs/mutation.md): set up .venv if needed,
# then run mutmut over the modules named, by default those of pyproject.toml's [tool.mutmut].
#   scripts/mutation.sh [MODULE ...]      e.g. scripts/mutation.sh cifar/training/schedule.py
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# One thread per test process: mutmut runs one per core, torch would otherwise start a pool each.
export OMP_NUM_THREADS=1
exec python scripts/mutation.py "$@"
