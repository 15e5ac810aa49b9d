#!/bin/sh
# Install minigate and exactly its locked dependencies into a venv: the image's builder stage (Dockerfile), the
# README's install command and the test environment of .ci/run.
#
#   MINIGATE_ACCELERATOR=cpu MINIGATE_EXTRAS=convert MINIGATE_TORCH=pypi sh deploy/install.sh VENV [deps|minigate]
#
# `deps` installs the lock only, `minigate` only minigate (into the venv `deps` made), neither both: the
# Dockerfile runs the two steps apart so that a change to the code does not download the dependencies again.
# Run it in the source folder (pyproject.toml, the packages, deploy/requirements-*.lock). MINIGATE_ACCELERATOR
# (cpu, the default, or cuda), MINIGATE_EXTRAS (convert when unset, none when empty, or test: the test
# environment, cpu only) and MINIGATE_TORCH (pypi, the default, or cpu) pick the lock
# deploy/requirements-ACCELERATOR[-EXTRAS][-torchcpu].lock. MINIGATE_TORCH=cpu is PyTorch's CPU-only torch (the
# torchcpu locks, x86_64 only): pip must find that wheel through PIP_EXTRA_INDEX_URL (PyTorch's CPU-only wheel
# index) or PIP_FIND_LINKS (a folder holding it), or pip's own configuration; without an extra there is no
# torch to choose and it is ignored. MINIGATE_EDITABLE=1 installs minigate editable (pip install -e: the
# source folder is what runs), as the test environment does. Every package comes from the lock, checked
# against its sha256 (--require-hashes; --no-deps, so pip adds nothing the lock does not name); then minigate
# itself is built with the lock's setuptools (--no-build-isolation) and installed without looking at an index.
# The only Python code not covered by a hash is the base image's own Python and pip. tests/test_lock_install.py runs
# this script too.
set -eu
venv=${1:?usage: deploy/install.sh VENV [deps|minigate]}
case "$venv" in
  /*) ;;
  *) venv=$PWD/$venv ;; # the last check runs from /
esac
step=${2:-all}
accelerator=${MINIGATE_ACCELERATOR:-cpu}
extras=${MINIGATE_EXTRAS-convert}
torch=${MINIGATE_TORCH:-pypi}
editable=${MINIGATE_EDITABLE:-}
python=${PYTHON:-python3}

case "$step" in
  deps | minigate | all) ;;
  *) echo "usage: deploy/install.sh VENV [deps|minigate]" >&2; exit 2 ;;
esac
case "$accelerator" in
  cpu | cuda) ;;
  *) echo "MINIGATE_ACCELERATOR must be cpu or cuda, not $accelerator" >&2; exit 2 ;;
esac
case "$torch" in
  pypi | cpu) ;;
  *) echo "MINIGATE_TORCH must be pypi or cpu, not $torch" >&2; exit 2 ;;
esac
case "$editable" in
  "" | 0) editable= ;;
  1) editable=-e ;;
  *) echo "MINIGATE_EDITABLE must be 1, 0 or empty, not $editable" >&2; exit 2 ;;
esac
variant=$accelerator${extras:+-$extras}
if [ "$torch" = cpu ]; then
  if [ -z "$extras" ]; then
    echo "MINIGATE_TORCH=cpu: ignored, MINIGATE_EXTRAS is empty, so no torch is installed" >&2
    torch=pypi
  elif [ "$accelerator" != cpu ] || [ "$(uname -m)" != x86_64 ]; then
    echo "MINIGATE_TORCH=cpu: the CPU-only torch is locked for MINIGATE_ACCELERATOR=cpu on x86_64 only" \
      "(not $accelerator on $(uname -m)); use MINIGATE_TORCH=pypi" >&2
    exit 2
  else
    variant=$variant-torchcpu
  fi
fi
lock=deploy/requirements-$variant.lock
if [ ! -f "$lock" ]; then
  echo "no $lock: MINIGATE_EXTRAS must be convert, test (cpu only) or empty, not '$extras'" \
    "(scripts/lock.sh writes the locks)" >&2
  exit 2
fi

if [ "$step" != minigate ]; then
  "$python" -m venv "$venv"
  if ! "$venv/bin/pip" install --require-hashes --no-deps -r "$lock"; then
    if [ "$torch" = cpu ]; then
      echo "$lock pins PyTorch's CPU-only torch, which is not on PyPI: set PIP_EXTRA_INDEX_URL to PyTorch's" \
        "CPU-only wheel index or PIP_FIND_LINKS to a folder holding $(grep -o '^torch==[^ ]*' "$lock"), for" \
        "CPython 3.11 on manylinux_2_28_x86_64 (a file whose sha256 is not in the lock is refused)" >&2
    fi
    exit 1
  fi
fi
[ "$step" != deps ] || exit 0
"$venv/bin/pip" install --no-deps --no-build-isolation --no-index $editable .
# The lock must hold every dependency of what it installs. The cuda image runs onnxruntime-genai-cuda in place
# of the onnxruntime-genai that minigate's metadata names (the same module, onnxruntime_genai).
if ! problems=$("$venv/bin/pip" check 2>&1); then
  if [ "$accelerator" = cuda ]; then
    problems=$(printf '%s\n' "$problems" | grep -v '^minigate [^ ]* requires onnxruntime-genai, which is not installed\.$' || true)
  fi
  if [ -n "$problems" ]; then
    printf 'the lock %s is incomplete:\n%s\n' "$lock" "$problems" >&2
    exit 1
  fi
fi
# From / so that the installed package is imported, not the source folder.
(cd / && "$venv/bin/python" -c 'import onnxruntime_genai, minigate.gateway.cli')
echo "installed minigate from $lock into $venv"
