#!/usr/bin/env bash
# Regenerate every lock file: the image's, deploy/requirements-{cpu,cpu-convert,cuda,cuda-convert}.lock and
# deploy/requirements-cpu-convert-torchcpu.lock (the cpu-convert set with PyTorch's CPU-only torch), and the test
# environment's (.ci/run), deploy/requirements-cpu-test.lock and deploy/requirements-cpu-test-torchcpu.lock.
#
#   bash scripts/lock.sh              after a change to pyproject.toml's dependencies: pins already in a lock stay
#   bash scripts/lock.sh --upgrade    every package to its newest version that pyproject.toml allows
#
# Each lock is `uv pip compile --generate-hashes` of `python3 deploy/lock_inputs.py VARIANT` (minigate's
# dependencies, the extra, the build backend; the cuda swap; the CPU-only torch) for CPython 3.11 on
# manylinux_2_28 (the image is Debian bookworm, glibc 2.36). uv: a resolver that writes the sha256 of every file
# of each pin and resolves for a platform other than its own, so one run locks x86_64 and aarch64 from this
# machine. The cpu locks are resolved for both and must come out the same (one file serves both); the cuda locks
# are for x86_64 only (the CUDA build of onnxruntime-genai has no aarch64 wheel). No index URL is written into a
# lock: pip's settings (the Dockerfile's PIP_INDEX_URL and friends) decide where the files come from, the hashes
# decide what is accepted.
#
# The test lock (cpu-test: the test extra, which names the convert extra) is resolved with every pin of the
# cpu-convert lock just written as a constraint, so the tests run with exactly the versions the image serves
# with; only the test tools (pytest, ruff, mypy, playwright, ...) and what they alone need are its own.
#
# The torchcpu locks need PyTorch's CPU-only wheel on disk: TORCH_CPU_WHEELS (default /opt/wheels) is a folder
# holding torch-VERSION+cpu-cp311-cp311-manylinux_2_28_x86_64.whl as PyTorch's CPU-only wheel index serves it
# (`pip download --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11
# --index-url THAT-INDEX torch==VERSION+cpu`). uv resolves torch==VERSION+cpu from that folder (--find-links, not
# written into the lock) and pins it to that file's sha256, x86_64 only; every other package is resolved from the
# base lock just written (cpu-convert, cpu-test), never upgraded on its own, so both locks pin the same versions
# and hashes and the torchcpu lock only lacks the CUDA packages that PyPI's torch depends on (tests/test_lock.py
# checks this).
#
# uv is a tool of this script only (UV=/path/to/uv to use your own): the pinned version is installed into a
# cache folder with pip. Then run `pytest tests/test_lock*.py` (it installs the cpu and torchcpu locks and checks
# the others).
set -euo pipefail
cd "$(dirname "$0")/.."
uv_version=0.13.9
torch_cpu_wheels=${TORCH_CPU_WHEELS:-/opt/wheels}
upgrade=()
case "${1:-}" in
  "") ;;
  --upgrade) upgrade=(--upgrade) ;;
  *) echo "usage: $0 [--upgrade]" >&2; exit 2 ;;
esac

if [ -z "${UV:-}" ]; then
  tools=${XDG_CACHE_HOME:-$HOME/.cache}/minigate-lock/uv-$uv_version
  if [ ! -x "$tools/bin/uv" ]; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install -q "uv==$uv_version"
  fi
  UV=$tools/bin/uv
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

compile() { # VARIANT PLATFORM OUTPUT [UV OPTION]...: resolve the variant for one platform into OUTPUT (its pins are preferred)
  local variant=$1 platform=$2 output=$3
  shift 3
  (cd "$work" && "$UV" pip compile "$variant.in" -o "$output" "$@" --quiet --no-config --no-header \
    --generate-hashes --no-emit-index-url --no-emit-find-links --python-version 3.11 --python-platform "$platform")
}

lock_inputs() { # NAME: a constant of deploy/lock_inputs.py, a tuple's items separated by spaces
  python3 -c "import sys; sys.path.insert(0, 'deploy'); import lock_inputs as l; v = l.$1; print(*v if isinstance(v, tuple) else [v])"
}
# Before any lock is written: the CPU-only wheel that the torchcpu locks pin (the same torch for each).
torch_cpu=$(lock_inputs TORCH_CPU_VARIANT)
pin=$(python3 deploy/lock_inputs.py "$torch_cpu" | grep -x 'torch==.*')
wheels=("$torch_cpu_wheels/${pin/==/-}"-cp311-cp311-manylinux*_x86_64.whl)
if [ ! -f "${wheels[0]}" ]; then
  echo "deploy/requirements-$torch_cpu.lock needs PyTorch's CPU-only wheel for $pin: no" \
    "${pin/==/-}-cp311-cp311-manylinux*_x86_64.whl in $torch_cpu_wheels (set TORCH_CPU_WHEELS to the folder that holds it)" >&2
  exit 1
