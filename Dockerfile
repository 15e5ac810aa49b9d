# minigate: the gateway as a slim image running as a non-root user.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY providers ./providers
COPY web ./web
COPY migrations ./migrations
RUN pip install . && useradd --system --uid 10001 --home-dir /var/lib/minigate --create-home minigate
USER minigate
# Relative paths of the default config (./data) land in the data volume.
WORKDIR /var/lib/minigate
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"
CMD ["minigate", "serve", "--host", "0.0.0.0", "--port", "8080"]
