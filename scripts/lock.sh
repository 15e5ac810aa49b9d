#!/usr/bin/env bash
# Regenerate the image's lock files, deploy/requirements-{cpu,cpu-convert,cuda,cuda-convert}.lock.
#
#   bash scripts/lock.sh              after a change to pyproject.toml's dependencies: pins already in a lock stay
#   bash scripts/lock.sh --upgrade    every package to its newest version that pyproject.toml allows
#
# Each lock is `uv pip compile --generate-hashes` of `python3 deploy/lock_inputs.py VARIANT` (minigate's
# dependencies, the extra, the build backend; the cuda swap) for CPython 3.11 on manylinux_2_28 (the image is
# Debian bookworm, glibc 2.36). uv: a resolver that writes the sha256 of every file of each pin and resolves for
# a platform other than its own, so one run locks x86_64 and aarch64 from this machine. The cpu locks are resolved
# for both and must come out the same (one file serves both); the cuda locks are for x86_64 only (the CUDA build
# of onnxruntime-genai has no aarch64 wheel). No index URL is written into a lock: the Dockerfile's PIP_INDEX_URL
# and friends decide where the files come from, the hashes decide what is accepted.
#
# uv is a tool of this script only (UV=/path/to/uv to use your own): the pinned version is installed into a
# cache folder with pip. Then run `pytest tests/test_lock.py` (it installs the cpu lock and checks the others).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
uv_version=0.13.9
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

compile() { # VARIANT PLATFORM OUTPUT: resolve the variant for one platform into OUTPUT (its pins are preferred)
  (cd "$work" && "$UV" pip compile "$1.in" -o "$3" "${upgrade[@]}" --quiet --no-config --no-header \
    --generate-hashes --no-emit-index-url --no-emit-find-links --python-version 3.11 --python-platform "$2")
}

for variant in $(python3 -c 'import sys; sys.path.insert(0, "deploy"); import lock_inputs; print(*lock_inputs.VARIANTS)'); do
  lock=deploy/requirements-$variant.lock
  python3 deploy/lock_inputs.py "$variant" >"$work/$variant.in"
  accelerator=${variant%%-*}
  extra=${variant#"$accelerator"}
  extra=${extra#-}
  if [ -f "$lock" ]; then grep -v '^#' "$lock" >"$work/$variant.x86_64.txt"; fi
  compile "$variant" x86_64-manylinux_2_28 "$variant.x86_64.txt"
  if [ "$accelerator" = cpu ]; then
    platforms="Linux x86_64 and aarch64 (each resolves to exactly these pins; the hashes cover every file of a pin)"
    cp "$work/$variant.x86_64.txt" "$work/$variant.aarch64.txt"
    compile "$variant" aarch64-manylinux_2_28 "$variant.aarch64.txt"
    if ! diff -u "$work/$variant.x86_64.txt" "$work/$variant.aarch64.txt" >&2; then
      echo "$variant: aarch64 resolves differently from x86_64; one lock cannot serve both" >&2
      exit 1
    fi
  else
    platforms="Linux x86_64 only (onnxruntime-genai-cuda has no aarch64 wheel)"
  fi
  if grep -n '://' "$work/$variant.x86_64.txt" >&2; then
    echo "$variant: the lock names a URL" >&2
    exit 1
  fi
  {
    echo "# $lock: every Python package of the minigate image built with MINIGATE_ACCELERATOR=$accelerator"
    echo "# MINIGATE_EXTRAS=\"$extra\", pinned, with the sha256 of each of its files. Do not edit: \`bash scripts/lock.sh\`"
    echo "# writes it (uv pip compile --generate-hashes) from \`python3 deploy/lock_inputs.py $variant\`, named"
    echo "# \"-r $variant.in\" below. CPython 3.11 on $platforms."
    echo "# The Dockerfile (deploy/install.sh) installs it with \`pip install --require-hashes --no-deps\`, then"
    echo "# minigate itself with --no-deps --no-build-isolation --no-index, so nothing outside this file is installed."
    cat "$work/$variant.x86_64.txt"
  } >"$lock"
  echo "$lock: $(grep -c '^[a-z]' "$lock") packages"
done
