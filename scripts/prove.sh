#!/usr/bin/env bash
# The proof that minigate holds (issue 7): faults, bad input and fuzzing, attacks, the hash-pinned lock, and a
# small run of the load benchmark script. Every part is also in the whole test suite that .ci/run runs; this
# runs just these. The long load and soak runs are a benchmark: python bench/bench_load.py (see bench/README.md).
# Run from the repository root inside the venv (PYTHON=.venv/bin/python to choose another interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
$PY -m pytest -q "$@" \
  tests/test_fallback.py tests/test_faults.py tests/test_faults_storage.py tests/providers/onnx/test_onnx_faults.py \
  tests/storage/test_usage.py \
  tests/test_bad_input.py tests/test_fuzz.py \
  tests/test_attacks.py tests/test_attacks_keys.py tests/test_attacks_access.py tests/test_secrets.py \
  tests/web/test_security.py \
  tests/test_lock.py tests/test_lock_install.py tests/test_bench_load.py
