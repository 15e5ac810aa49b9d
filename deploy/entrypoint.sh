#!/bin/sh
# The image's entrypoint: `minigate-entrypoint serve ...` runs `minigate serve ...` after two first-start chores.
# 1. A data volume without a config file gets the example one (deploy/minigate.json), so the config lives in
#    the volume beside the database and the models and can be edited there.
# 2. When MINIGATE_DATABASE_URL names a database server (the compose postgres profile), wait up to
#    MINIGATE_DB_WAIT seconds (60) for its port, so migrations do not race the server's first start.
set -eu

if [ -n "${MINIGATE_CONFIG:-}" ] && [ ! -e "$MINIGATE_CONFIG" ]; then
  mkdir -p "$(dirname "$MINIGATE_CONFIG")"
  cp /opt/minigate/share/minigate.json "$MINIGATE_CONFIG"
  echo "minigate: wrote the example config to $MINIGATE_CONFIG" >&2
fi

if [ "${1:-}" = serve ] && [ -n "${MINIGATE_DATABASE_URL:-}" ]; then
  python - <<'PY'
import os
import socket
import sys
import time
from urllib.parse import urlsplit

url = urlsplit(os.environ["MINIGATE_DATABASE_URL"])
if url.hostname and not url.scheme.startswith("sqlite"):
    deadline = time.monotonic() + float(os.environ.get("MINIGATE_DB_WAIT") or 60)
    while True:
        try:
            socket.create_connection((url.hostname, url.port or 5432), timeout=2).close()
            break
        except OSError as err:
            if time.monotonic() > deadline:
                print(f"minigate: database {url.hostname} still unreachable ({err}); starting anyway", file=sys.stderr)
                break
            time.sleep(1)
PY
fi

exec minigate "$@"