fi
for variant in $(lock_inputs VARIANTS); do
  lock=deploy/requirements-$variant.lock
  python3 deploy/lock_inputs.py "$variant" >"$work/$variant.in"
  base=$(python3 deploy/lock_inputs.py --base "$variant")
  accelerator=${variant%%-*}
  extra=${variant#"$accelerator"}
  extra=${extra#-}
  extra=${extra%-torchcpu}
  options=("${upgrade[@]}")
  args="MINIGATE_ACCELERATOR=$accelerator MINIGATE_EXTRAS=\"$extra\""
  torchcpu=
  case "$variant" in *-torchcpu) torchcpu=1 ;; esac
  if [ -n "$torchcpu" ]; then
    # The base set as just locked, with PyTorch's CPU-only torch from the wheel folder.
    grep -v '^#' "deploy/requirements-$base.lock" >"$work/$variant.x86_64.txt"
    options=(--find-links "$torch_cpu_wheels")
    args="$args MINIGATE_TORCH=cpu"
  else
    [ -z "$extra" ] || args="$args MINIGATE_TORCH=pypi"
    if [ -f "$lock" ]; then
      grep -v '^#' "$lock" >"$work/$variant.x86_64.txt"
    fi
    if [ -n "$base" ]; then
      # Every pin of the base lock just written, as a constraint: where the two overlap they pin alike.
      grep -o '^[A-Za-z0-9][^ ;]*==[^ ;]*' "deploy/requirements-$base.lock" >"$work/$variant.constraints.txt"
      options+=(--constraint "$variant.constraints.txt")
    fi
  fi
  compile "$variant" x86_64-manylinux_2_28 "$variant.x86_64.txt" "${options[@]}"
  arches=$(python3 deploy/lock_inputs.py --arches "$variant")
  if [ "$arches" = "x86_64 aarch64" ]; then
    platforms="Linux x86_64 and aarch64 (each resolves to exactly these pins; the hashes cover every file of a pin)"
    cp "$work/$variant.x86_64.txt" "$work/$variant.aarch64.txt"
    compile "$variant" aarch64-manylinux_2_28 "$variant.aarch64.txt" "${options[@]}"
    # A requirement marked `platform_machine == 'x86_64'` (a package without aarch64 wheels, such as the test
    # extra's OpenVINO plugin) resolves on x86_64 only: the comparison leaves its pin out, and the lock keeps the
    # marker on it, so pip installs it on x86_64 and skips it on aarch64.
    python3 deploy/lock_markers.py "$work/$variant.in" "$work/$variant.x86_64.txt" "$work/$variant.compare.txt"
    if ! diff -u "$work/$variant.compare.txt" "$work/$variant.aarch64.txt" >&2; then
      echo "$variant: aarch64 resolves differently from x86_64; one lock cannot serve both" >&2
      exit 1
    fi
  elif [ -n "$torchcpu" ]; then
    platforms="Linux x86_64 only (torch: the sha256 of ${wheels[0]##*/}, as PyTorch's CPU-only wheel index serves it)"
  else
    platforms="Linux x86_64 only (onnxruntime-genai-cuda has no aarch64 wheel)"
  fi
  if grep -n '://' "$work/$variant.x86_64.txt" >&2; then
    echo "$variant: the lock names a URL" >&2
    exit 1
  fi
  {
    if [ "$extra" = test ]; then
      echo "# $lock: every Python package of the test environment (.ci/run) installed with"
    else
      echo "# $lock: every Python package of the minigate image built with"
    fi
    echo "# $args, pinned, with the sha256 of each of its files."
    echo "# Do not edit: \`bash scripts/lock.sh\` writes it (uv pip compile --generate-hashes) from"
    echo "# \`python3 deploy/lock_inputs.py $variant\`, named \"-r $variant.in\" below."
    echo "# CPython 3.11 on $platforms."
    if [ -n "$torchcpu" ]; then
      echo "# It is requirements-$base.lock with PyTorch's CPU-only build of torch, which is not on PyPI, in place"
      echo "# of PyPI's, and without the CUDA packages (nvidia-*, cuda-*, triton) that only PyPI's torch needs: the install"
      echo "# needs PIP_EXTRA_INDEX_URL set to PyTorch's CPU-only wheel index or PIP_FIND_LINKS to a folder with that file."
    elif [ -n "$base" ]; then
      echo "# Every package that requirements-$base.lock pins is pinned here alike: the tests run what the image serves."
    fi
    if [ "$extra" = test ]; then
      echo "# .ci/run (deploy/install.sh) installs it with \`pip install --require-hashes --no-deps\`, then minigate"
      echo "# itself, editable, with --no-deps --no-build-isolation --no-index, so nothing outside this file is installed."
    else
      echo "# The Dockerfile (deploy/install.sh) installs it with \`pip install --require-hashes --no-deps\`, then"
      echo "# minigate itself with --no-deps --no-build-isolation --no-index, so nothing outside this file is installed."
    fi
    cat "$work/$variant.x86_64.txt"
  } >"$lock"
  echo "$lock: $(grep -c '^[a-z]' "$lock") packages"
done
