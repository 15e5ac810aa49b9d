# minigate as an image: `docker compose up -d` builds it (see compose.yaml and the README's Operations section).
#
# Two stages. The builder installs minigate and its dependencies into a virtual environment (/opt/minigate);
# the runtime stage copies that environment onto a fresh base, so no compiler, pip cache or build file ends
# up in the image. It runs as the unprivileged user `minigate` (uid 10001) with its data in /var/lib/minigate.
#
# Build arguments:
#   MINIGATE_EXTRAS       the extras installed with minigate. "convert" (the default) is what the README's
#                         install command installs: torch and friends, needed once to convert the default
#                         model on the first start. "" gives a much smaller image that serves models which are
#                         already converted (or only remote providers).
#   MINIGATE_ACCELERATOR  "cpu" (the default) or "cuda": onnxruntime-genai-cuda and onnxruntime-gpu with
#                         NVIDIA's CUDA and cuDNN libraries from their wheels (the compose gpu profile).
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS
#                         handed to pip as they are (empty: pip's defaults), e.g. PyTorch's CPU-only wheel
#                         index as PIP_EXTRA_INDEX_URL keeps torch from pulling gigabytes of CUDA packages.
#
# The base image is pinned by tag, not by digest: pin a digest here (python:3.11-slim@sha256:...) once you
# have resolved it against your registry.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG MINIGATE_EXTRAS=convert
ARG MINIGATE_ACCELERATOR=cpu
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/minigate
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY providers ./providers
COPY web ./web
COPY migrations ./migrations
# Non-editable install of exactly the README's `pip install -e '.[convert]'`; the optional CUDA swap keeps the
# onnxruntime-genai version that minigate pins.
RUN set -eu; \
    /opt/minigate/bin/pip install ".${MINIGATE_EXTRAS:+[$MINIGATE_EXTRAS]}"; \
    case "$MINIGATE_ACCELERATOR" in \
      cpu) ;; \
      cuda) \
        version=$(/opt/minigate/bin/python -c 'import importlib.metadata as m; print(m.version("onnxruntime-genai"))'); \
        /opt/minigate/bin/pip uninstall -y onnxruntime-genai onnxruntime; \
        /opt/minigate/bin/pip install "onnxruntime-genai-cuda==$version" "onnxruntime-gpu[cuda,cudnn]";; \
      *) echo "MINIGATE_ACCELERATOR must be cpu or cuda, not $MINIGATE_ACCELERATOR" >&2; exit 2;; \
    esac; \
    /opt/minigate/bin/python -c 'import onnxruntime_genai, gateway.cli'

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/minigate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MINIGATE_CONFIG=/var/lib/minigate/minigate.json \
    MINIGATE_CACHE=/var/lib/minigate/cache
COPY --from=builder /opt/minigate /opt/minigate
COPY deploy/minigate.json /opt/minigate/share/minigate.json
COPY deploy/entrypoint.sh /usr/local/bin/minigate-entrypoint
COPY deploy/healthcheck.sh /usr/local/bin/minigate-healthcheck
# NVIDIA libraries that came as wheels (cuda builds only) are made known to the dynamic linker; the folder
# that will be the data volume belongs to the runtime user, so a new named volume starts out writable.
RUN set -eu; \
    find /opt/minigate -path '*/nvidia/*' -name 'lib*.so*' -printf '%h\n' | sort -u >/etc/ld.so.conf.d/minigate.conf; \
    ldconfig; \
    groupadd --system --gid 10001 minigate; \
    useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/minigate --create-home --shell /usr/sbin/nologin minigate; \
    chmod 0755 /usr/local/bin/minigate-entrypoint /usr/local/bin/minigate-healthcheck
USER minigate
WORKDIR /var/lib/minigate
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 CMD ["minigate-healthcheck"]
ENTRYPOINT ["minigate-entrypoint"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
