#!/usr/bin/env bash
# Check the deployment files without a container engine, and build (and run) the image where podman is.
#
#   bash deploy/validate.sh [--no-build] [--run]
#
# 1. compose.yaml, with .env made from .env.example, under every compose implementation found:
#    `docker compose` (the v2 plugin), `docker-compose` (Debian's is v1.29) and $MINIGATE_COMPOSE_V2 (a v2
#    binary). Each profile must render; v2 must also pick the right services for each profile, keep a missing
#    MINIGATE_ADMIN_KEY fatal, bind the port as configured and hand MINIGATE_TORCH to the cpu build only.
#    (v1's `config` ignores profiles.)
# 2. Unless --no-build: when podman is installed, build the image (PODMAN, default `podman`, may carry global
#    flags such as --runtime; PYTHON_IMAGE picks the base image; BUILD_ARGS adds podman build arguments, e.g.
#    `--build-arg MINIGATE_TORCH=cpu --build-arg PIP_FIND_LINKS=/wheels -v DIR:/wheels:ro` for PyTorch's
#    CPU-only torch from a folder DIR holding its wheel).
# 3. With --run: start the built image on 127.0.0.1:$PORT (18080) with a fresh volume, wait for GET /health
#    and GET /ready, ask the default model a question, then stop it with SIGTERM and require exit 0.
#    RUN_ARGS adds podman run arguments.
# Prints one line per check; exits non-zero at the first failure, or when no compose implementation was found.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

build=1
run=0
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --run) run=1 ;;
    *) echo "usage: $0 [--no-build] [--run]" >&2; exit 2 ;;
  esac
done

