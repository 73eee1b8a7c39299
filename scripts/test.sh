#!/usr/bin/env bash
# Installs tf_detcon with its test extras into ./.venv and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet -e '.[test]'
export TF_CPP_MIN_LOG_LEVEL=2
# Two worker processes (one per core of the CI machine), tests handed out as workers free up;
# each worker builds the session fixtures it needs. The 25 slowest tests are listed at the end.
exec .venv/bin/python -m pytest -q -n 2 --dist worksteal --durations=25 tests "$@"
