#!/usr/bin/env bash
# Installs tf_detcon into ./.venv and runs the main job on the embedded sample data, on CPU:
# pretraining DetCon_B (tiny config) and export under ./runs/detcon_b_tiny.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet -e .
exec .venv/bin/python launch/pretrain.py --experiment=detcon_b_tiny --model_dir=runs/detcon_b_tiny "$@"
