#!/usr/bin/env bash
# Installs tf_detcon with its test extras into ./.venv and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet -e '.[test]'
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest -q tests "$@"
