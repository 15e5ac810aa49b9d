#!/usr/bin/env bash
# One command for every check: format, lint, types, tests. Run from the repository root inside the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
$PY -m ruff format --check .
$PY -m ruff check .
$PY -m mypy
$PY -m pytest -q "$@"
