#!/usr/bin/env bash
# The tests: set up .venv if needed, then pytest (CPU only). The default tier is fast and
# covers every stage and DVC verb at small size; --full adds the heavy end-to-end tests
# (marked `full`). Other arguments go to pytest.
# One worker process per core (pytest-xdist), each taking whole test files, so that a file's
# shared pipeline run (a module fixture) is made once: on 2 cores the suite's CPU time was
# 49 min against 53 min of wall clock in one process, with one core mostly idle.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# --no-loadscope-reorder keeps the order tests/conftest.py gives the files (longest first);
# by default xdist hands out the files with the most tests first, which left the longest to last.
# One worker more than cores: the tests wait on stage subprocesses, DVC's queue and act's jobs,
# and with one worker per core the 2-core CI machine was busy 138% of its 200% (2026-12-01).
parallel=(-n "$(($(nproc) + 1))" --dist loadfile --no-loadscope-reorder)
if [ "${1:-}" = "--full" ]; then
  shift
  exec python -m pytest "${parallel[@]}" -m "full or not full" "$@"
fi
exec python -m pytest "${parallel[@]}" "$@"
