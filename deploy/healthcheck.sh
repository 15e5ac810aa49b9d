#!/bin/sh
# The image's healthcheck (Dockerfile HEALTHCHECK and compose.yaml): GET /health on the gateway's own port.
# A script rather than an inline `python -c '...'`, so no engine has to keep an argument with spaces intact.
exec python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"
