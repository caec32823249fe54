#!/usr/bin/env bash
# The tests: set up .venv if needed, then pytest (CPU only). The default tier is fast and
# covers every stage and DVC verb at small size; --full adds the heavy end-to-end tests
# (marked `full`). Other arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [ "${1:-}" = "--full" ]; then
  shift
  exec python -m pytest -m "full or not full" "$@"
fi
exec python -m pytest "$@"
