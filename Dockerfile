# minigate as an image: `docker compose up -d` builds it (see compose.yaml and the README's Operations section).
#
# Two stages. The builder installs minigate and its dependencies into a virtual environment (/opt/minigate);
# the runtime stage copies that environment onto a fresh base, so no compiler, pip cache or build file ends
# up in the image. It runs as the unprivileged user `minigate` (uid 10001) with its data in /var/lib/minigate.
#
# Every Python package comes from a lock file, deploy/requirements-ACCELERATOR[-EXTRAS][-torchcpu].lock, installed with
# `pip install --require-hashes --no-deps`: exact versions, each file checked against its sha256, nothing added
# that the lock does not name; minigate itself is then built with the lock's setuptools, without an index
# (deploy/install.sh does both; scripts/lock.sh regenerates the locks from pyproject.toml).
#
# Build arguments:
#   MINIGATE_EXTRAS       the extras installed with minigate. "convert" (the default) is what the README's
#                         install command installs: torch and friends, needed once to convert the default
#                         model on the first start. "" gives a much smaller image that serves models which are
#                         already converted (or only remote providers).
#   MINIGATE_ACCELERATOR  "cpu" (the default) or "cuda": onnxruntime-genai-cuda and onnxruntime-gpu with
#                         NVIDIA's CUDA and cuDNN libraries from their wheels (the compose gpu profile).
#   MINIGATE_TORCH        which torch the convert extra brings: "pypi" (the default) is PyPI's, which on Linux
#                         depends on NVIDIA's CUDA wheels (nvidia-*, cuda-*, triton): about 5.6 GB of image,
#                         though a CPU image never uses them. "cpu" is PyTorch's CPU-only build, torch==2.13.0+cpu
#                         (requirements-cpu-convert-torchcpu.lock: the same pins as the cpu-convert lock, minus
#                         those CUDA packages; about 1.6 GB of image), for MINIGATE_ACCELERATOR=cpu on x86_64 only.
#                         That wheel is not on PyPI: set PIP_EXTRA_INDEX_URL to PyTorch's CPU-only wheel index, or
#                         PIP_FIND_LINKS to a folder in the build that holds the file
#                         torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl (e.g. `podman build -v DIR:/wheels
#                         --build-arg PIP_FIND_LINKS=/wheels`). The lock pins that file's sha256, so a file that
#                         differs from it (another build, a tampered mirror) is refused, as is PyPI's torch.
#                         Ignored when MINIGATE_EXTRAS is empty (no torch). The default stays "pypi" because a
#                         build with "cpu" fails where pip cannot reach that index, and a default build must work
#                         with nothing but PyPI; guessing from the index settings, or falling back to PyPI's torch
#                         when the CPU-only one is not found, would make the same arguments give different images.
#                         compose.yaml passes MINIGATE_TORCH from .env to the cpu service.
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS
#                         handed to pip as they are (empty: pip's defaults), e.g. a mirror of PyPI. The hashes
#                         still decide what is installed: a file that differs from the lock's (PyPI's, or for the
#                         CPU-only torch the file scripts/lock.sh hashed) is refused, so any other build of a
#                         package needs a lock made for it.
#
# The base image is pinned by tag, not by digest: pin a digest here (python:3.11-slim@sha256:...) once you
# have resolved it against your registry.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG MINIGATE_EXTRAS=convert
ARG MINIGATE_ACCELERATOR=cpu
ARG MINIGATE_TORCH=pypi
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The locked dependencies first, in their own layer: a change to the code does not download them again.
COPY deploy/install.sh deploy/requirements-*.lock ./deploy/
RUN sh deploy/install.sh /opt/minigate deps
COPY pyproject.toml README.md ./
# minigate/ holds relative symlinks (minigate/gateway -> ../gateway): COPY keeps them as symlinks, and they resolve
# to the folders copied beside it. The wheel installs minigate and minigate_plugins only.
COPY minigate ./minigate
COPY gateway ./gateway
COPY providers ./providers
COPY web ./web
COPY migrations ./migrations
COPY minigate_plugins ./minigate_plugins
# minigate itself (non-editable, no dependencies, no index), then `pip check` and an import of the engine.
RUN sh deploy/install.sh /opt/minigate minigate

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
