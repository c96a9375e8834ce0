#!/usr/bin/env bash
# The test command (README): make .venv, install CPU torch and sdbot with its dev
# tools, then lint, type-check and run the whole suite. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip
# CPU torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
if ! "$VPY" -c "import torch" 2>/dev/null; then
    "$VPY" -m pip install -q torch==2.13.0
fi
"$VPY" -m pip install -q -e '.[dev]'
echo "== ruff"
"$VPY" -m ruff check .
echo "== mypy"
"$VPY" -m mypy
echo "== pytest"
"$VPY" -m pytest -q -p no:cacheprovider "$@"
