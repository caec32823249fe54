#!/usr/bin/env bash
# The tests: set up .venv if needed, then pytest (CPU only). Arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest "$@"
