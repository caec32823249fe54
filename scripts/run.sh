#!/usr/bin/env bash
# The main job: set up .venv if needed, then run the DVC pipeline as an experiment.
# Arguments go to `dvc exp run`, e.g.  scripts/run.sh -S train.epochs=30
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec dvc exp run "$@"