fail() { echo "FAIL: $*" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp compose.yaml "$work/"
mkdir "$work/deploy" && cp deploy/compose.replicas.yaml deploy/Caddyfile.replicas "$work/deploy/"
sed 's/^MINIGATE_ADMIN_KEY=$/MINIGATE_ADMIN_KEY=validate-key/' .env.example > "$work/.env"
grep -q '^MINIGATE_ADMIN_KEY=validate-key$' "$work/.env" || fail ".env.example has no empty MINIGATE_ADMIN_KEY= line"

implementations=()
if docker compose version >/dev/null 2>&1; then implementations+=("docker compose"); fi
if command -v docker-compose >/dev/null 2>&1; then implementations+=("docker-compose"); fi
if [ -n "${MINIGATE_COMPOSE_V2:-}" ]; then
  [ -x "$MINIGATE_COMPOSE_V2" ] || fail "MINIGATE_COMPOSE_V2=$MINIGATE_COMPOSE_V2 is not an executable"
  implementations+=("$MINIGATE_COMPOSE_V2")
fi
[ ${#implementations[@]} -gt 0 ] || fail "no compose implementation found (docker compose, docker-compose, \$MINIGATE_COMPOSE_V2)"

compose() { # IMPL [NAME=VALUE]... ARG...: run IMPL in the copy, with only .env and these variables set
  local -a cmd vars=()
  read -r -a cmd <<<"$1"
  shift
  while [[ "${1:-}" == *=* ]]; do vars+=("$1"); shift; done
  (cd "$work" && env -i PATH="$PATH" HOME="${HOME:-/root}" "${vars[@]}" "${cmd[@]}" "$@")
}

services() { # IMPL [--profile P]...: the services that selection starts, sorted, on one line
  compose "$@" config --services | sort | tr '\n' ' ' | sed 's/ $//'
}

for impl in "${implementations[@]}"; do
  version=$(compose "$impl" version --short 2>/dev/null || true)
  version=${version#v}
  for profiles in "" "--profile gpu" "--profile cpu --profile postgres" "--profile gpu --profile postgres"; do
    read -r -a flags <<<"$profiles"
    compose "$impl" "${flags[@]}" config >/dev/null 2>"$work/err" || fail "$impl $profiles config: $(cat "$work/err")"
  done
  case "$version" in
    1.*)
      echo "ok: $impl $version: compose.yaml renders for the default, gpu, cpu+postgres and gpu+postgres profiles"
      ;;
    *)
      got=$(services "$impl")
      [ "$got" = minigate ] || fail "$impl: default (COMPOSE_PROFILES=cpu from .env) starts '$got', not 'minigate'"
      got=$(services "$impl" --profile gpu)
      [ "$got" = minigate-gpu ] || fail "$impl --profile gpu starts '$got', not 'minigate-gpu'"
      got=$(services "$impl" --profile cpu --profile postgres)
      [ "$got" = "minigate postgres" ] || fail "$impl --profile cpu --profile postgres starts '$got'"
      got=$(services "$impl" --profile gpu --profile postgres)
      [ "$got" = "minigate-gpu postgres" ] || fail "$impl --profile gpu --profile postgres starts '$got'"
      compose "$impl" --profile gpu config --format json >"$work/gpu.json"
      compose "$impl" MINIGATE_BIND=127.0.0.1 MINIGATE_PORT=9090 config --format json >"$work/bind.json"
      compose "$impl" MINIGATE_EXTRAS= config --format json >"$work/slim.json"
      compose "$impl" MINIGATE_TORCH=cpu config --format json >"$work/torchcpu.json"
      compose "$impl" MINIGATE_TORCH=cpu --profile gpu config --format json >"$work/gpu-torchcpu.json"
      python3 - "$work"/{gpu,bind,slim,torchcpu,gpu-torchcpu}.json <<'PY' || fail "$impl: the rendered services are not as expected"
import json
import sys

gpu = json.load(open(sys.argv[1]))["services"]["minigate-gpu"]
devices = gpu["deploy"]["resources"]["reservations"]["devices"]
assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], devices
assert gpu["build"]["args"]["MINIGATE_ACCELERATOR"] == "cuda", gpu["build"]["args"]
assert gpu["environment"]["MINIGATE_EXECUTION_PROVIDER"] == "cuda", gpu["environment"]
cpu = json.load(open(sys.argv[2]))["services"]["minigate"]
assert cpu["build"]["args"] == {
    "MINIGATE_ACCELERATOR": "cpu", "MINIGATE_EXTRAS": "convert", "MINIGATE_TORCH": "pypi",
    "PIP_INDEX_URL": "", "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "",
}, cpu["build"]["args"]
(port,) = cpu["ports"]
assert (port["host_ip"], str(port["published"]), port["target"]) == ("127.0.0.1", "9090", 8080), port
assert cpu["volumes"][0]["source"] == "minigate-data" and cpu["volumes"][0]["target"] == "/var/lib/minigate"
assert cpu["healthcheck"]["test"][0] == "CMD" and cpu["restart"] == "unless-stopped" and cpu["init"] is True
assert cpu["environment"]["MINIGATE_ADMIN_KEY"] == "validate-key"
slim = json.load(open(sys.argv[3]))["services"]["minigate"]
assert slim["build"]["args"]["MINIGATE_EXTRAS"] == "", slim["build"]["args"]
# MINIGATE_TORCH=cpu (PyTorch's CPU-only torch) reaches the cpu build; the cuda build keeps the Dockerfile's default.
torchcpu = json.load(open(sys.argv[4]))["services"]["minigate"]
assert torchcpu["build"]["args"]["MINIGATE_TORCH"] == "cpu", torchcpu["build"]["args"]
gpu = json.load(open(sys.argv[5]))["services"]["minigate-gpu"]
assert "MINIGATE_TORCH" not in gpu["build"]["args"], gpu["build"]["args"]
PY
      echo "ok: $impl $version: each profile starts the right services; gpu reserves NVIDIA devices; the port binds as set;" \
        "an empty MINIGATE_EXTRAS builds without extras; MINIGATE_TORCH=cpu reaches the cpu build only"
      ;;
  esac
  # The shell's empty value wins over .env's, as a forgotten key in .env would.
  if compose "$impl" MINIGATE_ADMIN_KEY= config >/dev/null 2>"$work/err"; then
    fail "$impl: an empty MINIGATE_ADMIN_KEY was accepted"
  fi
  grep -q MINIGATE_ADMIN_KEY "$work/err" || fail "$impl: the refusal does not name MINIGATE_ADMIN_KEY: $(cat "$work/err")"
  echo "ok: $impl $version: an empty MINIGATE_ADMIN_KEY is refused"
  # deploy/compose.replicas.yaml: two replicas on PostgreSQL behind a proxy (README "Growing past one box")
  replicas=(--env-file .env -f deploy/compose.replicas.yaml)
  pg=(POSTGRES_PASSWORD=pw MINIGATE_DATABASE_URL=postgresql+asyncpg://minigate:pw@postgres:5432/minigate)
  got=$(compose "$impl" "${pg[@]}" "${replicas[@]}" config --services 2>"$work/err" | sort | tr '\n' ' ' | sed 's/ $//') ||
    fail "$impl: compose.replicas.yaml: $(cat "$work/err")"
  [ "$got" = "minigate-1 minigate-2 postgres proxy" ] || fail "$impl: compose.replicas.yaml starts '$got'"
  if compose "$impl" POSTGRES_PASSWORD=pw "${replicas[@]}" config >/dev/null 2>"$work/err"; then
    fail "$impl: compose.replicas.yaml accepted an empty MINIGATE_DATABASE_URL"
  fi
  grep -q MINIGATE_DATABASE_URL "$work/err" || fail "$impl: the refusal does not name MINIGATE_DATABASE_URL"
  echo "ok: $impl $version: compose.replicas.yaml renders two replicas, postgres and the proxy; it needs MINIGATE_DATABASE_URL"
done

[ "$build" = 1 ] || exit 0
read -r -a podman <<<"${PODMAN:-podman}"
if ! command -v "${podman[0]}" >/dev/null 2>&1; then
  echo "skip: no podman, the image was not built"
  exit 0
fi
read -r -a build_args <<<"${BUILD_ARGS:-}"
image=localhost/minigate:validate
"${podman[@]}" build --format docker -t "$image" --build-arg "PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11-slim-bookworm}" \
  "${build_args[@]}" -f "$root/Dockerfile" "$root" || fail "podman build"
user=$("${podman[@]}" image inspect --format '{{.Config.User}}' "$image")
[ "$user" = minigate ] || fail "the image runs as '$user', not minigate"
echo "ok: podman built $image ($("${podman[@]}" image inspect --format '{{.Size}}' "$image") bytes), user $user"
if "${podman[@]}" run --rm --entrypoint sh "$image" -c 'command -v gcc cc g++ make' >/dev/null 2>&1; then
  fail "the runtime image has a compiler"
fi
echo "ok: no compiler in the runtime image"

[ "$run" = 1 ] || exit 0
port=${PORT:-18080}
read -r -a run_args <<<"${RUN_ARGS:-}"
volume=minigate-validate-$$
name=minigate-validate-$$
"${podman[@]}" volume create "$volume" >/dev/null
cleanup() {
  "${podman[@]}" rm -f "$name" >/dev/null 2>&1 || true
  "${podman[@]}" volume rm -f "$volume" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"${podman[@]}" run -d --name "$name" --init -p "127.0.0.1:$port:8080" -v "$volume:/var/lib/minigate" \
  -e MINIGATE_ADMIN_KEY=validate-key "${run_args[@]}" "$image" >/dev/null || fail "podman run"
wait_ready() { # wait for GET /health, then GET /ready, on the running container
  local path
  for path in health ready; do
    for _ in $(seq 600); do
      if python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/$path', timeout=2)" 2>/dev/null; then
        echo "ok: GET /$path answers 200"
        continue 2
      fi
      if [ "$("${podman[@]}" inspect -f '{{.State.Running}}' "$name")" != true ]; then
        fail "the container stopped: $("${podman[@]}" logs "$name" 2>&1 | tail -20)"
      fi
      sleep 1
    done
    fail "GET /$path did not answer 200 within 600 s: $("${podman[@]}" logs "$name" 2>&1 | tail -20)"
  done
}
wait_ready
python3 - "$port" <<'PY' || fail "the default model did not answer: $("${podman[@]}" logs "$name" 2>&1 | tail -20)"
import json
import sys
import urllib.request

body = {"model": "default", "max_tokens": 16, "messages": [{"role": "user", "content": "What is the capital of France?"}]}
request = urllib.request.Request(
    f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions",
    data=json.dumps(body).encode(),
    headers={"authorization": "Bearer validate-key", "content-type": "application/json"},
)
with urllib.request.urlopen(request, timeout=120) as response:
    answer = json.load(response)
content = answer["choices"][0]["message"]["content"]
assert content.strip(), answer
print(f"ok: the default model answers through the gateway ({answer['model']}): {content.strip()[:60]!r}")
PY
uid=$("${podman[@]}" exec "$name" id -u)
[ "$uid" = 10001 ] || fail "the gateway runs as uid $uid"
echo "ok: the gateway runs as uid 10001"
# The README's online backup, then a look into the copy.
"${podman[@]}" exec "$name" python -c \
  "import sqlite3; sqlite3.connect('data/minigate.db').backup(sqlite3.connect('data/backup.db'))" ||
  fail "the online backup"
rows=$("${podman[@]}" exec "$name" python -c \
  "import sqlite3; print(sqlite3.connect('data/backup.db').execute('select count(*) from usage').fetchone()[0])")
[ "$rows" -ge 1 ] || fail "the backup holds $rows usage rows"
echo "ok: the online SQLite backup holds the usage table ($rows rows)"
# A second start on the same volume (a restart or an upgrade): no second conversion, the data is kept.
"${podman[@]}" restart -t 60 "$name" >/dev/null
wait_ready
if "${podman[@]}" logs "$name" 2>&1 | grep -c "is not converted yet" | grep -qv '^1$'; then
  fail "the default model was converted more than once"
fi
echo "ok: a restart on the same volume keeps the model and the database"
"${podman[@]}" stop -t 60 "$name" >/dev/null
code=$("${podman[@]}" inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "after SIGTERM the gateway exited $code: $("${podman[@]}" logs "$name" 2>&1 | tail -20)"
echo "ok: SIGTERM stops the gateway with exit 0"
