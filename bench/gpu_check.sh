#!/usr/bin/env bash
# Prepared GPU check (one H100/H200, under 8 minutes): see bench/gpu_check.py and the "GPU check" section of
# bench/RESULTS.md. Run from the repo root: bash bench/gpu_check.sh [OUT_DIR] [--cpu-dry-run] [--steps a,b]
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || PY=python
exec "$PY" bench/gpu_check.py "$@"
